"""Vendor push channels (APNs, FCM), their credentials, and loopback sandboxes of the vendors.

Data flow for one batch: the dispatcher calls ``channel.send(messages)``; the channel builds each
request with a pure builder (`apns.build_request`, `fcm.build_request`), sends it over HTTP/2 with a
cached credential (`auth`), and classifies each answer through one table per vendor
(`apns.parse_response`, `fcm.parse_response`) into a `Receipt`.
"""

from engine.push.apns import ApnsChannel
from engine.push.auth import ApnsTokenProvider, GoogleServiceAccountTokenProvider
from engine.push.base import PushChannel, parse_retry_after
from engine.push.fcm import FcmChannel
from engine.push.registry import CHANNELS, build_channels

__all__ = [
    "CHANNELS",
    "ApnsChannel",
    "ApnsTokenProvider",
    "FcmChannel",
    "GoogleServiceAccountTokenProvider",
    "PushChannel",
    "build_channels",
    "parse_retry_after",
]
