"""The lean HTTP/2 pool's HPACK encoder: every block it writes decodes, with hpack's own decoder, to
exactly the headers it was given, while the dynamic table fills, evicts and is resized.

The demo found this the hard way: once a few provider tokens had rotated through a full table, a
cached block replayed an insertion the peer never saw, and the sandbox decoded the wrong
``authorization`` (ACCESS_TOKEN_EXPIRED) or a repeated header (DuplicateHeaders).
"""

from __future__ import annotations

import hpack
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.push.h2pool import _Encoder

_PSEUDO = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", b"127.0.0.1:8443")]


def _block(token: bytes, topic: bytes, path: int, send: int) -> list[tuple[bytes, bytes]]:
    return [(b":path", b"/3/device/%064x" % path), *_PSEUDO, (b"authorization", b"bearer " + token),
            (b"apns-topic", topic), (b"apns-id", b"%036d" % send), (b"apns-push-type", b"alert")]


def _encode(encoder: _Encoder, headers: list[tuple[bytes, bytes]]) -> bytes:
    encoder.constant = len(_PSEUDO) + 2     # pseudo headers, authorization, apns-topic
    return encoder.encode(headers)


def test_rotating_tokens_through_a_full_table_still_decode():
    encoder, decoder = _Encoder(), hpack.Decoder()
    for rotation in range(60):                       # ~300-byte tokens: the 4 KiB table overflows at ~12
        token = b"%03d" % rotation * 100
        for send in range(3):                        # the first block inserts, the next two are cached
            headers = _block(token, b"com.pushwise.demo", send, rotation * 3 + send)
            assert decoder.decode(_encode(encoder, headers), raw=True) == headers, (rotation, send)
    assert len(encoder._cache) == 1                   # the cache keeps only the newest constant block


def test_a_constant_too_large_for_the_table_is_sent_literally_every_time():
    encoder, decoder = _Encoder(), hpack.Decoder()
    huge = b"t" * 5000                                # larger than the whole table: never indexed
    for send in range(3):
        headers = _block(huge, b"com.pushwise.demo", send, send)
        assert decoder.decode(_encode(encoder, headers), raw=True) == headers
    assert encoder._cache == {}


_steps = st.lists(
    st.tuples(
        st.sampled_from([b"a", b"b", b"c", b"d"]),            # which token (tokens come back)
        st.integers(min_value=1, max_value=1500),             # its length
        st.sampled_from([b"com.a", b"com.b"]),                # topic
        st.one_of(st.none(), st.sampled_from([0, 256, 1024, 4096])),   # peer's new table size
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_steps)
def test_any_sequence_of_constants_and_table_sizes_decodes_exactly(steps):
    encoder, decoder = _Encoder(), hpack.Decoder()
    for n, (token, length, topic, table_size) in enumerate(steps):
        if table_size is not None:                   # SETTINGS_HEADER_TABLE_SIZE from the peer
            encoder.header_table_size = table_size
            decoder.max_allowed_table_size = 4096
        headers = _block((token * length)[:length], topic, n, n)
        assert decoder.decode(_encode(encoder, headers), raw=True) == headers
