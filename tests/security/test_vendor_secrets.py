"""Vendor credentials stored encrypted: round trip, row binding, validation, rotation, CLI, resolution at build."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.cli import main
from engine.clock import FixedClock
from engine.config import ApnsConfig, Settings, VendorsConfig, XiaomiConfig
from engine.errors import ConfigError, InputError
from engine.push.registry import build_channels
from engine.security.crypto import CryptoError, Keyring
from engine.security.vendor_secrets import (
    get_secret,
    list_secrets,
    put_secret,
    remove_secret,
    resolved_vendors,
)
from engine.service.operations import rotate_data_key
from engine.store import Store

NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
K1 = Keyring((("k1", bytes(range(32))),))
APP_SECRET = "xiaomi-app-secret-4f1d2c"
P8 = ec.generate_private_key(ec.SECP256R1()).private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


@pytest.fixture
def store():
    with Store(":memory:") as s:
        yield s


def test_put_get_list_remove_round_trip_without_ever_listing_values(store):
    assert put_secret(store, K1, "apns", "p8", P8, NOW) is True
    assert put_secret(store, K1, "xiaomi", "app", "old", NOW) is True
    assert put_secret(store, K1, "xiaomi", "app", APP_SECRET, NOW) is False      # replaced, one row
    stored = store.execute("SELECT vendor, name, ciphertext FROM vendor_secrets ORDER BY ALL").fetchall()
    assert [(v, n) for v, n, _ in stored] == [("apns", "p8"), ("xiaomi", "app")]
    assert all(c.startswith("pw1:k1:") and P8[30:60] not in c and APP_SECRET not in c for _, _, c in stored)
    assert get_secret(store, K1, "apns", "p8") == P8
    assert get_secret(store, K1, "xiaomi", "app") == APP_SECRET
    listed = list_secrets(store)
    assert [(i.vendor, i.name, i.key_id) for i in listed] == [("apns", "p8", "k1"), ("xiaomi", "app", "k1")]
    assert APP_SECRET not in repr(listed)
    assert remove_secret(store, "xiaomi", "app") is True and remove_secret(store, "xiaomi", "app") is False
    with pytest.raises(ConfigError, match=r"no stored secret xiaomi/app; add it with `pushwise secrets put"):
        get_secret(store, K1, "xiaomi", "app")


def test_a_ciphertext_moved_to_another_vendor_or_name_does_not_decrypt(store):
    put_secret(store, K1, "apns", "p8", P8, NOW)
    put_secret(store, K1, "fcm", "sa", "{}", NOW)
    store.execute("""UPDATE vendor_secrets SET ciphertext = (SELECT ciphertext FROM vendor_secrets
                     WHERE vendor = 'apns') WHERE vendor = 'fcm'""")
    with pytest.raises(CryptoError, match="failed authentication") as info:
        get_secret(store, K1, "fcm", "sa")
    assert "BEGIN" not in str(info.value)


@pytest.mark.parametrize(("vendor", "name", "value", "message"), [
    ("nokia", "p8", "s3cr3t-value", "unknown vendor 'nokia'; expected one of apns, fcm"),
    ("apns", "P8", "s3cr3t-value", "a secret name is 1 to 64 characters of a-z"),
    ("apns", "../p8", "s3cr3t-value", "a secret name is 1 to 64 characters of a-z"),
    ("apns", "p8", "  \n", "the secret apns/p8 is empty"),
    ("apns", "p8", "s3cr3t-value" * 6000, "the secret apns/p8 is larger than 65536 bytes"),
])
def test_bad_input_is_refused_with_a_message_that_never_quotes_the_value(store, vendor, name, value, message):
    with pytest.raises(InputError) as info:
        put_secret(store, K1, vendor, name, value, NOW)
    assert str(info.value).startswith(message)
    assert "s3cr3t" not in str(info.value)
    assert store.execute("SELECT count(*) FROM vendor_secrets").fetchall() == [(0,)]


def test_rotation_reencrypts_vendor_secrets_with_the_rest(store):
    put_secret(store, K1, "apns", "p8", P8, NOW)
    put_secret(store, K1, "xiaomi", "app", APP_SECRET, NOW)
    k2 = K1.with_new_key()
    assert rotate_data_key(store, k2) == {"devices.token": 0, "api_keys.signing_secret": 0,
                                          "vendor_secrets.ciphertext": 2}
    assert [i.key_id for i in list_secrets(store)] == ["k2", "k2"]
    assert get_secret(store, k2, "apns", "p8") == P8 and get_secret(store, k2, "xiaomi", "app") == APP_SECRET
    with pytest.raises(CryptoError, match="data key 'k2'"):
        get_secret(store, K1, "apns", "p8")       # the old keyring alone no longer opens them
    assert rotate_data_key(store, k2)["vendor_secrets.ciphertext"] == 0


def _vendors() -> VendorsConfig:
    return VendorsConfig(
        apns=ApnsConfig(enabled=True, team_id="TEAM123456", key_id="KEY1234567", key_file="secret:apns/p8",
                        topic="com.example.app"),
        xiaomi=XiaomiConfig(enabled=True, app_secret="secret:xiaomi/app", package_name="com.example.app"))


def test_channels_are_built_from_stored_secrets_that_never_touch_the_disk(store, tmp_path):
    put_secret(store, K1, "apns", "p8", P8, NOW)
    put_secret(store, K1, "xiaomi", "app", APP_SECRET, NOW)
    vendors = _vendors()
    Settings(vendors=vendors).validate()       # a reference passes validation without a file on disk
    with resolved_vendors(vendors, store, K1) as plain:
        key_path = plain.apns.key_file
        assert key_path.startswith("/proc/self/fd/")          # an anonymous memfd, not a file
        assert Path(key_path).read_text() == P8
        assert plain.xiaomi.app_secret == APP_SECRET
        channels = build_channels(Settings(vendors=plain).validate(), FixedClock(NOW))
    try:
        assert sorted(channels) == ["apns", "xiaomi"]
        assert channels["xiaomi"]._secret == APP_SECRET
        assert channels["apns"].tokens.token()            # the provider JWT is signed with the stored key
    finally:
        for ch in channels.values():
            asyncio.run(ch.aclose())
    assert vendors.apns.key_file == "secret:apns/p8"          # the caller's config is untouched
    assert not Path(key_path).exists() or Path(key_path).read_bytes() != P8.encode()


def test_build_channels_resolves_references_from_the_store_it_is_given(store):
    put_secret(store, K1, "apns", "p8", P8, NOW)
    put_secret(store, K1, "xiaomi", "app", APP_SECRET, NOW)
    settings = Settings(vendors=_vendors())
    with pytest.raises(ConfigError, match="vendors.apns.key_file references a stored secret, but no database"):
        build_channels(settings, FixedClock(NOW))
    channels = build_channels(settings, FixedClock(NOW), store=store, keyring=K1)
    try:
        assert channels["xiaomi"]._secret == APP_SECRET
        assert channels["apns"].tokens.token().count(".") == 2      # an ES256 JWT signed with the stored key
    finally:
        for ch in channels.values():
            asyncio.run(ch.aclose())


@pytest.mark.parametrize(("ref", "message"), [
    ("secret:apns", "vendors.apns.key_file must reference a stored secret as 'secret:VENDOR/NAME'"),
    ("secret:nokia/p8", "vendors.apns.key_file must reference a stored secret as 'secret:VENDOR/NAME'"),
    ("secret:apns/p9", "no stored secret apns/p9"),
])
def test_bad_or_missing_references_fail_at_build_with_the_field_named(store, ref, message):
    put_secret(store, K1, "apns", "p8", P8, NOW)
    vendors = VendorsConfig(apns=ApnsConfig(enabled=True, team_id="T", key_id="K", key_file=ref, topic="t"))
    with pytest.raises(ConfigError, match=message), resolved_vendors(vendors, store, K1):
        pass


def test_cli_puts_lists_and_removes_without_printing_the_secret(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PUSHWISE_DATA_KEYS", "k1:" + "55" * 32)
    monkeypatch.setenv("XIAOMI_APP_SECRET", APP_SECRET)
    db, p8 = str(tmp_path / "pw.duckdb"), tmp_path / "AuthKey.p8"
    p8.write_text(P8)
    assert main(["--db", db, "secrets", "put", "apns", "p8", "--file", str(p8)]) == 0
    assert main(["--db", db, "secrets", "put", "xiaomi", "app", "--value-from-env", "XIAOMI_APP_SECRET"]) == 0
    assert main(["--db", db, "secrets", "put", "apns", "p8", "--value-from-env", "PW_TEST_UNSET_VAR"]) == 3
    assert main(["--db", db, "secrets", "put", "apns", "p8", "--file", str(tmp_path / "missing.p8")]) == 3
    assert main(["--db", db, "secrets", "remove", "fcm", "sa"]) == 3
    out = capsys.readouterr()
    assert 'stored (encrypted); refer to it as "secret:apns/p8" in [vendors.apns]' in out.out
    assert "environment variable PW_TEST_UNSET_VAR is not set" in out.err
    assert "no stored secret fcm/sa" in out.err
    assert main(["--db", db, "secrets", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(i["vendor"], i["name"], i["key_id"]) for i in listed] == [("apns", "p8", "k1"), ("xiaomi", "app", "k1")]
    assert main(["--db", db, "secrets", "remove", "xiaomi", "app"]) == 0
    assert main(["--db", db, "secrets", "list"]) == 0
    out = capsys.readouterr()
    assert "secret:apns/p8" in out.out and "xiaomi" not in out.out.split("removed")[-1]
    assert APP_SECRET not in out.out + out.err and "PRIVATE KEY" not in out.out + out.err
    assert P8.encode()[40:80] not in Path(db).read_bytes() and APP_SECRET.encode() not in Path(db).read_bytes()
