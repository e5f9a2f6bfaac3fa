"""Realistic device tokens for tests and demos (APNs: 64 lowercase hex; FCM: ~160-char registration token)."""

from __future__ import annotations

import base64
import random

__all__ = ["new_apns_token", "new_fcm_token"]


def _urlsafe(rng: random.Random, chars: int) -> str:
    raw = rng.randbytes(chars * 3 // 4 + 3)
    return base64.urlsafe_b64encode(raw).decode()[:chars]


def new_apns_token(rng: random.Random) -> str:
    """A 32-byte APNs device token as 64 lowercase hex characters."""
    return f"{rng.getrandbits(256):064x}"


def new_fcm_token(rng: random.Random) -> str:
    """An FCM registration token shaped like real ones: ``<22-char instance id>:APA91b<134 chars>``.

    Both parts use the base64url alphabet; the result is 163 characters and depends only on ``rng``.
    """
    return f"{_urlsafe(rng, 22)}:APA91b{_urlsafe(rng, 134)}"
