"""Dispatch: the outbox state machine, retry policy, rate limits, daily quotas and the dispatcher."""

from engine.dispatch.backoff import RetryPolicy
from engine.dispatch.dispatcher import Dispatcher, TickReport
from engine.dispatch.outbox import claim_due, record_receipts, recover_in_flight
from engine.dispatch.quota import next_reset, plannable, quota_day, quota_state
from engine.dispatch.ratelimit import TokenBucket, VendorLimits

__all__ = ["Dispatcher", "RetryPolicy", "TickReport", "TokenBucket", "VendorLimits", "claim_due", "next_reset",
           "plannable", "quota_day", "quota_state", "record_receipts", "recover_in_flight"]
