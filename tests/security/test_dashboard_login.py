"""Dashboard login: scrypt hashes, the Streamlit page gated by them (or saying login is off), lockout, expiry."""

from __future__ import annotations

import time

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.security.dashboard_login import (
    HASH_ENV,
    MAX_FAILURES_ENV,
    SESSION_MINUTES_ENV,
    LoginThrottle,
    hash_password,
    verify_password,
)
from tests.conftest import REPO

APP = str(REPO / "dashboards" / "app.py")
STORED = hash_password("correct horse battery", salt=b"0123456789abcdef")


@pytest.mark.parametrize(("password", "stored", "ok"), [
    ("correct horse battery", STORED, True),
    ("correct horse batter", STORED, False),
    ("correct horse battery", STORED.replace("scrypt", "md5"), False),
    ("correct horse battery", "garbage", False),
])
def test_verify_password(password, stored, ok):
    assert verify_password(password, stored) is ok


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("PUSHWISE_PSEUDONYM_KEY", "k")
    monkeypatch.setenv("PUSHWISE_DB_PATH", str(tmp_path / "none.duckdb"))
    monkeypatch.delenv(MAX_FAILURES_ENV, raising=False)
    monkeypatch.delenv(SESSION_MINUTES_ENV, raising=False)
    st.cache_data.clear()
    st.cache_resource.clear()     # the login throttle is one per dashboard process
    yield
    st.cache_resource.clear()


def test_without_a_hash_the_page_says_login_is_off(monkeypatch):
    monkeypatch.delenv(HASH_ENV, raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert any("Login is not configured" in c.value for c in at.sidebar.caption)


def test_with_a_hash_nothing_shows_until_the_right_password(monkeypatch):
    monkeypatch.setenv(HASH_ENV, STORED)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert "log in to continue" in at.info[0].value and not at.metric
    at.text_input[0].input("wrong password!")
    at.button[0].click().run()
    assert at.error[0].value == "Wrong password."
    at.text_input[0].input("correct horse battery")
    at.button[0].click().run()
    assert not at.exception
    assert "No Pushwise database" in at.info[0].value     # past the gate, on to the (missing) data


def _login(at: AppTest, password: str) -> AppTest:
    at.text_input[0].input(password)
    return at.button[0].click().run()


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_throttle_locks_a_client_after_the_limit_and_doubles_the_lockout():
    clock = _Clock()
    throttle = LoginThrottle(max_failures=3, base_seconds=30, max_seconds=100, clock=clock)
    for _ in range(3):
        assert throttle.locked_for("10.0.0.1") == 0.0
        throttle.failed("10.0.0.1")
    assert throttle.locked_for("10.0.0.1") == 30.0 and throttle.locked_for("10.0.0.2") == 0.0
    clock.t += 30
    throttle.failed("10.0.0.1")
    assert throttle.locked_for("10.0.0.1") == 60.0          # doubled
    clock.t += 60
    throttle.failed("10.0.0.1")
    assert throttle.locked_for("10.0.0.1") == 100.0         # capped
    clock.t += 100
    throttle.succeeded("10.0.0.1")
    assert throttle.locked_for("10.0.0.1") == 0.0


def test_throttle_bounds_guessing_from_many_clients_together():
    clock = _Clock()
    throttle = LoginThrottle(max_failures=2, base_seconds=30, clock=clock)
    for n in range(8):                                        # 8 = 4 × 2: the shared allowance
        assert throttle.locked_for(f"10.0.0.{n}") == 0.0
        throttle.failed(f"10.0.0.{n}")
    assert throttle.locked_for("192.0.2.99") == 30.0          # a fresh address is locked out too


def test_after_too_many_failures_even_the_right_password_waits_in_every_session(monkeypatch):
    monkeypatch.setenv(HASH_ENV, STORED)
    monkeypatch.setenv(MAX_FAILURES_ENV, "2")
    at = AppTest.from_file(APP, default_timeout=60).run()
    for _ in range(2):
        assert _login(at, "wrong password!").error[0].value == "Wrong password."
    at = _login(at, "correct horse battery")
    assert at.error[0].value.startswith("Too many failed logins; try again in ")
    assert "log in to continue" in at.info[0].value
    fresh = _login(AppTest.from_file(APP, default_timeout=60).run(), "correct horse battery")
    assert fresh.error[0].value.startswith("Too many failed logins")   # a new session is no way around it


def test_a_login_expires_after_the_configured_minutes(monkeypatch):
    monkeypatch.setenv(HASH_ENV, STORED)
    monkeypatch.setenv(SESSION_MINUTES_ENV, "30")
    at = _login(AppTest.from_file(APP, default_timeout=60).run(), "correct horse battery")
    assert "No Pushwise database" in at.info[0].value
    at.session_state["pushwise_logged_in_at"] = time.time() - 29 * 60
    assert "No Pushwise database" in at.run().info[0].value           # still within 30 minutes
    at.session_state["pushwise_logged_in_at"] = time.time() - 31 * 60
    at.run()
    assert at.warning[0].value == "Your session expired after 30 minutes; log in again."
    assert "log in to continue" in at.info[0].value and not at.metric
    assert "No Pushwise database" in _login(at, "correct horse battery").info[0].value
