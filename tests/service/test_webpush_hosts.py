"""Web Push endpoints must belong to a configured push service: an ingest key cannot make the dispatcher POST
to an arbitrary URL (cloud metadata, internal hosts)."""

from __future__ import annotations

import pytest

from engine.config import WebPushConfig, load_settings
from engine.errors import ConfigError, InputError
from engine.service.operations import check_webpush_endpoint, register_device
from tests.api.conftest import NOW, auth
from tests.api.test_hostile_input import _subscription
from tests.backup.test_backup import K1

DEFAULTS = WebPushConfig().endpoint_hosts()
REFUSED = "Web Push endpoint is not on a push service this install sends to (vendors.webpush.allowed_hosts)"


@pytest.mark.parametrize("endpoint", [
    "https://fcm.googleapis.com/fcm/send/abc:APA91b",
    "https://updates.push.services.mozilla.com/wpush/v2/gAAAA",
    "https://wns2-by3p.notify.windows.com/w/?token=BQYAAA",
    "https://web.push.apple.com/QGuQyavXutnMH",
    "https://FCM.googleapis.com:443/fcm/send/x",
])
def test_the_real_push_services_are_accepted(endpoint):
    token = _subscription(endpoint)
    assert check_webpush_endpoint(token, DEFAULTS) == token


@pytest.mark.parametrize("endpoint", [
    "https://169.254.169.254/latest/meta-data/",           # cloud metadata
    "https://127.0.0.1:8443/wpush/v2/abc",                 # loopback, no sandbox configured
    "https://localhost/x",
    "https://internal.corp.example/admin",
    "https://notify.windows.com/x",                        # the wildcard needs a subdomain
    "https://fcm.googleapis.com.evil.example/x",
    "https://evil.fcm.googleapis.com/x",                   # an exact name covers no subdomain
    "https://fcm.googleapis.com@evil.example/x",           # userinfo trick: the host is evil.example
    "https://[::1]/x",
])
def test_other_hosts_are_refused_without_naming_them(endpoint):
    with pytest.raises(InputError) as exc:
        check_webpush_endpoint(_subscription(endpoint), DEFAULTS)
    assert str(exc.value) == REFUSED


def test_a_configured_sandbox_adds_its_loopback_host_only():
    sandbox = WebPushConfig(enabled=True, base_url="https://127.0.0.1:8443")
    hosts = sandbox.endpoint_hosts()
    assert "127.0.0.1" in hosts and set(DEFAULTS) <= set(hosts)
    check_webpush_endpoint(_subscription("https://127.0.0.1:8443/wpush/v2/abc"), hosts)
    with pytest.raises(InputError):
        check_webpush_endpoint(_subscription("https://localhost:8443/wpush/v2/abc"), hosts)
    # a non-loopback base_url is not added: the list is the only way to allow a public host
    assert WebPushConfig(base_url="https://push.example.org").endpoint_hosts() == DEFAULTS


def test_the_list_is_configurable_and_checked_at_load(tmp_path):
    s = load_settings(env={"PUSHWISE_VENDORS__WEBPUSH__ALLOWED_HOSTS": "push.example.org, *.push.example.net"})
    assert s.vendors.webpush.endpoint_hosts() == ("push.example.org", "*.push.example.net")
    for bad in ("https://push.example.org/", "*", "push.example.org/x", "*.com"):
        with pytest.raises(ConfigError, match="vendors.webpush.allowed_hosts"):
            load_settings(env={"PUSHWISE_VENDORS__WEBPUSH__ALLOWED_HOSTS": bad}).validate()


def test_register_device_refuses_a_subscription_off_the_list(store):
    with pytest.raises(InputError, match="not on a push service"):
        register_device(store, K1, user_id="u1", vendor="webpush", token=_subscription("https://10.0.0.5/x"),
                        now=NOW)
    assert store.count("devices") == 0
    register_device(store, K1, user_id="u1", vendor="webpush",
                    token=_subscription("https://fcm.googleapis.com/fcm/send/x"), now=NOW)
    assert store.count("devices") == 1


def test_the_api_refuses_a_subscription_off_the_list(service):
    ctx, client, keys = service
    bad = client.post("/v1/devices", headers=auth(keys["ingest"]),
                      json={"user_id": "u1", "vendor": "webpush", "token": _subscription("https://169.254.169.254/x")})
    assert bad.status_code == 422 and REFUSED in bad.text and "169.254" not in bad.text
    ok = client.post("/v1/devices", headers=auth(keys["ingest"]),
                     json={"user_id": "u1", "vendor": "webpush",
                           "token": _subscription("https://updates.push.services.mozilla.com/wpush/v2/x")})
    assert ok.status_code == 200, ok.text
    assert ctx.store.count("devices") == 1
