"""The vendor registry: which channel class serves which vendor, and building the enabled ones."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from engine.clock import Clock
from engine.config import Settings
from engine.errors import ConfigError
from engine.push.base import PushChannel
from engine.push.fcm import FcmChannel

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
    settings: Settings, clock: Clock, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None
) -> dict[str, PushChannel]:
    """Build a channel for every enabled vendor.

    Args:
        settings: the effective settings; only ``settings.vendors`` is read.
        clock: the injected clock, shared by all channels.
        transports: optional httpx transport per vendor (tests); the network otherwise.

    Returns:
        ``{vendor: channel}`` for the enabled vendors (possibly empty). Close them with ``aclose()``.

    Raises:
        ConfigError: an enabled vendor's section is incomplete or its credential file unusable.
    """
    transports = transports or {}
    channels: dict[str, PushChannel] = {}
    for name in CHANNELS:
        section = getattr(settings.vendors, name)
        if not section.enabled:
            continue
        problems = section.problems()
        if problems:
            raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
        channels[name] = channel_class(name)(section, clock, transport=transports.get(name))
    return channels
