"""Whole-file backup encryption: round trip over several chunks, and every tampering refused by name."""

from __future__ import annotations

import os
import struct

import pytest

from engine.backup.sealed import CHUNK, MAGIC, SealError, is_sealed, open_sealed, seal_file
from engine.security.crypto import Keyring

K1 = Keyring((("k1", bytes(range(32))),))
K2 = Keyring((("k1", bytes(range(32))), ("k2", bytes(range(1, 33)))))


@pytest.fixture
def plain(tmp_path):
    path = tmp_path / "events.parquet"
    path.write_bytes(os.urandom(2 * CHUNK + 12345))            # three chunks, the last one short
    return path


def _seal(plain, keyring=K1, label="pushwise-backup:events"):
    sealed = plain.with_name(plain.name + ".sealed")
    assert seal_file(plain, sealed, keyring, label) == keyring.current_id
    return sealed


@pytest.mark.parametrize("size", [0, 1, CHUNK, 2 * CHUNK + 12345])
def test_round_trip_of_any_size(tmp_path, size):
    plain = tmp_path / "t.parquet"
    plain.write_bytes(os.urandom(size))
    sealed = _seal(plain)
    assert is_sealed(sealed) and not is_sealed(plain)
    out = tmp_path / "back.parquet"
    open_sealed(sealed, out, K1, "pushwise-backup:events")
    assert out.read_bytes() == plain.read_bytes()


def test_older_keys_still_open_what_they_sealed(plain, tmp_path):
    sealed = _seal(plain, K1)
    open_sealed(sealed, tmp_path / "out", K2, "pushwise-backup:events")   # k1 is still in the newer keyring
    assert (tmp_path / "out").read_bytes() == plain.read_bytes()


def _flip(data: bytearray) -> bytearray:
    data[len(MAGIC) + 20] ^= 1
    return data


def _cut_last_chunk(data: bytearray) -> bytearray:
    offset, sizes = len(MAGIC) + 1 + 2 + 8, []
    while offset < len(data):
        (n,) = struct.unpack(">I", data[offset:offset + 4])
        sizes.append(offset)
        offset += 4 + n
    return data[:sizes[-1]]                                 # whole chunks, the final one gone


def _swap_chunks(data: bytearray) -> bytearray:
    start = len(MAGIC) + 1 + 2 + 8
    (n,) = struct.unpack(">I", data[start:start + 4])
    first, second = data[start:start + 4 + n], data[start + 4 + n:start + 8 + 2 * n]
    return data[:start] + second + first + data[start + 8 + 2 * n:]


@pytest.mark.parametrize(("damage", "label", "keyring", "message"), [
    (_flip, "pushwise-backup:events", K1, "was altered"),
    (_cut_last_chunk, "pushwise-backup:events", K1, "was altered, cut short"),
    (lambda d: d[:-7], "pushwise-backup:events", K1, "is cut short"),
    (_swap_chunks, "pushwise-backup:events", K1, "was altered"),
    (lambda d: d, "pushwise-backup:users", K1, "belongs to another backup file"),
    (lambda d: d, "pushwise-backup:events", Keyring((("k9", bytes(32)),)), "data key 'k1'"),
    (lambda d: bytearray(b"PAR1") + d, "pushwise-backup:events", K1, "is not a sealed backup file"),
])
def test_tampering_is_refused(plain, tmp_path, damage, label, keyring, message):
    sealed = _seal(plain)
    sealed.write_bytes(bytes(damage(bytearray(sealed.read_bytes()))))
    with pytest.raises(SealError, match=message):
        open_sealed(sealed, tmp_path / "out", keyring, label)
