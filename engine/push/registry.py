"""The vendor registry: which channel class serves which vendor, and building the enabled ones."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import httpx

from engine.clock import Clock
from engine.config import SECRET_REF_PREFIX, Settings, VendorsConfig
from engine.errors import ConfigError
from engine.push.base import PushChannel
from engine.push.fcm import FcmChannel

if TYPE_CHECKING:
    from engine.security.crypto import Keyring
    from engine.store import Store

__all__ = ["CHANNELS", "build_channels", "channel_class"]

#: One line per vendor; the key is the ``[vendors.<key>]`` config section and ``PushMessage.vendor``.
#: Vendors given as "module:Class" are imported only when enabled.
CHANNELS: dict[str, type[PushChannel] | str] = {
    "apns": "engine.push.lean_apns:LeanApnsChannel",   # h2 directly: exact GOAWAY handling (decision 005)
    "fcm": FcmChannel,
    "huawei": "engine.push.huawei:HuaweiChannel",
    "honor": "engine.push.honor:HonorChannel",
    "xiaomi": "engine.push.xiaomi:XiaomiChannel",
    "oppo": "engine.push.oppo:OppoChannel",
    "vivo": "engine.push.vivo:VivoChannel",
    "meizu": "engine.push.meizu:MeizuChannel",
    "webpush": "engine.push.webpush:WebPushChannel",
}


def channel_class(vendor: str) -> type[PushChannel]:
    """The channel class for ``vendor`` (importing it if registered by name)."""
    import importlib

    entry = CHANNELS[vendor]
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = getattr(importlib.import_module(module), name)
    return entry


def build_channels(
    settings: Settings, clock: Clock, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None, *,
    store: Store | None = None, keyring: Keyring | None = None,
) -> dict[str, PushChannel]:
    """Build a channel for every enabled vendor.

    Args:
        settings: the effective settings; only ``settings.vendors`` is read.
        clock: the injected clock, shared by all channels.
        transports: optional httpx transport per vendor (tests); the network otherwise.
        store: where ``secret:VENDOR/NAME`` references in vendor sections are looked up
            (`engine.security.vendor_secrets`); their plaintext lives in memory only, while the
            channels are built.
        keyring: decrypts those secrets (default: `load_keyring`).

    Returns:
        ``{vendor: channel}`` for the enabled vendors (possibly empty). Close them with ``aclose()``.

    Raises:
        ConfigError: an enabled vendor's section is incomplete, its credential file unusable, or it
            references a stored secret that is missing (or no store was given to look it up in).
    """
    refs = [f"vendors.{name}.{field}" for name in CHANNELS for field, value in _fields(settings, name)
            if isinstance(value, str) and value.startswith(SECRET_REF_PREFIX)]
    if not refs:
        return _build(settings.vendors, clock, transports or {})
    if store is None:
        raise ConfigError(f"{refs[0]} references a stored secret, but no database was given to read it from")
    from engine.security.crypto import load_keyring
    from engine.security.vendor_secrets import resolved_vendors

    with resolved_vendors(settings.vendors, store, keyring or load_keyring()) as plain:
        return _build(plain, clock, transports or {})


def _fields(settings: Settings, name: str) -> list[tuple[str, object]]:
    section = getattr(settings.vendors, name)
    return list(dataclasses.asdict(section).items()) if section.enabled else []


def _build(vendors: VendorsConfig, clock: Clock, transports: Mapping[str, httpx.AsyncBaseTransport]
           ) -> dict[str, PushChannel]:
    channels: dict[str, PushChannel] = {}
    for name in CHANNELS:
        section = getattr(vendors, name)
        if not section.enabled:
            continue
        problems = section.problems() + _plain_http(name, section)
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        channels[name] = channel_class(name)(section, clock, transport=transports.get(name))
    return channels


def _plain_http(name: str, section: object) -> list[str]:
    """Vendor calls always go over verified TLS: a configured vendor or token URL must be https."""
    return [f"vendors.{name}.{field} must be an https:// URL, not {value.split(':', 1)[0]}:"
            for field in ("base_url", "auth_url")
            if isinstance(value := getattr(section, field, ""), str) and value
            and not value.lower().startswith("https://")]
