"""Without a configured password the dashboard says so, and shows personal data to this machine only."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engine.security.dashboard_login import HASH_ENV, require_login


class _FakeSt:
    """The few Streamlit calls `require_login` makes when no password is configured."""

    def __init__(self, ip: str | None) -> None:
        self.context = SimpleNamespace(ip_address=ip)
        self.said: list[tuple[str, str]] = []
        self.sidebar = SimpleNamespace(caption=lambda text: self.said.append(("caption", text)))

    def error(self, text: str) -> None:
        self.said.append(("error", text))


@pytest.mark.parametrize("ip", [None, "127.0.0.1", "::1"])
def test_unconfigured_login_is_open_on_this_machine_and_says_so(ip):
    st = _FakeSt(ip)
    assert require_login(st, env={}) is True
    assert st.said[0][0] == "caption" and "Login is not configured" in st.said[0][1]


@pytest.mark.parametrize("ip", ["203.0.113.9", "10.0.0.7", "2001:db8::1"])
def test_unconfigured_login_refuses_other_machines_and_names_the_setting(ip):
    # Streamlit listens on every interface by default: an unset password exposed personal data to the network
    st = _FakeSt(ip)
    assert require_login(st, env={}) is False
    kind, text = st.said[0]
    assert kind == "error" and HASH_ENV in text and "only on this machine" in text
