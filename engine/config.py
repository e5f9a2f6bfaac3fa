"""One Settings root: defaults, then an optional TOML file, then PUSHWISE_* environment overrides.

``validate()`` fails fast with every problem at once; ``redacted()`` is the view safe to print or log.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

__all__ = ["ApnsConfig", "FcmConfig", "Settings", "load_settings"]

SECRET_FIELDS = frozenset({"key_file", "service_account_file", "private_key", "password", "pseudonym_key"})


@dataclass
class ApnsConfig:
    """Apple APNs, token-based (ES256 provider JWT)."""

    enabled: bool = False
    base_url: str = "https://api.push.apple.com"
    team_id: str = ""
    key_id: str = ""
    key_file: str = ""          # path to the AuthKey_<key_id>.p8 file
    topic: str = ""             # the app's bundle id
    ca_file: str = ""           # extra CA to trust (the sandbox's); the system store otherwise
    concurrency: int = 100

    def problems(self) -> list[str]:
        if not self.enabled:
            return []
        missing = [n for n in ("team_id", "key_id", "key_file", "topic") if not getattr(self, n)]
        out = [f"vendors.apns.{n} is required when APNs is enabled" for n in missing]
        if self.key_file and not Path(self.key_file).is_file():
            out.append(f"vendors.apns.key_file does not exist: {self.key_file}")
        return out


@dataclass
class FcmConfig:
    """Google FCM HTTP v1 with a service-account file (OAuth2, RS256 JWT bearer grant)."""

    enabled: bool = False
    base_url: str = "https://fcm.googleapis.com"
    project_id: str = ""
    service_account_file: str = ""
    ca_file: str = ""
    concurrency: int = 100

    def problems(self) -> list[str]:
        if not self.enabled:
            return []
        out = []
        if not self.project_id:
            out.append("vendors.fcm.project_id is required when FCM is enabled")
        if not self.service_account_file:
            out.append("vendors.fcm.service_account_file is required when FCM is enabled")
        elif not Path(self.service_account_file).is_file():
            out.append(f"vendors.fcm.service_account_file does not exist: {self.service_account_file}")
        return out


@dataclass
class VendorsConfig:
    apns: ApnsConfig = field(default_factory=ApnsConfig)
    fcm: FcmConfig = field(default_factory=FcmConfig)


@dataclass
class Settings:
    """Everything configurable, with the defaults a fresh checkout runs with."""

    db_path: str = "data/pushwise.duckdb"
    data_dir: str = "data"
    models_dir: str = "models"
    reports_dir: str = "reports"
    seed: int = 7
    dispatch_batch_size: int = 500
    dispatch_interval_seconds: float = 1.0
    max_attempts: int = 6
    max_retry_delay_seconds: float = 3600.0
    pseudonym_key: str = ""    # HMAC key for pseudonymous user ids in the dashboard (else a per-install key file)
    vendors: VendorsConfig = field(default_factory=VendorsConfig)

    def validate(self) -> Settings:
        problems = self.vendors.apns.problems() + self.vendors.fcm.problems()
        if self.dispatch_batch_size < 1:
            problems.append("dispatch_batch_size must be at least 1")
        if self.max_attempts < 1:
            problems.append("max_attempts must be at least 1")
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        return self

    def redacted(self) -> dict[str, Any]:
        """A plain dict of the settings with every secret replaced by ``"***"``."""
        return _redact(dataclasses.asdict(self))


def _redact(d: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out[k] = _redact(v)
        elif k in SECRET_FIELDS and v:
            out[k] = "***"
        else:
            out[k] = v
    return out


def _apply(obj: Any, values: dict[str, Any], where: str) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown setting {where}{key}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} must be a table")
            _apply(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _coerce(value, type(current), f"{where}{key}"))


def _coerce(value: Any, kind: type, name: str) -> Any:
    try:
        if kind is bool and isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a {kind.__name__}, got {value!r}") from None


def load_settings(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build the effective settings.

    Args:
        path: a TOML file; defaults to ``$PUSHWISE_CONFIG`` or ``pushwise.toml`` when it exists.
        env: environment to read overrides from (``PUSHWISE_DB_PATH``,
            ``PUSHWISE_VENDORS__APNS__TEAM_ID``: double underscore separates sections).
    """
    env = dict(os.environ) if env is None else env
    settings = Settings()
    path = path or env.get("PUSHWISE_CONFIG") or ("pushwise.toml" if Path("pushwise.toml").exists() else None)
    if path:
        try:
            with open(path, "rb") as fh:
                _apply(settings, tomllib.load(fh), "")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for key, value in env.items():
        if not key.startswith("PUSHWISE_") or key == "PUSHWISE_CONFIG":
            continue
        parts = key[len("PUSHWISE_"):].lower().split("__")
        nested: dict[str, Any] = {}
        cursor = nested
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        try:
            _apply(settings, nested, "")
        except ConfigError as exc:
            raise ConfigError(f"environment variable {key}: {exc}") from None
    return settings
