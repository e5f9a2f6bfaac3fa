"""Vendor credentials: PyJWT independently verifies what we sign; the caching rules hold on a fixed clock."""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from engine.errors import AuthError, ConfigError, PushError
from engine.push.auth import FCM_SCOPE, ApnsTokenProvider, GoogleServiceAccountTokenProvider
from tests.push.conftest import T0, run


def _pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def apns(ec_key, fixed) -> ApnsTokenProvider:
    return ApnsTokenProvider("TEAM123456", "KEY1234567", _pem(ec_key), fixed)


def _segment(token: str, i: int) -> dict:
    part = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def test_apns_jwt_verifies_with_pyjwt(apns, ec_key):
    token = apns.token()
    claims = jwt.decode(token, ec_key.public_key(), algorithms=["ES256"], options={"verify_iat": False})
    assert claims == {"iss": "TEAM123456", "iat": int(T0.timestamp())}
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEY1234567", "typ": "JWT"}
    assert isinstance(_segment(token, 1)["iat"], int)              # a JSON number, not a string
    assert len(base64.urlsafe_b64decode(token.split(".")[2] + "==")) == 64  # JOSE r||s, not DER


def test_apns_token_is_cached_and_reminted_after_50_minutes(apns, fixed):
    first = apns.token()
    fixed.advance(timedelta(minutes=49))
    assert apns.token() == first
    fixed.advance(timedelta(minutes=1))
    assert apns.token() != first
    assert apns.mints == 2


def test_apns_invalidate_respects_the_20_minute_rule(apns, fixed):
    first = apns.token()
    apns.invalidate()
    fixed.advance(timedelta(minutes=19))
    assert apns.token() == first                    # too soon: APNs would answer TooManyProviderTokenUpdates
    fixed.advance(timedelta(minutes=1))
    assert apns.token() != first
    assert apns.mints == 2


def test_apns_expired_rejection_forces_a_remint_once(apns):
    first = apns.token()
    apns.invalidate(expired=True, token=first)
    second = apns.token()
    assert second != first
    apns.invalidate(expired=True, token=first)      # a late report about the old token changes nothing
    assert apns.token() == second
    assert apns.mints == 2


@pytest.mark.parametrize("key", ["not a key", "rsa"])
def test_apns_rejects_unusable_keys(fixed, rsa_key, key):
    pem = _pem(rsa_key) if key == "rsa" else key
    with pytest.raises(AuthError):
        ApnsTokenProvider("TEAM123456", "KEY1234567", pem, fixed)


def test_providers_never_show_secrets(apns, ec_key, caplog):
    caplog.set_level(logging.DEBUG, logger="engine.push.auth")
    token = apns.token()
    assert token not in caplog.text and "PRIVATE KEY" not in caplog.text
    assert token not in repr(apns)


# -- Google service account ------------------------------------------------------------------------

def _info(rsa_key) -> dict:
    return {"type": "service_account", "project_id": "p", "private_key_id": "kid-1",
            "private_key": _pem(rsa_key), "client_email": "sa@p.iam.gserviceaccount.com",
            "token_uri": "https://oauth.test/token"}


def _google(rsa_key, fixed, answers: list[httpx.Response] | None = None, expires_in: int = 3599):
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        form = dict(x.split("=", 1) for x in request.content.decode().split("&"))
        seen.append(form)
        if answers:
            return answers.pop(0)
        return httpx.Response(200, json={"access_token": f"at-{len(seen)}", "expires_in": expires_in,
                                         "token_type": "Bearer"})

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return GoogleServiceAccountTokenProvider(_info(rsa_key), client, fixed), client, seen


def test_google_assertion_verifies_with_pyjwt(rsa_key, fixed):
    provider, _, _ = _google(rsa_key, fixed)
    assertion = provider.assertion(T0)
    claims = jwt.decode(assertion, rsa_key.public_key(), algorithms=["RS256"], audience="https://oauth.test/token",
                        options={"verify_exp": False, "verify_iat": False})
    iat = int(T0.timestamp())
    assert claims == {"iss": "sa@p.iam.gserviceaccount.com", "scope": FCM_SCOPE,
                      "aud": "https://oauth.test/token", "iat": iat, "exp": iat + 3600}
    assert jwt.get_unverified_header(assertion)["kid"] == "kid-1"


def test_google_token_cached_until_five_minutes_before_expiry(rsa_key, fixed):
    provider, client, seen = _google(rsa_key, fixed)

    async def go():
        tokens = [await provider.token()]
        fixed.advance(timedelta(seconds=3599 - 301))
        tokens.append(await provider.token())
        fixed.advance(timedelta(seconds=2))
        tokens.append(await provider.token())
        await client.aclose()
        return tokens

    assert run(go()) == ["at-1", "at-1", "at-2"]
    assert seen[0]["grant_type"] == "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
    assert provider.fetches == 2


def test_google_invalidate_refetches_on_demand_once(rsa_key, fixed):
    provider, client, _ = _google(rsa_key, fixed)

    async def go():
        first = await provider.token()
        provider.invalidate(first)
        second = await provider.token()
        provider.invalidate(first)              # stale report: keeps the new token
        third = await provider.token()
        await client.aclose()
        return first, second, third

    assert run(go()) == ("at-1", "at-2", "at-2")


@pytest.mark.parametrize(("answer", "error", "message"), [
    (httpx.Response(400, json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
     AuthError, "invalid_grant: Invalid JWT Signature."),
    (httpx.Response(500, text="oops"), PushError, "token endpoint answered 500"),
])
def test_google_token_endpoint_errors(rsa_key, fixed, answer, error, message):
    provider, client, _ = _google(rsa_key, fixed, [answer])

    async def go():
        try:
            await provider.token()
        finally:
            await client.aclose()

    with pytest.raises(error, match=message):
        run(go())


def test_google_service_account_must_be_complete(rsa_key, fixed):
    info = _info(rsa_key)
    del info["token_uri"], info["private_key_id"]
    with pytest.raises(ConfigError, match="service account is missing private_key_id, token_uri"):
        GoogleServiceAccountTokenProvider(info, httpx.AsyncClient(), fixed)
