"""Pseudonymous ids (keyed hash, key from the environment or a per-install file) and the public API."""

from __future__ import annotations

import hashlib
import hmac
import stat
import types

import pytest

import engine.analytics as an
from engine.analytics.pseudonym import KEY_ENV, load_pseudonym_key, pseudonymise, pseudonymise_all
from engine.errors import ConfigError


def test_pseudonym_is_first_12_hex_of_hmac_sha256():
    expected = hmac.new(b"key", b"online_retail:17850", hashlib.sha256).hexdigest()[:12]
    assert pseudonymise("online_retail:17850", b"key") == expected
    assert len(expected) == 12
    assert pseudonymise("online_retail:17850", b"other") != expected
    assert pseudonymise_all(["a", None], b"key") == [pseudonymise("a", b"key"), None]


def test_key_from_environment_wins(tmp_path):
    key_file = tmp_path / "k"
    assert load_pseudonym_key({KEY_ENV: "from-env"}, key_file) == b"from-env"
    assert not key_file.exists()


def test_key_file_created_once_owner_only(tmp_path):
    key_file = tmp_path / "conf" / "pushwise" / "pseudonym.key"
    first = load_pseudonym_key({}, key_file)
    assert len(first) == 64
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_pseudonym_key({}, key_file) == first


def test_default_key_file_follows_xdg(tmp_path):
    key = load_pseudonym_key({"XDG_CONFIG_HOME": str(tmp_path)})
    assert (tmp_path / "pushwise" / "pseudonym.key").read_bytes().strip() == key


def test_empty_key_file_is_an_error(tmp_path):
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text("\n")
    with pytest.raises(ConfigError) as info:
        load_pseudonym_key({}, key_file)
    assert str(info.value) == f"the pseudonym key file {key_file} is empty; delete it to have a new key made"


def test_all_is_honest():
    assert sorted(an.__all__) == sorted(set(an.__all__))
    for name in an.__all__:
        assert hasattr(an, name), name
    public = {n for n, v in vars(an).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public == set(an.__all__)
