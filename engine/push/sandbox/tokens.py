"""Realistic device tokens for tests and demos (APNs: 64 lowercase hex; FCM: ~160-char registration token)."""

from __future__ import annotations

import random

__all__ = ["new_apns_token", "new_fcm_token"]

_URLSAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def new_apns_token(rng: random.Random) -> str:
    """A 32-byte APNs device token as 64 lowercase hex characters."""
    return f"{rng.getrandbits(256):064x}"


def new_fcm_token(rng: random.Random) -> str:
    """An FCM registration token shaped like real ones: ``<22-char instance id>:APA91b<134 chars>``."""
    instance = "".join(rng.choice(_URLSAFE) for _ in range(22))
    body = "".join(rng.choice(_URLSAFE) for _ in range(134))
    return f"{instance}:APA91b{body}"
