"""Dashboard login: scrypt hashes, and the Streamlit page gated by them (or saying login is off)."""

from __future__ import annotations

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.security.dashboard_login import HASH_ENV, hash_password, verify_password
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
    st.cache_data.clear()


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
