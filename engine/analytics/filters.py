"""The filters every analytics query takes, and the one boundary where DuckDB errors become StoreError."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import duckdb
import pandas as pd

from engine.errors import InputError, StoreError

__all__ = ["NO_FILTERS", "Filters", "fetch_df"]


@dataclass(frozen=True)
class Filters:
    """Which decisions a view covers; ``None`` means no restriction.

    Attributes:
        campaign_id: one campaign (``decisions.campaign_id``).
        vendor: one push vendor, e.g. ``"apns"`` (``decisions.vendor``; users without a device
            have none and drop out when a vendor is chosen).
        start, end: inclusive range of UTC days of ``decisions.send_at``; decisions without a
            send time (some skips) drop out when either bound is set.
    """

    campaign_id: str | None = None
    vendor: str | None = None
    start: date | None = None
    end: date | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise InputError(f"start date {self.start.isoformat()} is after end date {self.end.isoformat()}")

    def where(self, alias: str = "d") -> tuple[str, dict[str, object]]:
        """SQL condition on the decisions table ``alias`` and its named parameters.

        Returns:
            (condition, params): ``"true"`` and ``{}`` when nothing is filtered. Parameter names are
            prefixed ``f_`` so they cannot clash with a query's own.
        """
        clauses: list[str] = []
        params: dict[str, object] = {}
        if self.campaign_id is not None:
            clauses.append(f"{alias}.campaign_id = $f_campaign")
            params["f_campaign"] = self.campaign_id
        if self.vendor is not None:
            clauses.append(f"{alias}.vendor = $f_vendor")
            params["f_vendor"] = self.vendor
        if self.start is not None:
            clauses.append(f"{alias}.send_at >= $f_start")
            params["f_start"] = datetime.combine(self.start, time(), UTC)
        if self.end is not None:
            clauses.append(f"{alias}.send_at < $f_end")
            params["f_end"] = datetime.combine(self.end + timedelta(days=1), time(), UTC)
        return (" AND ".join(clauses) or "true"), params


#: The default of every query: all campaigns, vendors and dates.
NO_FILTERS = Filters()


def fetch_df(con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object] | None = None) -> pd.DataFrame:
    """Run a read query; every ``duckdb.Error`` (missing table, bad file, lock) becomes :class:`StoreError`."""
    try:
        return con.execute(sql, params or {}).df()
    except duckdb.Error as exc:
        raise StoreError(f"analytics query failed: {exc}") from exc
