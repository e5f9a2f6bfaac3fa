"""The API service fixtures, shared with tests/api, and a store filled with every kind of row."""

import pytest

from engine.store import Store
from tests.api.conftest import keyring, service  # noqa: F401
from tests.backup.test_backup import _fill


@pytest.fixture
def filled(tmp_path):
    with Store(tmp_path / "a.duckdb") as store:
        _fill(store)
        yield store
