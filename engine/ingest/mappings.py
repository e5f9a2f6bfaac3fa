"""Built-in mappings from source files to the canonical ``events`` contract, each as DuckDB SQL.

A mapping turns the rows of one file into a *staged* relation with the columns

    __row BIGINT          1-based row number in the file
    event_id VARCHAR      stable id: md5 of (source, natural key, occurrence) — re-ingest is a no-op
    user_id, item_id, event_type VARCHAR; ts TIMESTAMPTZ; properties JSON
    reason VARCHAR        NULL for a good row, else why the row is quarantined
    raw JSON              the original row (only where reason is not NULL)

and, after the events land, refreshes the ``users`` and ``items`` tables it can derive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import duckdb

from engine.domain import EVENT_TYPES
from engine.errors import InputError
from engine.ingest.countries import country_time_zone_sql
from engine.ingest.readers import sql_str

__all__ = ["MAPPINGS", "Mapping", "choose_mapping"]

Columns = list[tuple[str, str]]


@dataclass(frozen=True)
class Mapping:
    """How one kind of source file becomes canonical events."""

    name: str
    description: str
    matches: Callable[[set[str]], bool]
    staged_sql: Callable[[str, Columns, str], str]          # (reader, columns, path) -> SQL
    derive: Callable[[duckdb.DuckDBPyConnection, str], None]  # (con, staged table) -> None


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _raw_json(columns: Columns) -> str:
    return "to_json(struct_pack(" + ", ".join(f"{_q(c)} := {_q(c)}" for c, _ in columns) + "))"


def _numbered(reader: str) -> str:
    return f"(SELECT row_number() OVER () AS __row, * FROM {reader})"


def _first_reason(*rules: tuple[str, str]) -> str:
    """A CASE expression returning the message of the first rule whose condition holds."""
    whens = " ".join(f"WHEN {cond} THEN {sql_str(msg)}" for cond, msg in rules)
    return f"CASE {whens} END"


def _event_id(source: str, key_sql: str) -> str:
    # Occurrence index among rows with the same natural key keeps true duplicates apart while
    # giving the same id to the same row when a file is loaded again.
    return (
        f"md5({sql_str(source)} || '|' || {key_sql} || '|' || "
        f"row_number() OVER (PARTITION BY {key_sql} ORDER BY __row))"
    )


# --------------------------------------------------------------------------------------------
# UCI Online Retail: one invoice line per row, UK local time.

ONLINE_RETAIL_COLUMNS = {"InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice",
                         "CustomerID", "Country"}
NON_PRODUCT_CODES = ("POST", "DOT", "M", "C2", "D", "S", "B", "BANK CHARGES", "AMAZONFEE", "CRUK")


def _timestamp_expr(col: str) -> str:
    """Parse a local timestamp given as TIMESTAMP or text (ISO, or the original xlsx export's m/d/Y H:M)."""
    c = _q(col)
    return (
        f"coalesce(TRY_CAST({c} AS TIMESTAMP), "
        f"try_strptime(CAST({c} AS VARCHAR), '%m/%d/%Y %H:%M'), "
        f"try_strptime(CAST({c} AS VARCHAR), '%m/%d/%Y %H:%M:%S'))"
    )


def _online_retail_staged(reader: str, columns: Columns, path: str) -> str:
    codes = ", ".join(sql_str(c) for c in NON_PRODUCT_CODES)
    reason = _first_reason(
        ("customer IS NULL", "missing user: CustomerID is empty or not a number"),
        ("local_ts IS NULL", "unparseable time: InvoiceDate"),
        ("invoice IS NULL OR stock_code IS NULL", "missing InvoiceNo or StockCode"),
        ("quantity IS NULL", "unparseable Quantity"),
        ("NOT cancelled AND quantity <= 0", "non-positive Quantity on a purchase invoice"),
        ("cancelled AND quantity > 0", "positive Quantity on a cancellation invoice"),
        ("unit_price IS NULL OR unit_price < 0", "missing or negative UnitPrice"),
        (f"upper(stock_code) IN ({codes}) OR stock_code ILIKE 'gift\\_%' ESCAPE '\\'",
         "not a product line: postage, fee, discount or voucher"),
        ("NOT cancelled AND unit_price = 0", "zero UnitPrice on a purchase"),
    )
    key = "concat_ws('|', invoice, stock_code, quantity, local_ts, unit_price, customer)"
    return f"""
    WITH typed AS (
        SELECT __row,
               nullif(trim(CAST("InvoiceNo" AS VARCHAR)), '') AS invoice,
               nullif(trim(CAST("StockCode" AS VARCHAR)), '') AS stock_code,
               nullif(nullif(trim(CAST("Description" AS VARCHAR)), ''), 'nan') AS description,
               TRY_CAST("Quantity" AS BIGINT) AS quantity,
               {_timestamp_expr("InvoiceDate")} AS local_ts,
               TRY_CAST("UnitPrice" AS DOUBLE) AS unit_price,
               TRY_CAST(TRY_CAST("CustomerID" AS DOUBLE) AS BIGINT) AS customer,
               nullif(trim(CAST("Country" AS VARCHAR)), '') AS country,
               coalesce(CAST("InvoiceNo" AS VARCHAR), '') LIKE 'C%' AS cancelled,
               {_raw_json(columns)} AS raw
        FROM {_numbered(reader)}
    ), checked AS (
        SELECT *, {reason} AS reason FROM typed
    )
    SELECT __row,
           CASE WHEN reason IS NULL THEN {_event_id("online_retail", key)} END AS event_id,
           'or:' || customer AS user_id,
           'or:' || stock_code AS item_id,
           CASE WHEN cancelled THEN 'cancellation' ELSE 'purchase' END AS event_type,
           timezone('Europe/London', local_ts) AS ts,
           json_object('invoice', invoice, 'quantity', abs(quantity), 'unit_price', unit_price,
                       'country', country, 'description', description) AS properties,
           reason,
           CASE WHEN reason IS NOT NULL THEN raw END AS raw
    FROM checked
    """


def _online_retail_derive(con: duckdb.DuckDBPyConnection, staged: str) -> None:
    con.execute(f"""
        INSERT OR REPLACE INTO users (user_id, country, time_zone, source, first_seen, last_seen)
        WITH lines AS (
            SELECT user_id, properties->>'country' AS country, ts FROM events
            WHERE source = 'online_retail'
              AND user_id IN (SELECT DISTINCT user_id FROM {staged} WHERE reason IS NULL)
        ), per_user AS (
            SELECT user_id, min(ts) AS first_seen, max(ts) AS last_seen FROM lines GROUP BY user_id
        ), main_country AS (
            -- a few customers ordered from two countries: take the one most of their lines name
            SELECT user_id, first(country ORDER BY n DESC, country) AS country
            FROM (SELECT user_id, country, count(*) AS n FROM lines GROUP BY ALL) GROUP BY user_id
        )
        SELECT p.user_id, m.country, {country_time_zone_sql("m.country")}, 'online_retail',
               p.first_seen, p.last_seen
        FROM per_user p JOIN main_country m USING (user_id)
    """)
    con.execute(f"""
        INSERT OR REPLACE INTO items (item_id, name, category, price, currency, source, properties)
        WITH lines AS (
            SELECT item_id, properties->>'description' AS description,
                   CAST(properties->>'unit_price' AS DOUBLE) AS unit_price, event_type
            FROM events
            WHERE source = 'online_retail'
              AND item_id IN (SELECT DISTINCT item_id FROM {staged} WHERE reason IS NULL)
        )
        SELECT item_id,
               mode(description) AS name,
               'or:' || coalesce(nullif(regexp_extract(substr(item_id, 4), '^[0-9]+'), ''), substr(item_id, 4)) AS category,
               median(unit_price) FILTER (WHERE event_type = 'purchase') AS price,
               'GBP', 'online_retail',
               json_object('stock_code', substr(item_id, 4))
        FROM lines GROUP BY item_id
    """)


# --------------------------------------------------------------------------------------------
# Open Bandit Dataset: one impression per row, UTC timestamps, no user id.

OPEN_BANDIT_COLUMNS = {"timestamp", "item_id", "position", "click", "propensity_score", "user_feature_0"}


def _policy_from_path(path: str) -> str:
    parts = re.split(r"[\\/]", path.lower())
    for name in ("random", "bts"):
        if name in parts:
            return name
    return "unknown"


def _open_bandit_staged(reader: str, columns: Columns, path: str) -> str:
    names = [c for c, _ in columns]
    affinity = sorted((c for c in names if c.startswith("user-item_affinity_")), key=lambda c: int(c.rsplit("_", 1)[1]))
    affinity_list = "[" + ", ".join(f"TRY_CAST({_q(c)} AS DOUBLE)" for c in affinity) + "]"
    features = [f"user_feature_{i}" for i in range(4) if f"user_feature_{i}" in names]
    user_key = " || '|' || ".join(f"coalesce(CAST({_q(c)} AS VARCHAR), '')" for c in features)
    reason = _first_reason(
        ("ts IS NULL", "unparseable time: timestamp"),
        ("item IS NULL OR item < 0", "missing or negative item_id"),
        ("position IS NULL", "unparseable position"),
        ("click IS NULL OR click NOT IN (0, 1)", "click must be 0 or 1"),
        ("propensity IS NULL OR propensity <= 0 OR propensity > 1", "propensity_score must be in (0, 1]"),
    )
    feature_props = ", ".join(f"{sql_str(c)}, CAST({_q(c)} AS VARCHAR)" for c in features)
    key = "concat_ws('|', ts, item, position, kind)"
    policy = sql_str(_policy_from_path(path))
    return f"""
    WITH typed AS (
        SELECT __row,
               TRY_CAST("timestamp" AS TIMESTAMPTZ) AS ts,
               TRY_CAST("item_id" AS INTEGER) AS item,
               TRY_CAST("position" AS INTEGER) AS position,
               TRY_CAST("click" AS INTEGER) AS click,
               TRY_CAST("propensity_score" AS DOUBLE) AS propensity,
               'obd:' || substr(md5({user_key}), 1, 12) AS user_id,
               json_object('position', TRY_CAST("position" AS INTEGER), 'click', TRY_CAST("click" AS INTEGER),
                           'propensity', TRY_CAST("propensity_score" AS DOUBLE), 'policy', {policy},
                           'affinity', {affinity_list}[TRY_CAST("item_id" AS INTEGER) + 1]
                           {", " + feature_props if feature_props else ""}) AS properties,
               {_raw_json(columns)} AS raw
        FROM {_numbered(reader)}
    ), checked AS (
        SELECT *, {reason} AS reason FROM typed
    ), expanded AS (
        SELECT *, 'impression' AS kind FROM checked
        UNION ALL
        SELECT *, 'click' AS kind FROM checked WHERE reason IS NULL AND click = 1
    )
    SELECT __row,
           CASE WHEN reason IS NULL THEN md5('open_bandit|' || {policy} || '|' || {key}) END AS event_id,
           user_id, 'obd:' || item AS item_id, kind AS event_type, ts, properties, reason,
           CASE WHEN reason IS NOT NULL THEN raw END AS raw
    FROM expanded
    """


def _open_bandit_derive(con: duckdb.DuckDBPyConnection, staged: str) -> None:
    con.execute(f"""
        INSERT OR IGNORE INTO users (user_id, country, time_zone, source, first_seen, last_seen)
        SELECT user_id, 'Japan', 'Asia/Tokyo', 'open_bandit', min(ts), max(ts)
        FROM {staged} WHERE reason IS NULL GROUP BY user_id
    """)
    con.execute(f"""
        INSERT OR IGNORE INTO items (item_id, name, category, price, currency, source, properties)
        SELECT DISTINCT item_id, 'ZOZOTOWN item ' || substr(item_id, 5), NULL, NULL, NULL, 'open_bandit', NULL
        FROM {staged} WHERE reason IS NULL
    """)


# --------------------------------------------------------------------------------------------
# Canonical events: user_id, item_id?, event_type, timestamp|ts, properties?, event_id?, time_zone?

def _canonical_staged(reader: str, columns: Columns, path: str) -> str:
    names = {c for c, _ in columns}
    ts_col = "ts" if "ts" in names else "timestamp"
    item = 'nullif(trim(CAST("item_id" AS VARCHAR)), \'\')' if "item_id" in names else "NULL"
    props = 'CAST(to_json("properties") AS JSON)' if "properties" in names else "NULL"
    types = ", ".join(sql_str(t) for t in sorted(EVENT_TYPES))
    reason = _first_reason(
        ("user_id IS NULL", "missing user: user_id is empty"),
        ("event_type IS NULL", "missing event_type"),
        (f"event_type NOT IN ({types})", "unknown event type"),
        ("ts IS NULL", f"unparseable time: {ts_col}"),
    )
    given_id = 'nullif(trim(CAST("event_id" AS VARCHAR)), \'\')' if "event_id" in names else "NULL"
    key = "concat_ws('|', user_id, item_id, event_type, ts, CAST(properties AS VARCHAR))"
    return f"""
    WITH typed AS (
        SELECT __row,
               nullif(trim(CAST("user_id" AS VARCHAR)), '') AS user_id,
               {item} AS item_id,
               lower(nullif(trim(CAST("event_type" AS VARCHAR)), '')) AS event_type,
               TRY_CAST({_q(ts_col)} AS TIMESTAMPTZ) AS ts,
               {props} AS properties,
               {given_id} AS given_id,
               {_raw_json(columns)} AS raw
        FROM {_numbered(reader)}
    ), checked AS (
        SELECT *, {reason} AS reason FROM typed
    )
    SELECT __row,
           CASE WHEN reason IS NULL THEN coalesce(md5('events|id|' || given_id), {_event_id("events", key)}) END
               AS event_id,
           user_id, item_id, event_type, ts, properties, reason,
           CASE WHEN reason IS NOT NULL THEN raw END AS raw
    FROM checked
    """


def _canonical_derive(con: duckdb.DuckDBPyConnection, staged: str) -> None:
    con.execute(f"""
        INSERT OR IGNORE INTO users (user_id, country, time_zone, source, first_seen, last_seen)
        SELECT user_id, NULL, 'UTC', 'events', min(ts), max(ts) FROM {staged}
        WHERE reason IS NULL GROUP BY user_id
    """)
    con.execute(f"""
        INSERT OR IGNORE INTO items (item_id, name, category, price, currency, source, properties)
        SELECT DISTINCT item_id, NULL, NULL, NULL, NULL, 'events', NULL FROM {staged}
        WHERE reason IS NULL AND item_id IS NOT NULL
    """)


MAPPINGS: dict[str, Mapping] = {
    m.name: m
    for m in (
        Mapping("online_retail", "UCI Online Retail invoice lines → purchase/cancellation events",
                lambda cols: ONLINE_RETAIL_COLUMNS <= cols, _online_retail_staged, _online_retail_derive),
        Mapping("open_bandit", "Open Bandit Dataset logs → impression and click events",
                lambda cols: OPEN_BANDIT_COLUMNS <= cols, _open_bandit_staged, _open_bandit_derive),
        Mapping("events", "canonical events: user_id, event_type, timestamp|ts, [item_id, properties, event_id]",
                lambda cols: {"user_id", "event_type"} <= cols and bool({"ts", "timestamp"} & cols),
                _canonical_staged, _canonical_derive),
    )
}


def choose_mapping(name: str | None, columns: Columns) -> Mapping:
    """The mapping called ``name``, or the first whose required columns the file has."""
    present = {c for c, _ in columns}
    if name:
        if name not in MAPPINGS:
            raise InputError(f"unknown mapping {name!r}; built-in mappings: {', '.join(MAPPINGS)}")
        mapping = MAPPINGS[name]
        if not mapping.matches(present):
            raise InputError(f"the file's columns do not fit mapping {name!r} ({mapping.description}); "
                             f"columns found: {', '.join(sorted(present))}")
        return mapping
    for mapping in MAPPINGS.values():
        if mapping.matches(present):
            return mapping
    raise InputError("no built-in mapping fits the columns " + ", ".join(sorted(present))
                     + "; canonical files need user_id, event_type and timestamp (or ts)")
