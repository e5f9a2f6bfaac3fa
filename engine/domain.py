"""Frozen records and vocabularies shared by the stages (ingest → plan → dispatch → analytics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

__all__ = [
    "EVENT_TYPES",
    "MESSAGE_CLASSES",
    "TERMINAL_STATES",
    "Outcome",
    "PushMessage",
    "Receipt",
    "SendState",
]

#: Event types the canonical ``events`` table accepts; anything else is quarantined.
EVENT_TYPES: frozenset[str] = frozenset(
    {
        "view",          # item page viewed
        "impression",    # item shown in a slot (Open Bandit); properties hold position and propensity
        "click",         # item clicked in the app or site
        "add_to_cart",
        "purchase",      # properties: quantity, unit_price, invoice
        "cancellation",  # a purchase taken back (Online Retail "C" invoices); never counted as a purchase
        "app_open",
        "push_open",     # a Pushwise push was opened (properties.send_id)
        "push_click",    # a Pushwise push's deep link was followed (properties.send_id)
        "conversion",    # a purchase attributed to a Pushwise push (properties.send_id)
    }
)

#: Message classes; each vendor maps them to its own category (service vs marketing quotas).
MESSAGE_CLASSES: frozenset[str] = frozenset({"marketing", "transactional"})


class Outcome(StrEnum):
    """Shared vocabulary every vendor's answer is mapped into (one table per vendor)."""

    DELIVERED = "delivered"               # accepted by the vendor
    INVALID_TOKEN = "invalid_token"       # deactivate the device
    REJECTED_PAYLOAD = "rejected_payload" # our bug or a too-large message: never retried
    RATE_LIMITED = "rate_limited"         # back off, honour Retry-After
    QUOTA_EXHAUSTED = "quota_exhausted"   # daily quota: stop (vendor, app, class) until the vendor's day resets
    TRANSIENT = "transient"               # 5xx, resets, timeouts: retry with backoff
    AUTH_ERROR = "auth_error"             # credentials refused after one refresh: pause the adapter, alert

    @property
    def retryable(self) -> bool:
        return self in (Outcome.RATE_LIMITED, Outcome.TRANSIENT)


class SendState(StrEnum):
    """States of a row in the ``sends`` outbox."""

    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    RETRY = "retry"
    DELIVERED = "delivered"
    INVALID_TOKEN = "invalid_token"
    FAILED = "failed"
    CANCELLED = "cancelled"   # consent withdrawn or device gone before the send went out


TERMINAL_STATES: frozenset[SendState] = frozenset(
    {SendState.DELIVERED, SendState.INVALID_TOKEN, SendState.FAILED, SendState.CANCELLED}
)


@dataclass(frozen=True)
class PushMessage:
    """One notification to one device token, vendor-neutral.

    ``send_id`` is the idempotency key: adapters derive the vendor's own key from it (APNs ``apns-id``,
    collapse ids, request ids) so that a resend after a crash is recognisably the same message.
    """

    send_id: str
    vendor: str
    token: str
    title: str
    body: str
    app_id: str = "com.pushwise.demo"
    message_class: str = "marketing"
    data: dict[str, str] = field(default_factory=dict)
    badge: int | None = None
    collapse_id: str | None = None
    ttl_seconds: int = 86_400


@dataclass(frozen=True)
class Receipt:
    """What a vendor said about one message: a value, never an exception."""

    send_id: str
    outcome: Outcome
    status_code: int | None = None
    reason: str | None = None                 # vendor's own code or reason string
    vendor_message_id: str | None = None
    retry_after: float | None = None          # seconds, parsed from Retry-After (seconds or HTTP date)
    token_invalid_since: datetime | None = None  # APNs 410 timestamp: last time the token was known invalid
    # the vendor takes this message only from then on (a closed send window): the send waits, the attempt
    # is not counted (engine.push.windows)
    not_before: datetime | None = None
