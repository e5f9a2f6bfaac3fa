"""Whole-file encryption of backup files: AES-256-GCM in 1 MiB chunks under the current data key.

A backup holds personal data (events, user ids, decisions), not only the tokens that are encrypted in
their columns, so every Parquet file of a backup is sealed. The layout streams (no file is held in
memory whole) and resists the attacks that matter for a file at rest:

    magic "PWSEAL1\\n" | key id length (1 byte) | key id | salt (8 random bytes)
    then per chunk: ciphertext length (4 bytes, big-endian) | AES-GCM(ciphertext + 16-byte tag)

Chunk ``i`` is sealed with nonce ``salt || i`` (4 bytes, big-endian) and associated data
``label || i || last``, where ``label`` names the file (``pushwise-backup:<table>``) and ``last`` is 1
on the final chunk only. So a chunk cannot be altered, reordered, moved into another file or
table, and a file cut short is refused, because its last remaining chunk was not sealed as last.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from engine.security.crypto import Keyring

__all__ = ["CHUNK", "MAGIC", "SealError", "is_sealed", "open_sealed", "seal_file"]

MAGIC = b"PWSEAL1\n"
CHUNK = 1 << 20


class SealError(Exception):
    """A sealed file is damaged, cut short, from another file, or under a key this keyring lacks."""


def _aad(label: str, index: int, last: bool) -> bytes:
    return label.encode("utf-8") + struct.pack(">IB", index, int(last))


def is_sealed(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(MAGIC)) == MAGIC


def seal_file(src: Path, dst: Path, keyring: Keyring, label: str) -> str:
    """Encrypt ``src`` into ``dst`` under the keyring's current key; returns the key id used."""
    kid, key = keyring.keys[-1]
    aead, salt = AESGCM(key), os.urandom(8)
    size = os.path.getsize(src)
    chunks = max(1, -(-size // CHUNK))
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(MAGIC + bytes([len(kid.encode())]) + kid.encode() + salt)
        for i in range(chunks):
            plain = fin.read(CHUNK)
            sealed = aead.encrypt(salt + struct.pack(">I", i), plain, _aad(label, i, i == chunks - 1))
            fout.write(struct.pack(">I", len(sealed)) + sealed)
    return kid


def open_sealed(src: Path, dst: Path, keyring: Keyring, label: str) -> None:
    """Decrypt ``src`` (sealed as ``label``) into ``dst``.

    Raises:
        SealError: not a sealed file, an unknown key, or any altered, reordered, foreign or missing chunk.
    """
    keys = dict(keyring.keys)
    with open(src, "rb") as fin:
        if fin.read(len(MAGIC)) != MAGIC:
            raise SealError(f"{src.name} is not a sealed backup file")
        n = fin.read(1)
        if not n:
            raise SealError(f"{src.name} is cut short")
        kid = fin.read(n[0]).decode("utf-8", "replace")
        if kid not in keys:
            raise SealError(f"{src.name} is encrypted under data key {kid!r}, which this install does not hold")
        aead, salt = AESGCM(keys[kid]), fin.read(8)
        with open(dst, "wb") as fout:
            index, header = 0, fin.read(4)
            while True:
                if len(header) < 4:
                    raise SealError(f"{src.name} is cut short")
                (length,) = struct.unpack(">I", header)
                sealed = fin.read(length)
                if len(sealed) < length:
                    raise SealError(f"{src.name} is cut short")
                header = fin.read(4)
                last = not header
                try:
                    fout.write(aead.decrypt(salt + struct.pack(">I", index), sealed, _aad(label, index, last)))
                except InvalidTag:
                    raise SealError(f"{src.name} was altered, cut short, or belongs to another backup file") from None
                if last:
                    return
                index += 1
