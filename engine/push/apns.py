"""Apple APNs channel: pure request builder, one reason→Outcome table, and an HTTP/2 sender.

Vendor docs:
    https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns
    https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns
    https://developer.apple.com/documentation/usernotifications/generating-a-remote-notification
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import httpx

from engine.clock import Clock
from engine.config import ApnsConfig
from engine.domain import Outcome, PushMessage, Receipt
from engine.errors import ConfigError
from engine.push.auth import ApnsTokenProvider
from engine.push.base import HttpChannel, json_object, parse_retry_after, tls_context

__all__ = ["REASONS", "REFRESH_REASONS", "ApnsChannel", "apns_id", "build_request", "parse_response"]

#: Every reason APNs documents (VENDORS.md §1), mapped once. Topic problems come from our
#: configuration, so they pause the adapter like refused credentials (VENDORS.md §14).
REASONS: dict[str, Outcome] = {
    # 400
    "BadCollapseId": Outcome.REJECTED_PAYLOAD,
    "BadDeviceToken": Outcome.INVALID_TOKEN,
    "BadExpirationDate": Outcome.REJECTED_PAYLOAD,
    "BadMessageId": Outcome.REJECTED_PAYLOAD,
    "BadPriority": Outcome.REJECTED_PAYLOAD,
    "BadTopic": Outcome.AUTH_ERROR,
    "DeviceTokenNotForTopic": Outcome.INVALID_TOKEN,
    "DuplicateHeaders": Outcome.REJECTED_PAYLOAD,
    "IdleTimeout": Outcome.TRANSIENT,
    "InvalidPushType": Outcome.REJECTED_PAYLOAD,
    "MissingDeviceToken": Outcome.REJECTED_PAYLOAD,
    "MissingTopic": Outcome.AUTH_ERROR,
    "PayloadEmpty": Outcome.REJECTED_PAYLOAD,
    "TopicDisallowed": Outcome.AUTH_ERROR,
    # 403
    "BadCertificate": Outcome.AUTH_ERROR,
    "BadCertificateEnvironment": Outcome.AUTH_ERROR,
    "ExpiredProviderToken": Outcome.AUTH_ERROR,   # but refreshed and retried once first, see REFRESH_REASONS
    "Forbidden": Outcome.AUTH_ERROR,
    "InvalidProviderToken": Outcome.AUTH_ERROR,
    "MissingProviderToken": Outcome.AUTH_ERROR,
    "UnrelatedKeyIdInToken": Outcome.AUTH_ERROR,
    "BadEnvironmentKeyInToken": Outcome.AUTH_ERROR,
    "BadEnvironmentKeyIdInToken": Outcome.AUTH_ERROR,  # spelling seen in one client
    # 404, 405
    "BadPath": Outcome.REJECTED_PAYLOAD,
    "MethodNotAllowed": Outcome.REJECTED_PAYLOAD,
    # 410
    "Unregistered": Outcome.INVALID_TOKEN,
    "ExpiredToken": Outcome.INVALID_TOKEN,
    # 413
    "PayloadTooLarge": Outcome.REJECTED_PAYLOAD,
    # 429
    "TooManyProviderTokenUpdates": Outcome.RATE_LIMITED,
    "TooManyRequests": Outcome.RATE_LIMITED,
    # 5xx
    "InternalServerError": Outcome.TRANSIENT,
    "ServiceUnavailable": Outcome.TRANSIENT,
    "Shutdown": Outcome.TRANSIENT,
}

#: Reasons after which the provider token is re-minted and the message retried exactly once.
REFRESH_REASONS: frozenset[str] = frozenset({"ExpiredProviderToken"})

# A send_id that is not a UUID still needs a stable apns-id: uuid5 in a namespace of our own.
_SEND_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:pushwise:send_id")


def apns_id(send_id: str) -> str:
    """The canonical lowercase UUID APNs expects, derived deterministically from ``send_id``."""
    try:
        return str(uuid.UUID(send_id))
    except ValueError:
        return str(uuid.uuid5(_SEND_ID_NAMESPACE, send_id))


def build_request(msg: PushMessage, topic: str, now: datetime | None = None) -> tuple[str, dict[str, str], bytes]:
    """Build the APNs request for one message (pure apart from the default ``now``).

    Args:
        msg: the message; ``badge=0`` is kept (it clears the badge), ``None`` leaves it out.
        topic: the app's bundle id (``apns-topic``).
        now: the send time, for ``apns-expiration``; pass it for a deterministic result.

    Returns:
        ``(path, headers, body)``: ``/3/device/<token>``, the ``apns-*`` headers (without
        ``authorization``) and the compact UTF-8 JSON payload.
    """
    now = now or datetime.now(UTC)
    headers = {
        "apns-topic": topic,
        "apns-push-type": "alert",
        "apns-id": apns_id(msg.send_id),
        "apns-priority": "10" if msg.message_class == "transactional" else "5",
        "apns-expiration": str(int(now.timestamp()) + msg.ttl_seconds) if msg.ttl_seconds > 0 else "0",
    }
    # A repeat of this send (resent after a crash or a lost connection) replaces the first copy
    # on the device: APNs itself does not deduplicate on apns-id.
    headers["apns-collapse-id"] = msg.collapse_id or headers["apns-id"]
    aps: dict[str, object] = {"alert": {"title": msg.title, "body": msg.body}}
    if msg.badge is not None:
        aps["badge"] = msg.badge
    aps["sound"] = "default"
    payload = {**msg.data, "aps": aps}
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    return f"/3/device/{msg.token}", headers, body


def parse_response(
    status: int, headers: Mapping[str, str], body: bytes, send_id: str, now: datetime | None = None
) -> Receipt:
    """Classify one APNs answer through `REASONS` (then the status class for unknown reasons).

    The answer is correlated by the request it belongs to (``send_id``), so a response without an
    ``apns-id`` header is fine.

    Args:
        status: HTTP status.
        headers: response headers (any case).
        body: response body: empty on success, ``{"reason": ..., "timestamp": ms}`` otherwise.
        send_id: the message this answer is for.
        now: current time, to turn a ``Retry-After`` HTTP-date into seconds.

    Returns:
        The Receipt; ``token_invalid_since`` is set from a 410's millisecond ``timestamp``.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    if status == 200:
        vendor_id = lower.get("apns-unique-id") or lower.get("apns-id")
        return Receipt(send_id=send_id, outcome=Outcome.DELIVERED, status_code=200, vendor_message_id=vendor_id)
    data = json_object(body)
    reason = data.get("reason") if isinstance(data.get("reason"), str) else None
    outcome = REASONS.get(reason or "") or _by_status(status)
    invalid_since = None
    stamp = data.get("timestamp")
    if status == 410 and isinstance(stamp, int | float) and not isinstance(stamp, bool):
        invalid_since = datetime.fromtimestamp(stamp / 1000, UTC)
    return Receipt(
        send_id=send_id,
        outcome=outcome,
        status_code=status,
        reason=reason or f"http_{status}",
        vendor_message_id=lower.get("apns-id"),
        retry_after=parse_retry_after(lower.get("retry-after"), now or datetime.now(UTC)),
        token_invalid_since=invalid_since,
    )


def _by_status(status: int) -> Outcome:
    """Fallback for reasons APNs may add later: classify by status class."""
    if status == 410:
        return Outcome.INVALID_TOKEN
    if status == 429:
        return Outcome.RATE_LIMITED
    if status in (401, 403):
        return Outcome.AUTH_ERROR
    if 400 <= status < 500:
        return Outcome.REJECTED_PAYLOAD
    return Outcome.TRANSIENT


class ApnsChannel(HttpChannel):
    """Sends to APNs over one HTTP/2 client with a cached provider JWT.

    Args:
        config: the ``[vendors.apns]`` section (base_url, team/key ids, key file, topic, ca_file).
        clock: the injected clock (JWT ``iat``, ``apns-expiration``, Retry-After dates).
        transport: an httpx transport to use instead of the network (tests).
        timeout: seconds for connect/read/write/pool.

    Raises:
        ConfigError: the key file cannot be read.
        AuthError: the key is not a P-256 private key.
    """

    vendor = "apns"

    def __init__(
        self, config: ApnsConfig, clock: Clock, transport: httpx.AsyncBaseTransport | None = None,
        *, timeout: float = 10.0,
    ) -> None:
        try:
            key_pem = Path(config.key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"vendors.apns.key_file cannot be read: {exc.strerror}") from None
        self.tokens = ApnsTokenProvider(config.team_id, config.key_id, key_pem, clock)
        self.topic = config.topic
        client = httpx.AsyncClient(
            base_url=config.base_url, http2=True, verify=tls_context(config.ca_file),
            transport=transport, timeout=timeout,
        )
        super().__init__(client, clock, config.concurrency)

    async def _credential(self) -> str:
        return self.tokens.token()

    def _authorization(self, credential: str) -> str:
        return f"bearer {credential}"

    def _invalidate(self, credential: str) -> None:
        self.tokens.invalidate(expired=True, token=credential)

    def _request(self, msg: PushMessage, now: datetime) -> tuple[str, dict[str, str], bytes]:
        return build_request(msg, self.topic, now)

    def _parse(self, status: int, headers: Mapping[str, str], body: bytes, send_id: str, now: datetime) -> Receipt:
        return parse_response(status, headers, body, send_id, now)

    def _needs_refresh(self, receipt: Receipt) -> bool:
        return receipt.reason in REFRESH_REASONS
