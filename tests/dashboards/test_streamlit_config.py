"""`.streamlit/config.toml` keeps Streamlit offline: no usage statistics and no external-IP lookup."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request

import pytest

from tests.conftest import REPO

CONFIG = REPO / ".streamlit" / "config.toml"


def test_config_sets_what_skips_the_external_ip_lookup():
    # streamlit/web/bootstrap.py `_print_url`: when headless and neither browser.serverAddress nor a
    # specific server.address was set, it asks checkip.amazonaws.com for the machine's address.
    config = tomllib.loads(CONFIG.read_text())
    assert config["browser"]["serverAddress"] == "localhost"
    assert config["browser"]["gatherUsageStats"] is False
    assert config["server"]["headless"] is True


def test_streamlit_reads_the_server_address_as_set_from_the_repository_root():
    code = ("from streamlit import config; config.get_config_options(force_reparse=True); "
            "print(config.is_manually_set('browser.serverAddress'), config.get_option('browser.serverAddress'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "localhost"], out.stderr[-2000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_startup_log_has_no_external_ip_line(tmp_path):
    # No --server.address on purpose: a specific address would skip the lookup by itself, and hide
    # whether the config file does.
    port = _free_port()
    log_path = tmp_path / "streamlit.log"
    env = {**os.environ, "PUSHWISE_DB_PATH": str(tmp_path / "none.duckdb"), "PUSHWISE_PSEUDONYM_KEY": "k"}
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"),
                                 "--server.port", str(port), "--server.fileWatcherType", "none"],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while "URL:" not in log_path.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"streamlit did not start:\n{log_path.read_text()[-2000:]}")
                time.sleep(0.3)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=10) as r:
                assert r.read() == b"ok"
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    text = log_path.read_text()
    # "URL:" alone (not "Local URL:"/"Network URL:") is the branch that never looks the address up;
    # the lookup, when it runs, logs "External URL: …" or "Did not auto detect external IP".
    assert f"URL: http://localhost:{port}" in [line.strip() for line in text.splitlines()], text
    assert "External URL" not in text and "external IP" not in text, text
