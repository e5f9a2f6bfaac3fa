"""Dispatch: the outbox state machine, retry policy and the dispatcher that drives the vendor channels."""

from engine.dispatch.backoff import RetryPolicy
from engine.dispatch.dispatcher import Dispatcher, TickReport
from engine.dispatch.outbox import claim_due, record_receipts, recover_in_flight

__all__ = ["Dispatcher", "RetryPolicy", "TickReport", "claim_due", "record_receipts", "recover_in_flight"]
