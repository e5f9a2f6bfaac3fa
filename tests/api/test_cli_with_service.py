"""The command line works with and without a running `pushwise serve`, never fighting it for the database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine.service.runner import runtime_file
from engine.store import Store
from tests.api.conftest import start_serve

pytestmark = [pytest.mark.network, pytest.mark.slow]
TOKEN = "c0ffee" * 10 + "abcd"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWISE_")}
    env.update(PUSHWISE_DATA_KEYS="k1:" + "44" * 32, PUSHWISE_PSEUDONYM_KEY="cli-test", XDG_CONFIG_HOME=str(tmp_path))
    return env


def _cli(env, db, *args, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "--db", str(db), *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_cli_goes_through_the_running_service_then_directly_after_it_stops(tmp_path):
    env, db = _env(tmp_path), tmp_path / "pw.duckdb"
    made = _cli(env, db, "keys", "create", "--scope", "send", "--json")
    assert made.returncode == 0, made.stderr
    server = start_serve(db, env)
    try:
        assert oct(runtime_file(db).stat().st_mode & 0o777) == "0o600"
        reg = _cli(env, db, "devices", "register", "--user", "u1", "--vendor", "apns", "--token", "-", stdin=TOKEN)
        assert reg.returncode == 0 and "registered" in reg.stdout, reg.stderr
        bad = _cli(env, db, "devices", "register", "--user", "u1", "--vendor", "nokia", "--token", TOKEN)
        assert bad.returncode == 3 and "unknown vendor" in bad.stderr and TOKEN not in bad.stderr
        backup = _cli(env, db, "backup", str(tmp_path / "bk"), "--json")
        assert backup.returncode == 0, backup.stderr
        assert json.loads(backup.stdout)["tables"]["devices"] == 1
        erased = _cli(env, db, "erase", "u1", "--json")
        assert json.loads(erased.stdout)["deleted"]["devices"] == 1
        busy = _cli(env, db, "restore", str(tmp_path / "bk"))
        assert busy.returncode == 1 and "stop `pushwise serve` before restoring" in busy.stderr
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    assert not runtime_file(db).exists()
    assert TOKEN not in out + err
    restored = _cli(env, db, "restore", str(tmp_path / "bk"))
    assert restored.returncode == 0 and "every checksum verified" in restored.stdout, restored.stderr
    # the backup predates the erasure: the erasure ledger removes u1 again (it used to come back)
    assert "re-erased 1 user recorded in the erasure ledger" in restored.stdout
    with Store(db) as store:
        assert store.execute("SELECT user_id FROM devices").fetchall() == []
        assert store.count("erasure_ledger") == 1
        revoked = store.execute("SELECT count(*) FROM api_keys WHERE label = 'service-local' AND revoked_at IS NULL")
        assert revoked.fetchall() == [(0,)]


def test_sigterm_stops_the_service_as_cleanly_as_ctrl_c(tmp_path):
    """systemd and Docker stop with SIGTERM: the local admin key is revoked and the runtime file removed."""
    env, db = _env(tmp_path), tmp_path / "pw.duckdb"
    server = start_serve(db, env)
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=60)
    assert server.returncode in (0, 130), err               # not -15: the default action did not kill it
    assert "Traceback" not in err
    assert not runtime_file(db).exists()
    with Store(db) as store:
        live = store.execute("SELECT count(*) FROM api_keys WHERE label = 'service-local' AND revoked_at IS NULL")
        assert live.fetchall() == [(0,)]
