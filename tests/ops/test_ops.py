"""``pushwise config show`` and ``pushwise doctor`` against real files and loopback TLS sandboxes."""

from __future__ import annotations

import json
import socket

import pytest

from engine.cli import main
from engine.config import Settings
from engine.ops.doctor import check_database, check_models, check_vendors, worst
from engine.push.sandbox import start_sandboxes
from engine.store import Store

SECRET = "hw-secret-Zq81x"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for key in list(__import__("os").environ):
        if key.startswith("PUSHWISE_"):
            monkeypatch.delenv(key)


def test_config_show_applies_file_and_env_and_redacts_secrets(tmp_path, monkeypatch, capsys):
    (tmp_path / "p.toml").write_text('seed = 11\n[vendors.huawei]\napp_id = "app-1"\n')
    monkeypatch.setenv("PUSHWISE_VENDORS__HUAWEI__CLIENT_SECRET", SECRET)
    monkeypatch.setenv("PUSHWISE_PSEUDONYM_KEY", SECRET + "-pk")
    monkeypatch.setenv("PUSHWISE_MAX_ATTEMPTS", "3")
    assert main(["--config", "p.toml", "config", "show"]) == 0
    text = capsys.readouterr().out
    assert "seed = 11" in text and "max_attempts = 3" in text
    assert 'vendors.huawei.app_id = "app-1"' in text
    assert 'vendors.huawei.client_secret = "***"' in text and 'pseudonym_key = "***"' in text
    assert main(["--config", "p.toml", "config", "show", "--json"]) == 0
    raw = capsys.readouterr().out
    assert json.loads(raw)["vendors"]["huawei"]["client_secret"] == "***"
    assert SECRET not in text and SECRET not in raw


def test_doctor_on_a_fresh_checkout_warns_and_exits_0(capsys):
    assert main(["doctor", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "warn"
    by_area = {(c["area"], c["name"]): c for c in out["checks"]}
    assert by_area[("installation", "duckdb")]["status"] == "ok"
    assert "does not exist yet" in by_area[("database", "file")]["detail"]
    assert by_area[("vendors", "enabled")]["detail"] == "no vendor is enabled"


def test_database_and_models_checks(tmp_path):
    db = tmp_path / "p.duckdb"
    Store(db).close()
    checks = check_database(str(db))
    assert [c.status for c in checks] == ["ok", "ok"] and checks[1].detail.startswith("all ")
    (tmp_path / "junk.duckdb").write_bytes(b"not a database at all" * 100)
    assert worst(check_database(str(tmp_path / "junk.duckdb"))) == "fail"
    models = tmp_path / "models"
    (models / "click" / "20240101T000000Z").mkdir(parents=True)
    (models / "click" / "20240101T000000Z" / "card.json").write_text('{"trained_at": "2024-01-01"}')
    (models / "click" / "20240101T000000Z" / "model.txt").write_text("tree")
    (models / "send_time" / "20240101T000000Z").mkdir(parents=True)
    (models / "send_time" / "20240101T000000Z" / "card.json").write_text("{broken")
    found = {c.name: c for c in check_models(str(models))}
    assert found["click"].status == "ok" and "trained 2024-01-01" in found["click"].detail
    assert found["send_time"].status == "fail" and "card.json unreadable" in found["send_time"].detail


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_vendor_reachability_over_real_tls(tmp_path):
    with start_sandboxes(tmp_path / "sb") as sandboxes:
        settings = Settings(vendors=sandboxes.vendor_settings())
        checks = check_vendors(settings, timeout=5)
        # Every vendor the sandboxes enable (APNs, FCM and any OEM sandbox): credentials and TLS are fine.
        assert [(c.area, c.name, c.status) for c in checks[:4]] == [
            ("vendor:apns", "credentials", "ok"), ("vendor:apns", "reachable", "ok"),
            ("vendor:fcm", "credentials", "ok"), ("vendor:fcm", "reachable", "ok")]
        assert {c.status for c in checks} == {"ok"}, [c for c in checks if c.status != "ok"]
        assert "certificate verified" in checks[1].detail
        # Without the sandbox CA the certificate must not verify.
        settings.vendors.apns.ca_file = ""
        settings.vendors.fcm.base_url = f"https://127.0.0.1:{_closed_port()}"
        bad = {c.area: c for c in check_vendors(settings, timeout=5) if c.name == "reachable"}
        assert bad["vendor:apns"].status == "fail" and "TLS handshake" in bad["vendor:apns"].detail
        assert bad["vendor:fcm"].status == "fail" and "cannot connect" in bad["vendor:fcm"].detail


@pytest.mark.slow
def test_doctor_exit_code_is_1_when_a_vendor_is_unreachable(tmp_path, capsys):
    with start_sandboxes(tmp_path / "sb") as sandboxes:
        v = sandboxes.vendor_settings()
        toml = (f'[vendors.apns]\nenabled = true\nbase_url = "https://127.0.0.1:{_closed_port()}"\n'
                f'team_id = "{v.apns.team_id}"\nkey_id = "{v.apns.key_id}"\nkey_file = "{v.apns.key_file}"\n'
                f'topic = "{v.apns.topic}"\nca_file = "{v.apns.ca_file}"\n')
        (tmp_path / "c.toml").write_text(toml)
        assert main(["--config", "c.toml", "doctor"]) == 1
        out = capsys.readouterr().out
        assert "[fail] vendor:apns    reachable      cannot connect" in out and out.rstrip().endswith("doctor: fail")
        assert main(["--config", "c.toml", "doctor", "--offline"]) == 0


def test_a_password_inside_a_url_is_redacted_everywhere_config_is_shown(tmp_path, capsys):
    (tmp_path / "p.toml").write_text('[vendors.huawei]\nenabled = true\nbase_url = "https://alice:HUNTER2PASS@127.0.0.1:9/"\n')
    assert main(["--config", "p.toml", "config", "show"]) == 0
    text = capsys.readouterr().out
    assert 'base_url = "https://alice:***@127.0.0.1:9/"' in text
    main(["--config", "p.toml", "doctor", "--json"])
    out = capsys.readouterr().out
    assert "HUNTER2PASS" not in text and "HUNTER2PASS" not in out
    assert "alice:***@127.0.0.1:9" in out                    # the connection failure still names the host


def test_doctor_warns_about_a_key_file_others_can_read(tmp_path):
    key = tmp_path / "AuthKey.p8"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    key.chmod(0o644)
    settings = Settings()
    apns = settings.vendors.apns
    apns.enabled, apns.key_file, apns.key_id, apns.team_id, apns.topic = True, str(key), "K", "T", "com.x"
    warned = [c for c in check_vendors(settings, network=False) if c.name == "key_file"]
    assert [c.status for c in warned] == ["warn"] and "mode 0644" in warned[0].detail
    key.chmod(0o600)
    assert [c for c in check_vendors(settings, network=False) if c.name == "key_file"] == []
