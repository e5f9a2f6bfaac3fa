"""HTTPS with a certificate from a CA generated here (server and CLI); plain HTTP only on loopback unless allowed."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import httpx
import pytest
import trustme

from engine.api import create_app
from engine.api.server import serve_in_thread
from engine.cli import main
from engine.config import load_settings
from engine.errors import ConfigError
from engine.security.vendor_secrets import get_secret
from engine.service.client import running_service
from engine.service.runner import ServeOptions, check_bind, runtime_file

pytestmark = pytest.mark.network


def test_the_api_serves_https_that_a_client_trusting_the_ca_accepts(service, tmp_path):
    ctx, _, _ = service
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    with serve_in_thread(create_app(ctx), certfile=str(certfile), keyfile=str(keyfile)) as url:
        assert url.startswith("https://")
        with httpx.Client(verify=trusting) as client:
            assert client.get(f"{url}/v1/health").json()["status"] == "ok"
        with httpx.Client() as client, pytest.raises(httpx.ConnectError):   # system CAs do not know ours
            client.get(f"{url}/v1/health")
        with httpx.Client() as client, pytest.raises(httpx.HTTPError):      # no plain HTTP on the TLS port
            client.get(url.replace("https://", "http://") + "/v1/health")


@pytest.mark.parametrize(("opts", "message"), [
    (ServeOptions(host="0.0.0.0"), "refusing plain HTTP on 0.0.0.0"),
    (ServeOptions(host="192.168.1.10"), "--allow-remote-http"),
    (ServeOptions(certfile="/nonexistent.pem", keyfile="/nonexistent.key"), "TLS file not found"),
    (ServeOptions(certfile="c.pem"), "--cert and --key go together"),
])
def test_serve_refuses_unsafe_or_incomplete_transport(opts, message):
    with pytest.raises(ConfigError, match=message):
        check_bind(opts)


@pytest.mark.parametrize("opts", [ServeOptions(host="127.0.0.1"), ServeOptions(host="::1"),
                                  ServeOptions(host="localhost"),
                                  ServeOptions(host="0.0.0.0", allow_remote_http=True)])
def test_loopback_or_explicitly_allowed_http_is_accepted(opts):
    check_bind(opts)


def _tls_files(tmp_path) -> tuple[str, str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = [tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"]
    cert.private_key_and_cert_chain_pem.write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    return tuple(str(p) for p in paths)


@pytest.fixture
def locked_db(tmp_path):
    """A database file held by another process, as `pushwise serve` holds it."""
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('ready', flush=True); sys.stdin.read()", str(db)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "ready"
    yield db
    holder.stdin.close()
    holder.wait(timeout=30)
    holder.stdout.close()


def test_the_cli_reaches_an_https_service_with_a_private_ca_through_service_ca(service, tmp_path, locked_db,
                                                                               monkeypatch, capsys):
    ctx, _, keys = service
    certfile, keyfile, cafile = _tls_files(tmp_path)
    with serve_in_thread(create_app(ctx), certfile=certfile, keyfile=keyfile) as url:
        runtime_file(locked_db).write_text(json.dumps({"url": url, "admin_key": keys["admin"], "pid": 0,
                                                       "cafile": None}))
        monkeypatch.delenv("PUSHWISE_SERVICE_CA", raising=False)
        assert main(["--db", str(locked_db), "secrets", "list"]) == 1        # system CAs do not know ours
        assert "TLS certificate is not trusted: set service_ca (PUSHWISE_SERVICE_CA)" in capsys.readouterr().err
        monkeypatch.setenv("PUSHWISE_SERVICE_CA", cafile)
        monkeypatch.setenv("XIAOMI_APP_SECRET", "tls-test-secret-value")
        assert main(["--db", str(locked_db), "secrets", "put", "xiaomi", "app",
                     "--value-from-env", "XIAOMI_APP_SECRET"]) == 0
        assert main(["--db", str(locked_db), "secrets", "list", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"name": "app"' in out and "tls-test-secret-value" not in out
    assert get_secret(ctx.store, ctx.keyring, "xiaomi", "app") == "tls-test-secret-value"   # it went to the service


def test_a_ca_recorded_by_the_service_is_used_and_a_bad_bundle_is_named(service, tmp_path):
    ctx, _, keys = service
    certfile, keyfile, cafile = _tls_files(tmp_path)
    db = tmp_path / "pw.duckdb"
    with serve_in_thread(create_app(ctx), certfile=certfile, keyfile=keyfile) as url:
        runtime_file(db).write_text(json.dumps({"url": url, "admin_key": keys["admin"], "pid": 0, "cafile": cafile}))
        client = running_service(db)
        try:
            assert client.call("GET", "/v1/admin/secrets") == []
        finally:
            client.close()
    with pytest.raises(ConfigError, match=r"PUSHWISE_SERVICE_CA\) .*missing.pem is not a usable CA bundle"):
        running_service(db, ca=str(tmp_path / "missing.pem"))
    assert load_settings(path=None, env={"PUSHWISE_SERVICE_CA": cafile}).service_ca == cafile
