"""A real dashboard in a browser: ``streamlit run`` on a loopback port, headless Chromium takes a screenshot.

Chromium comes from the system's packages: the session fixture installs it with apt-get when
``/usr/bin/chromium`` is missing, and fails (never skips) when that is impossible.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from engine.store import Store
from tests.analytics.world import build_world
from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000", "--virtual-time-budget=15000"]


def _apt(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The system Chromium, installed with apt-get when missing."""
    if not CHROMIUM.exists():
        if shutil.which("apt-get") is None:
            pytest.fail("/usr/bin/chromium is missing and apt-get is not available to install it")
        update = _apt("update")
        install = _apt("install", "-y", "chromium")
        if not CHROMIUM.exists():
            pytest.fail("could not install Chromium with `apt-get install -y chromium` "
                        f"(update exit {update.returncode}, install exit {install.returncode}):\n"
                        f"{install.stderr[-2000:]}")
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard(tmp_path):
    """``streamlit run dashboards/app.py`` on 127.0.0.1 over the hand-made store; yields its URL."""
    db = tmp_path / "pushwise.duckdb"
    with Store(db) as store:
        build_world(store)
    port = _free_port()
    env = {**os.environ, "PUSHWISE_DB_PATH": str(db), "PUSHWISE_PSEUDONYM_KEY": "screenshot-key"}
    log = (tmp_path / "streamlit.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboards" / "app.py"),
         "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not come up:\n{(tmp_path / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _chromium(binary: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def _rendered_dom(binary: Path, url: str, tmp_path: Path, tries: int = 5) -> str:
    # The first browser session makes Streamlit run the script cold (imports, queries), which can
    # outlast Chromium's virtual time budget; later sessions hit warm caches. Load until it renders.
    dom = ""
    for attempt in range(tries):
        dom = _chromium(binary, tmp_path / f"profile-dom-{attempt}", "--dump-dom", url).stdout
        if "Planned" in dom:
            break
    return dom


def _dark_share(png: Path) -> float:
    with Image.open(png) as image:
        assert image.size == (1400, 1000)
        grey = image.convert("L")
        return sum(grey.histogram()[:200]) / (1400 * 1000)


def _screenshot(binary: Path, url: str, png: Path, tmp_path: Path, tries: int = 5) -> float:
    # Like the DOM above: a fresh browser profile opens a new Streamlit session, whose first script
    # run can outlast the virtual time budget and leave a blank page. Shoot again until it rendered.
    dark = 0.0
    for attempt in range(tries):
        done = _chromium(binary, tmp_path / f"profile-shot-{attempt}", f"--screenshot={png}", url)
        assert png.is_file(), done.stderr[-2000:]
        dark = _dark_share(png)
        if dark > 0.03:
            break
    return dark


@pytest.mark.slow
def test_headless_chromium_screenshot_of_the_running_dashboard(chromium, dashboard, tmp_path):
    dom = _rendered_dom(chromium, dashboard, tmp_path)
    for text in ("Pushwise", "Planned", "Campaigns", "Vendors", "Send-time heatmap", "Models",
                 "Simulated data"):
        assert text in dom, f"{text!r} not in the rendered page"
    assert "Traceback" not in dom and "tok-" not in dom

    png = Path(os.environ.get("PUSHWISE_SCREENSHOT_DIR", tmp_path)) / "dashboard.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    dark = _screenshot(chromium, dashboard, png, tmp_path)
    # An unrendered page is almost all white; the funnel metrics, charts and sidebar are not.
    assert dark > 0.03, f"screenshot looks empty: {dark:.1%} non-white pixels ({png})"

    # The tabs are bound to the URL, so each page can be opened (and shot) directly.
    campaigns = png.with_name("dashboard-campaigns.png")
    assert _screenshot(chromium, f"{dashboard}/?page=Campaigns", campaigns, tmp_path / "campaigns") > 0.03
    assert campaigns.read_bytes() != png.read_bytes()
