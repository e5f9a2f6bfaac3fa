"""The exception tree of Pushwise; foreign errors are mapped into it where they enter.

    PushwiseError
    ├── ConfigError          bad or missing configuration (fail fast, before work starts)
    ├── InputError           a file, campaign or argument the user gave is unusable
    │   └── CampaignError    a campaign file breaks its contract
    ├── StoreError           the DuckDB store failed (wraps duckdb.Error)
    │   └── StoreBusyError   another process holds the write lock on the database file
    ├── ModelError           a model is missing, stale or failed to train (wraps LightGBM errors)
    └── PushError            a vendor channel failed after bounded retries (transport, misconfiguration)
        └── AuthError        vendor credentials were refused or cannot be minted

A vendor *rejection* (invalid token, payload rejected, rate limited) is a value, an ``Outcome``,
never an exception.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "CampaignError",
    "ConfigError",
    "InputError",
    "ModelError",
    "PushError",
    "PushwiseError",
    "StoreBusyError",
    "StoreError",
]


class PushwiseError(Exception):
    """Base of every error Pushwise raises on purpose."""


class ConfigError(PushwiseError):
    """The configuration is invalid or incomplete."""


class InputError(PushwiseError):
    """An input file or argument cannot be used; the message says what is wrong."""


class CampaignError(InputError):
    """A campaign file breaks its contract."""


class StoreError(PushwiseError):
    """The DuckDB store failed."""


class StoreBusyError(StoreError):
    """Another process holds the write lock on the database file."""


class ModelError(PushwiseError):
    """A model could not be trained, loaded or applied."""


class PushError(PushwiseError):
    """A vendor channel failed after bounded retries, or is misconfigured."""


class AuthError(PushError):
    """Vendor credentials were refused or could not be minted."""
