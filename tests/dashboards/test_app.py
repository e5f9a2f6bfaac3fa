"""The Streamlit dashboard, run headless with AppTest against temporary DuckDB files."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from engine.analytics import pseudonymise
from engine.store import Store, snapshot_path
from tests.analytics.world import build_world
from tests.conftest import REPO

APP = str(REPO / "dashboards" / "app.py")
KEY = "test-pseudonym-key"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.setenv("PUSHWISE_PSEUDONYM_KEY", KEY)
    st.cache_data.clear()
    yield
    st.cache_data.clear()


@pytest.fixture
def db_file(tmp_path, monkeypatch):
    path = tmp_path / "pushwise.duckdb"
    with Store(path) as store:
        build_world(store)
    monkeypatch.setenv("PUSHWISE_DB_PATH", str(path))
    return path


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_renders_funnel_numbers_from_the_live_file(db_file):
    at = run_app()
    assert not at.error
    m = metrics(at)
    assert [m[s] for s in ("Planned", "Sent", "Delivered", "Opened", "Clicked", "Converted")] == [
        "8", "7", "5", "3", "2", "2"]
    table = at.dataframe[0].value
    assert table["Stage"].tolist() == ["Planned", "Sent", "Delivered", "Opened", "Clicked", "Converted"]
    assert table["Sends"].tolist() == [8, 7, 5, 3, 2, 2]
    assert table["of which simulated"].tolist() == [0, 0, 0, 2, 2, 1]
    assert table["Previous stage"].tolist()[:2] == ["—", "Planned"]   # not "None"
    assert any("live database" in c.value for c in at.caption)
    banner = at.warning[0].value
    assert "Simulated data" in banner
    assert "15 of 15 devices" in banner
    # The world has 2 conversion events: t1's is grounded on a real purchase, t2's is incremental.
    # Only t2's counts as simulated, in the banner and in the funnel's "of which simulated" (1) alike.
    assert "1 of 2 conversion events attribute a real purchase" in banner
    assert "1 conversion is simulated incremental" in banner
    assert "2 of 2 conversion events" not in banner and "1 conversions" not in banner


def test_filters_change_the_numbers(db_file):
    at = run_app()
    at.sidebar.selectbox[0].set_value("Campaign c1 (c1)").run()
    assert metrics(at)["Planned"] == "7"
    assert metrics(at)["Treatment rate"] == "33.3%"
    at.sidebar.selectbox[1].set_value("fcm").run()
    assert not at.exception
    assert metrics(at)["Planned"] == "3"


def test_every_tab_renders_without_leaking_ids_or_tokens(db_file):
    at = run_app()
    at.radio[0].set_value("local send hour").run()
    at.radio[1].set_value("any_purchase").run()
    assert not at.exception
    assert metrics(at)["Holdout rate"] == "40.0%"
    frames = [d.value for d in at.dataframe]
    assert len(frames) >= 7
    for frame in frames:
        text = frame.astype(str).to_string()
        assert "tok-" not in text
    log = next(f for f in frames if "User (pseudonym)" in f.columns)
    users = set(log["User (pseudonym)"])
    assert users >= {pseudonymise("t1", KEY.encode()), pseudonymise("h1", KEY.encode())}
    assert not users & {"t1", "h1", "x1"}


def test_missing_database_shows_the_friendly_message(tmp_path, monkeypatch):
    monkeypatch.setenv("PUSHWISE_DB_PATH", str(tmp_path / "nothing-here.duckdb"))
    at = run_app()
    assert "run `pushwise demo` first" in at.info[0].value.lower()
    assert not at.error


def test_file_without_pushwise_tables_shows_an_error_not_a_traceback(tmp_path, monkeypatch):
    path = tmp_path / "other.duckdb"
    duckdb.connect(str(path)).close()
    monkeypatch.setenv("PUSHWISE_DB_PATH", str(path))
    at = run_app()
    assert "run `pushwise demo` first" in at.error[0].value


def test_empty_store_says_no_campaign_yet(tmp_path, monkeypatch):
    path = tmp_path / "empty.duckdb"
    Store(path).close()
    monkeypatch.setenv("PUSHWISE_DB_PATH", str(path))
    at = run_app()
    assert "No campaign has been planned" in at.info[0].value
    assert not at.warning  # nothing simulated, so no simulation banner


HOLD_WRITE_LOCK = textwrap.dedent("""
    import sys
    from engine.store import Store
    store = Store(sys.argv[1])
    store.publish_snapshot()
    print("ready", flush=True)
    sys.stdin.readline()
    store.close()
""")


def test_renders_from_the_snapshot_while_a_writer_holds_the_lock(db_file):
    writer = subprocess.Popen([sys.executable, "-c", HOLD_WRITE_LOCK, str(db_file)], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        with pytest.raises(duckdb.IOException):
            duckdb.connect(str(db_file), read_only=True)  # the lock is really held
        assert snapshot_path(db_file).exists()
        at = run_app()
        assert any("snapshot" in c.value and "write lock" in c.value for c in at.caption)
        assert metrics(at)["Planned"] == "8"
    finally:
        writer.communicate("\n", timeout=30)
    assert writer.returncode == 0


def test_visitors_cannot_point_the_dashboard_at_another_file(db_file):
    at = run_app()
    assert not at.exception
    assert [t.label for t in at.text_input] == []          # no path box: the operator's env var decides
    assert any(str(db_file) in c.value for c in at.sidebar.caption)
