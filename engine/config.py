"""One Settings root: defaults, then an optional TOML file, then PUSHWISE_* environment overrides.

``validate()`` fails fast with every problem at once; ``redacted()`` is the view safe to print or log.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from engine.errors import ConfigError

__all__ = ["ApnsConfig", "FcmConfig", "HonorConfig", "HuaweiConfig", "MeizuConfig", "OppoConfig", "Settings",
           "VendorsConfig", "VivoConfig", "WebPushConfig", "XiaomiConfig", "load_settings"]

#: A value ``secret:VENDOR/NAME`` names a credential stored encrypted in the database
#: (``pushwise secrets put``), resolved when channels are built (engine/security/vendor_secrets.py).
SECRET_REF_PREFIX = "secret:"
SECRET_FIELDS = frozenset({"key_file", "service_account_file", "private_key", "password", "pseudonym_key",
                           "data_keys", "client_secret", "app_secret", "master_secret", "vapid_private_key_file"})


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
    rate_per_second: float = 0.0   # 0 = no local limit (engine/dispatch/ratelimit.py)

    def problems(self) -> list[str]:
        if not self.enabled:
            return []
        missing = [n for n in ("team_id", "key_id", "key_file", "topic") if not getattr(self, n)]
        out = [f"vendors.apns.{n} is required when APNs is enabled" for n in missing]
        if self.key_file and not self.key_file.startswith(SECRET_REF_PREFIX) and not Path(self.key_file).is_file():
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
    rate_per_second: float = 0.0   # 0 = no local limit (engine/dispatch/ratelimit.py)

    def problems(self) -> list[str]:
        if not self.enabled:
            return []
        out = []
        if not self.project_id:
            out.append("vendors.fcm.project_id is required when FCM is enabled")
        if not self.service_account_file:
            out.append("vendors.fcm.service_account_file is required when FCM is enabled")
        elif (not self.service_account_file.startswith(SECRET_REF_PREFIX)
              and not Path(self.service_account_file).is_file()):
            out.append(f"vendors.fcm.service_account_file does not exist: {self.service_account_file}")
        return out


@dataclass
class _CredentialVendor:
    """Shared shape of the vendors that authenticate with app credentials (Chinese OEM channels)."""

    enabled: bool = False
    base_url: str = ""
    auth_url: str = ""          # token endpoint, where the vendor has one
    ca_file: str = ""
    concurrency: int = 50
    rate_per_second: float = 0.0   # 0 = no local limit beyond the vendor's answers
    REQUIRED: ClassVar[tuple[str, ...]] = ()

    def problems(self) -> list[str]:
        if not self.enabled:
            return []
        name = type(self).__name__.removesuffix("Config").lower()
        return [f"vendors.{name}.{n} is required when {name} is enabled" for n in self.REQUIRED
                if not getattr(self, n)]


@dataclass
class HuaweiConfig(_CredentialVendor):
    """Huawei Push Kit: OAuth2 client credentials, then /v1/{app_id}/messages:send."""

    base_url: str = "https://push-api.cloud.huawei.com"
    auth_url: str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token"
    app_id: str = ""
    client_secret: str = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ("app_id", "client_secret")


@dataclass
class HonorConfig(_CredentialVendor):
    """Honor Push: OAuth2 client credentials, then /api/v1/{app_id}/sendMessage."""

    base_url: str = "https://push-api.cloud.honor.com"
    auth_url: str = "https://iam.developer.honor.com/auth/token"
    app_id: str = ""
    client_id: str = ""
    client_secret: str = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ("app_id", "client_id", "client_secret")


@dataclass
class XiaomiConfig(_CredentialVendor):
    """Xiaomi MiPush: static ``Authorization: key=<app_secret>``."""

    base_url: str = "https://api.xmpush.xiaomi.com"
    app_secret: str = ""
    package_name: str = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ("app_secret", "package_name")


@dataclass
class OppoConfig(_CredentialVendor):
    """OPPO Push: SHA-256 signed auth for a 24 h auth_token."""

    base_url: str = "https://api.push.oppomobile.com"
    app_key: str = ""
    master_secret: str = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ("app_key", "master_secret")


@dataclass
class VivoConfig(_CredentialVendor):
    """vivo Push: MD5 signed auth for a 1-day authToken."""

    base_url: str = "https://api-push.vivo.com.cn"
    app_id: str = ""
    app_key: str = ""
    app_secret: str = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ("app_id", "app_key", "app_secret")


@dataclass
class MeizuConfig(_CredentialVendor):
    """Meizu Flyme Push: per-request MD5 signature."""

    base_url: str = "https://server-api-push.meizu.com"
    app_id: str = ""
    app_secret: str = ""
    REQUIRED: ClassVar[tuple[str, ...]] = ("app_id", "app_secret")


#: The browsers' push services; a subscription whose endpoint is elsewhere is refused when registered.
WEBPUSH_HOSTS = "fcm.googleapis.com,updates.push.services.mozilla.com,*.notify.windows.com,web.push.apple.com"
_LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_HOST_PATTERN = re.compile(r"(\*\.)?([a-z0-9-]+\.)+[a-z0-9-]+|[0-9.]+")


@dataclass
class WebPushConfig(_CredentialVendor):
    """Web Push (RFC 8030/8291/8292): VAPID key pair; endpoints come with each subscription.

    A subscription's endpoint is any URL the browser gave, so without ``allowed_hosts`` whoever holds an
    ingest key could make the dispatcher POST anywhere (server-side request forgery).
    """

    vapid_private_key_file: str = ""   # PEM, P-256
    vapid_subject: str = ""            # mailto: or https: URL
    allowed_hosts: str = WEBPUSH_HOSTS   # comma-separated host names; "*.example.com" covers its subdomains
    REQUIRED: ClassVar[tuple[str, ...]] = ("vapid_private_key_file", "vapid_subject")

    def endpoint_hosts(self) -> tuple[str, ...]:
        """``allowed_hosts`` as a tuple, plus the host of ``base_url`` when it is a loopback sandbox."""
        hosts = tuple(h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip())
        sandbox = urlsplit(self.base_url).hostname if self.base_url else None
        return hosts + ((sandbox,) if sandbox in _LOOPBACK and sandbox not in hosts else ())

    def problems(self) -> list[str]:
        bad = [h for h in (h.strip().lower() for h in self.allowed_hosts.split(",")) if h
               and (not _HOST_PATTERN.fullmatch(h) or (h.startswith("*.") and h.count(".") < 2))]
        out = [f"vendors.webpush.allowed_hosts: {h!r} is not a host name or *.domain (no scheme, port or path)"
               for h in bad]
        return out + super().problems()


@dataclass
class VendorsConfig:
    apns: ApnsConfig = field(default_factory=ApnsConfig)
    fcm: FcmConfig = field(default_factory=FcmConfig)
    huawei: HuaweiConfig = field(default_factory=HuaweiConfig)
    honor: HonorConfig = field(default_factory=HonorConfig)
    xiaomi: XiaomiConfig = field(default_factory=XiaomiConfig)
    oppo: OppoConfig = field(default_factory=OppoConfig)
    vivo: VivoConfig = field(default_factory=VivoConfig)
    meizu: MeizuConfig = field(default_factory=MeizuConfig)
    webpush: WebPushConfig = field(default_factory=WebPushConfig)

    def problems(self) -> list[str]:
        return [p for name in self.__dataclass_fields__ for p in getattr(self, name).problems()]


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
    retrain_cron: str = "0 3 * * 1"   # crontab (UTC) of `pushwise retrain`: Mondays 03:00
    promotion_margin: float = 0.005   # a challenger replaces the champion only if its AUC is higher by this
    pseudonym_key: str = ""    # HMAC key for pseudonymous user ids in the dashboard (else a per-install key file)
    data_keys: str = ""        # AES-GCM data keys "id:hex,id:hex", newest last (else a key file); engine.security.crypto
    data_key_file: str = ""    # where the data keys live when data_keys is empty (default ~/.config/pushwise/data.keys)
    service_ca: str = ""       # CA bundle (PEM) the CLI trusts for a `pushwise serve` on HTTPS (PUSHWISE_SERVICE_CA)
    vendors: VendorsConfig = field(default_factory=VendorsConfig)
    # vendor → vendor that reaches the same user when the first cannot (e.g. huawei = "fcm"), see
    # docs/decisions/006-routing-and-quotas.md
    fallback: dict[str, str] = field(default_factory=dict)

    def validate(self) -> Settings:
        problems = self.vendors.problems()
        known = set(VendorsConfig.__dataclass_fields__)
        problems += [f"fallback.{k} = {v!r}: unknown vendor" for k, v in self.fallback.items()
                     if k not in known or v not in known]
        if self.dispatch_batch_size < 1:
            problems.append("dispatch_batch_size must be at least 1")
        if self.max_attempts < 1:
            problems.append("max_attempts must be at least 1")
        if len(self.retrain_cron.split()) != 5:
            problems.append(f"retrain_cron must have 5 fields (minute hour day month weekday), got {self.retrain_cron!r}")
        else:
            from engine.schedule.cron import crontab_problem  # APScheduler's parser, only when validating

            cron_problem = crontab_problem(self.retrain_cron)
            if cron_problem:
                problems.append(f"retrain_cron {cron_problem}")
        if not 0.0 <= self.promotion_margin < 1.0:
            problems.append(f"promotion_margin must be in [0, 1), got {self.promotion_margin!r}")
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
        elif isinstance(v, str):
            out[k] = redact_url(v)
        else:
            out[k] = v
    return out


def redact_url(value: str) -> str:
    """``value`` with the password of a ``scheme://user:password@host`` URL replaced by ``***``."""
    parts = urlsplit(value) if "://" in value else None
    if parts is None or parts.password is None:
        return value
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


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
        kinds = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
        raise ConfigError(f"{name} must be {kinds.get(kind, kind.__name__)}, got {value!r}") from None


#: PUSHWISE_* environment variables that are read by other parts of Pushwise, not settings of this root:
#: they are skipped here instead of failing as unknown settings.
ENV_NOT_SETTINGS = frozenset({
    "PUSHWISE_CONFIG",                     # which TOML file to read
    "PUSHWISE_DASHBOARD_PASSWORD_HASH",    # dashboard login (engine.security.dashboard_login)
    "PUSHWISE_DASHBOARD_MAX_FAILURES",     # dashboard login throttle (engine.security.dashboard_login)
    "PUSHWISE_DASHBOARD_SESSION_MINUTES",  # dashboard login lifetime (engine.security.dashboard_login)
    "PUSHWISE_SCREENSHOT_DIR",             # where the screenshot test keeps its PNGs
})


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
        if not key.startswith("PUSHWISE_") or key in ENV_NOT_SETTINGS:
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
