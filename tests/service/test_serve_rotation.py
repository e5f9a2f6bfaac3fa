"""`pushwise keys rotate-data-key` while `pushwise serve` runs: sends of re-encrypted tokens still go out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine.service.runner import runtime_file
from tests.api.conftest import start_serve

pytestmark = [pytest.mark.network, pytest.mark.slow]
TOKEN = "feedfacecafebeef" * 4   # the APNs sandbox delivers to any well-formed token


def _cli(env, db, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "--db", str(db), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _delivered(client: httpx.Client, user: str) -> dict:
    r = client.post("/v1/triggers", json={"name": "rot", "title": "t", "body": "b", "user_ids": [user]})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while True:
        states = client.get(f"/v1/triggers/{r.json()['trigger_id']}").json()["states"]
        if not {"pending", "in_flight", "retry"} & set(states) or time.monotonic() > deadline:
            return states
        time.sleep(0.2)


def test_sends_still_go_out_after_a_rotation_while_serving(tmp_path: Path):
    # the dispatcher kept the keyring it started with: after the rotation every token was under a key
    # it did not hold, and each dispatch tick failed with "encrypted under data key 'k2'"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUSHWISE_")}
    env.update(PUSHWISE_PSEUDONYM_KEY="rotation-test", XDG_CONFIG_HOME=str(tmp_path))   # key file, not env keys
    db = tmp_path / "pw.duckdb"
    server = start_serve(db, env, "--sandbox")
    try:
        info = json.loads(runtime_file(db).read_text())
        with httpx.Client(base_url=info["url"], headers={"Authorization": f"Bearer {info['admin_key']}"},
                          timeout=30) as client:
            assert client.post("/v1/devices", json={"user_id": "u1", "vendor": "apns", "token": TOKEN}
                               ).status_code == 200
            assert client.put("/v1/consents", json={"user_id": "u1", "message_class": "marketing",
                                                    "granted": True}).status_code == 200
            assert _delivered(client, "u1") == {"delivered": 1}
            rotated = _cli(env, db, "keys", "rotate-data-key", "--json")
            assert rotated.returncode == 0, rotated.stderr
            assert json.loads(rotated.stdout)["reencrypted"]["devices.token"] == 1
            assert _delivered(client, "u1") == {"delivered": 1}
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    assert "dispatch tick failed" not in err
