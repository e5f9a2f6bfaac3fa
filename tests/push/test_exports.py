"""The public namespace stays small and honest; token helpers produce the vendors' formats."""

from __future__ import annotations

import importlib
import random
import re

import pytest

MODULES = ["engine.push", "engine.push.base", "engine.push.auth", "engine.push.apns", "engine.push.fcm",
           "engine.push.registry", "engine.push.sandbox", "engine.push.sandbox.ca",
           "engine.push.sandbox.server", "engine.push.sandbox.common", "engine.push.sandbox.apns",
           "engine.push.sandbox.fcm", "engine.push.sandbox.tokens", "engine.push.sandbox.credentials"]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_honest(name):
    module = importlib.import_module(name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == []
    assert module.__doc__ and module.__doc__.strip()


def test_package_exports():
    import engine.push as push

    assert set(push.__all__) == {"CHANNELS", "ApnsChannel", "ApnsTokenProvider", "FcmChannel",
                                 "GoogleServiceAccountTokenProvider", "PushChannel", "build_channels",
                                 "parse_retry_after"}


def test_token_helpers_are_seeded_and_well_formed():
    from engine.push.sandbox import new_apns_token, new_fcm_token

    a, b = random.Random(1), random.Random(1)
    apns, fcm = new_apns_token(a), new_fcm_token(a)
    assert (apns, fcm) == (new_apns_token(b), new_fcm_token(b))
    assert re.fullmatch(r"[0-9a-f]{64}", apns)
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}:APA91b[A-Za-z0-9_-]{134}", fcm) and len(fcm) == 163
