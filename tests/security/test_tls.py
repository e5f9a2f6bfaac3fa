"""HTTPS with a certificate from a CA generated here; plain HTTP only on loopback unless allowed."""

from __future__ import annotations

import ssl

import httpx
import pytest
import trustme

from engine.api import create_app
from engine.api.server import serve_in_thread
from engine.errors import ConfigError
from engine.service.runner import ServeOptions, check_bind

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
