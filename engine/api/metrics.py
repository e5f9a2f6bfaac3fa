"""Prometheus metrics of the service: API requests, and outbox figures read from the store at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from engine.store import Store

__all__ = ["ApiMetrics"]


class _OutboxCollector(Collector):
    """Sends by vendor and state, queue depth, retries, and today's quota use, from the store."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        store = self._store()
        sends = GaugeMetricFamily("pushwise_sends", "Sends in the outbox by vendor and state", labels=["vendor", "state"])
        for vendor, state, n in store.execute(
                "SELECT vendor, state, count(*) FROM sends GROUP BY ALL ORDER BY ALL").fetchall():
            sends.add_metric([vendor, state], n)
        yield sends
        yield GaugeMetricFamily("pushwise_queue_depth", "Sends pending or waiting for a retry", value=float(
            store.execute("SELECT count(*) FROM sends WHERE state IN ('pending', 'retry')").fetchall()[0][0]))
        retries = GaugeMetricFamily("pushwise_retries", "Attempts beyond the first, by vendor", labels=["vendor"])
        for vendor, n in store.execute(
                "SELECT vendor, sum(greatest(attempts - 1, 0)) FROM sends GROUP BY vendor ORDER BY vendor").fetchall():
            retries.add_metric([vendor], float(n or 0))
        yield retries
        quota = GaugeMetricFamily("pushwise_quota_accepted", "Sends the vendor accepted on its current quota day",
                                  labels=["vendor", "message_class"])
        has_quota = store.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'vendor_quota'").fetchall()[0][0]
        if has_quota:
            for vendor, cls, n in store.execute(
                    """SELECT vendor, message_class, sum(accepted) FROM vendor_quota WHERE resets_at > now()
                       GROUP BY ALL ORDER BY ALL""").fetchall():
                quota.add_metric([vendor, cls], float(n or 0))
        yield quota


class ApiMetrics:
    """One registry per app (tests build many apps in one process)."""

    def __init__(self, store: Callable[[], Store]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("pushwise_api_requests", "API requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("pushwise_api_latency_seconds", "API request latency", ["route"],
                                 registry=self.registry)
        self.denied = Counter("pushwise_api_denied", "Requests refused by authentication or rate limits",
                              ["status"], registry=self.registry)
        self.registry.register(_OutboxCollector(store))
