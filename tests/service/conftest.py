"""The API service fixtures, shared with tests/api."""

from tests.api.conftest import keyring, service  # noqa: F401
