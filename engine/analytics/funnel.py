"""The send funnel: planned → sent → delivered → opened → clicked → converted, per send and aggregated.

Stage definitions (one row per decision with ``action = 'send'``):

* **planned**: the decision itself.
* **sent**: its ``sends`` row has ``attempts > 0``.
* **delivered**: ``sends.state = 'delivered'``.
* **opened** / **clicked**: delivered, and a ``push_open`` / ``push_click`` event carries its
  ``send_id`` in ``properties``.
* **converted**: delivered, and either the user really bought the decision's item (a non-simulated
  ``purchase``) within 14 days after ``sent_at`` (``send_at`` when never sent), or a ``conversion``
  event carries its ``send_id``.

A count is *simulated* when the only evidence for it is simulated (``events.simulated``, or a
conversion marked ``grounded: false``); such counts are reported separately so they can be flagged.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

from engine.analytics._sql import ATTRIBUTED, CLICKS, OPENS, purchase_window
from engine.analytics.filters import NO_FILTERS, Filters, fetch_df
from engine.errors import InputError

__all__ = ["FUNNEL_GROUPS", "PREVIOUS_STAGE", "STAGES", "funnel", "send_outcomes"]

STAGES: tuple[str, ...] = ("planned", "sent", "delivered", "opened", "clicked", "converted")

#: The stage each rate is taken against. Conversions are counted over delivered sends whether or not
#: the push was clicked (a push can work without a click), so their base is ``delivered``.
PREVIOUS_STAGE: dict[str, str | None] = {
    "planned": None,
    "sent": "planned",
    "delivered": "sent",
    "opened": "delivered",
    "clicked": "opened",
    "converted": "delivered",
}

#: Columns :func:`funnel` can break the funnel down by.
FUNNEL_GROUPS: tuple[str, ...] = ("campaign_id", "vendor", "send_hour_local")

_SIMULATED_STAGES = ("opened", "clicked", "converted")


def _outcomes_sql(filters: Filters) -> tuple[str, dict[str, object]]:
    where, params = filters.where("d")
    sql = f"""
        WITH planned AS (
            SELECT d.decision_id, d.campaign_id, d.user_id, d.item_id, d.vendor, d.send_hour_local, d.send_at
            FROM decisions d WHERE d.action = 'send' AND {where}
        ),
        flagged AS (
            SELECT p.*, s.send_id,
                   coalesce(s.attempts, 0) > 0 AS sent,
                   coalesce(s.state = 'delivered', false) AS delivered,
                   coalesce(s.sent_at, p.send_at) AS clock_start
            FROM planned p LEFT JOIN sends s ON s.decision_id = p.decision_id
        ),
        bought AS (
            SELECT DISTINCT f.send_id
            FROM flagged f JOIN events e ON e.user_id = f.user_id AND e.item_id = f.item_id
            WHERE f.delivered AND {purchase_window("e", "f.clock_start")}
        ),
        opens AS ({OPENS}), clicks AS ({CLICKS}), attributed AS ({ATTRIBUTED})
        SELECT f.decision_id, f.send_id, f.campaign_id, f.vendor, f.send_hour_local, f.send_at,
               f.sent, f.delivered,
               f.delivered AND o.send_id IS NOT NULL AS opened,
               f.delivered AND c.send_id IS NOT NULL AS clicked,
               f.delivered AND (b.send_id IS NOT NULL OR a.send_id IS NOT NULL) AS converted,
               f.delivered AND coalesce(o.only_simulated, false) AS opened_simulated,
               f.delivered AND coalesce(c.only_simulated, false) AS clicked_simulated,
               f.delivered AND b.send_id IS NULL AND coalesce(a.only_simulated, false) AS converted_simulated
        FROM flagged f
        LEFT JOIN opens o ON o.send_id = f.send_id
        LEFT JOIN clicks c ON c.send_id = f.send_id
        LEFT JOIN bought b ON b.send_id = f.send_id
        LEFT JOIN attributed a ON a.send_id = f.send_id"""
    return sql, params


def send_outcomes(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS) -> pd.DataFrame:
    """One row per planned send with its funnel flags.

    Returns:
        DataFrame[decision_id, send_id, campaign_id, vendor, send_hour_local, send_at (UTC),
        sent, delivered, opened, clicked, converted (bool), opened_simulated, clicked_simulated,
        converted_simulated (bool: the stage is reached only through simulated evidence)],
        ordered by send_at then decision_id.
    """
    sql, params = _outcomes_sql(filters)
    return fetch_df(con, f"SELECT * FROM ({sql}) ORDER BY send_at, decision_id", params)


def funnel(con: duckdb.DuckDBPyConnection, filters: Filters = NO_FILTERS, by: str | None = None) -> pd.DataFrame:
    """Funnel counts and rates, overall or per group.

    Args:
        by: ``None`` for one funnel over everything filtered, or one of :data:`FUNNEL_GROUPS`.

    Returns:
        DataFrame[<by>, stage, stage_order (0..5), count, simulated (how many of count rest only on
        simulated events), previous_stage, rate_previous (count / previous stage's count),
        rate_planned (count / planned)] — six rows per group in stage order; rates are NaN when the
        base is 0. With ``by=None`` the six rows are returned even when nothing was planned.

    Raises:
        InputError: ``by`` is not a known group.
    """
    if by is not None and by not in FUNNEL_GROUPS:
        raise InputError(f"cannot break the funnel down by {by!r}; choose one of: {', '.join(FUNNEL_GROUPS)}")
    sql, params = _outcomes_sql(filters)
    sums = ", ".join(
        [f"coalesce(sum({s}::INTEGER), 0) AS {s}" for s in STAGES[1:]]
        + [f"coalesce(sum({s}_simulated::INTEGER), 0) AS {s}_simulated" for s in _SIMULATED_STAGES]
    )
    group = f"{by}, " if by else ""
    tail = f"GROUP BY {by} ORDER BY {by} NULLS LAST" if by else ""
    wide = fetch_df(con, f"SELECT {group}count(*) AS planned, {sums} FROM ({sql}) {tail}", params)
    return _long(wide, by)


def _long(wide: pd.DataFrame, by: str | None) -> pd.DataFrame:
    rows = []
    for record in wide.to_dict("records"):
        for order, stage in enumerate(STAGES):
            prev = PREVIOUS_STAGE[stage]
            count = int(record[stage])
            base = int(record[prev]) if prev else None
            planned = int(record["planned"])
            rows.append({
                **({by: record[by]} if by else {}),
                "stage": stage,
                "stage_order": order,
                "count": count,
                "simulated": int(record.get(f"{stage}_simulated", 0)),
                "previous_stage": prev,
                "rate_previous": count / base if base else np.nan,
                "rate_planned": count / planned if planned else np.nan,
            })
    columns = ([by] if by else []) + ["stage", "stage_order", "count", "simulated", "previous_stage",
                                      "rate_previous", "rate_planned"]
    return pd.DataFrame(rows, columns=columns)
