"""A service over a real temporary DuckDB file, a fixed data key, and keys of each scope."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from engine.api import ServiceContext, create_app
from engine.api.server import serve_in_thread
from engine.clock import FixedClock
from engine.security import Keyring, create_key
from engine.service.runner import runtime_file
from engine.store import Store

DATA_KEY = "11" * 32
NOW = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


@pytest.fixture
def keyring(monkeypatch) -> Keyring:
    monkeypatch.setenv("PUSHWISE_DATA_KEYS", f"k1:{DATA_KEY}")
    return Keyring((("k1", bytes.fromhex(DATA_KEY)),), "env")


@pytest.fixture
def service(tmp_path, keyring):
    store = Store(tmp_path / "svc.duckdb")
    ctx = ServiceContext(store=store, keyring=keyring, pseudonym_key=b"test-pseudonym-key", clock=FixedClock(NOW),
                         backup_dir=tmp_path / "backups")
    keys = {scope: create_key(store, keyring, [scope], NOW, rate_per_second=1000.0)[0]
            for scope in ("send", "ingest", "admin")}
    with serve_in_thread(create_app(ctx)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield ctx, client, keys
    store.close()


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def start_serve(db: Path, env: dict[str, str], *extra: str) -> subprocess.Popen:
    """`pushwise serve` on ``db`` (any port, no backups) in a child process, returned once it is listening."""
    server = subprocess.Popen([sys.executable, "-m", "engine.cli", "--db", str(db), "serve", "--port", "0",
                               "--backup-dir", "", *extra], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not runtime_file(db).exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(f"pushwise serve did not start: {server.communicate()[1]}")
        time.sleep(0.1)
    return server
