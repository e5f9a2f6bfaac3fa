"""The analyst notebooks run top to bottom (nbclient) on a small real-data store, so they cannot rot."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from engine.config import Settings
from engine.demo import run_demo
from tests.conftest import DATA, REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory) -> dict[str, str]:
    """``run_demo(fast=True)`` once for every notebook: the store and models they read."""
    root = tmp_path_factory.mktemp("notebook-demo")
    settings = Settings(db_path=str(root / "pushwise.duckdb"), data_dir=str(DATA), models_dir=str(root / "models"),
                        reports_dir=str(root / "reports"))
    run_demo(settings, fast=True, progress=False)
    return {"PUSHWISE_DB_PATH": settings.db_path, "PUSHWISE_MODELS_DIR": settings.models_dir,
            "PUSHWISE_NB_FAST": "1"}


def test_there_are_four_notebooks_each_importing_engine():
    assert [p.name for p in NOTEBOOKS] == ["01_exploring_behaviour.ipynb", "02_click_model.ipynb",
                                           "03_send_time.ipynb", "04_campaign_uplift.ipynb"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        code = "\n".join(c.source for c in book.cells if c.cell_type == "code")
        assert "import engine" in code or "from engine" in code, path.name
        assert "parameters" in book.cells[1].metadata.get("tags", []), path.name
        assert all(not c.get("outputs") for c in book.cells if c.cell_type == "code"), f"{path.name} has outputs"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path: Path, demo_store, monkeypatch):
    for key, value in demo_store.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    text = "\n".join(o.get("text", "") for c in book.cells if c.cell_type == "code" for o in c.outputs)
    assert os.environ["PUSHWISE_DB_PATH"] in text  # it read the store it was given, not data/
