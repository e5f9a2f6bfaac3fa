"""Vendor calls always verify TLS: every channel (and its token endpoint) refuses an untrusted server
certificate, and a vendor section pointing at plain ``http://`` is refused when the channels are built."""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

import engine.push.sandbox as sandbox_pkg
from engine.clock import SystemClock
from engine.config import Settings
from engine.domain import Outcome, PushMessage
from engine.errors import ConfigError
from engine.push.registry import CHANNELS, build_channels
from engine.push.sandbox import Sandboxes, start_sandboxes
from tests.push.conftest import run

VENDORS = sorted(CHANNELS)


@pytest.fixture(scope="module")
def boxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxes]:
    with start_sandboxes(Path(tmp_path_factory.mktemp("tls"))) as started:
        yield started


def _message(boxes: Sandboxes, vendor: str, rng: random.Random) -> PushMessage:
    maker = getattr(sandbox_pkg, f"new_{vendor}_token", None) or boxes.webpush.new_token
    return PushMessage(send_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), vendor=vendor,
                       token=maker(rng), title="Back in stock", body="The teapot is back",
                       message_class="transactional")


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize("trust", ["system store only", "another CA"])
def test_an_untrusted_vendor_certificate_is_an_auth_error_and_nothing_is_sent(boxes, tmp_path, vendor, trust):
    settings = Settings()
    settings.vendors = boxes.vendor_settings()
    ca_file = ""
    if trust == "another CA":
        ca_file = str(tmp_path / "other-ca.pem")
        trustme.CA().cert_pem.write_to_path(ca_file)
    section = getattr(settings.vendors, vendor)
    section.ca_file = ca_file
    for name in CHANNELS:
        if name != vendor:
            getattr(settings.vendors, name).enabled = False
    before = boxes.stats()[vendor].get("requests", 0)
    msg = _message(boxes, vendor, random.Random(3))

    async def go():
        channels = build_channels(settings, SystemClock())
        try:
            return await channels[vendor].send([msg])
        finally:
            for ch in channels.values():
                await ch.aclose()

    (receipt,) = run(go())
    assert receipt.outcome is Outcome.AUTH_ERROR
    assert receipt.reason is not None and receipt.reason.endswith("tls: server certificate not trusted")
    assert boxes.stats()[vendor].get("requests", 0) == before      # the handshake failed: no request at all
    assert not [a for a in boxes.accepted(vendor) if a.token == msg.token]


# Web Push has no configured vendor URL: endpoints come from the subscriptions, and
# parse_subscription refuses http ones (tests/push/test_webpush.py::test_subscription_token_round_trips).
@pytest.mark.parametrize("vendor", [v for v in VENDORS if v != "webpush"])
def test_a_plain_http_vendor_url_is_refused(boxes, vendor):
    section = getattr(boxes.vendor_settings(), vendor)
    fields = [f.name for f in dataclasses.fields(section)
              if f.name in ("base_url", "auth_url") and getattr(section, f.name)]
    assert "base_url" in fields
    for name in fields:
        settings = Settings()
        settings.vendors = boxes.vendor_settings()
        plain = getattr(getattr(settings.vendors, vendor), name).replace("https://", "http://")
        setattr(getattr(settings.vendors, vendor), name, plain)
        with pytest.raises(ConfigError, match=rf"vendors\.{vendor}\.{name} must be an https:// URL, not http:"):
            build_channels(settings, SystemClock())


def test_a_service_account_with_a_plain_http_token_uri_is_refused(boxes, tmp_path):
    import json

    info = json.loads(Path(boxes.service_account_file).read_text())
    info["token_uri"] = info["token_uri"].replace("https://", "http://")
    plain = tmp_path / "sa.json"
    plain.write_text(json.dumps(info))
    settings = Settings()
    settings.vendors = boxes.vendor_settings()
    settings.vendors.fcm.service_account_file = str(plain)
    with pytest.raises(ConfigError, match="token_uri must be an https:// URL"):
        build_channels(settings, SystemClock())
