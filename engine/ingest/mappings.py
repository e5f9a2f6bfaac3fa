"""Built-in mappings from source files to the canonical ``events`` contract, each as DuckDB SQL.

A mapping is three pieces of SQL that the loader chains (see ``engine.ingest.loader``):

``checked_sql(source, columns, path, now)`` types every row of ``source`` and says what is wrong with it
(``now`` is the ingest clock's time, for rules about the future):

    __row BIGINT          where the row is in the file (given by the source; see ``readers.numbered_sql``)
    __src STRUCT          the original row (given by the source; becomes the quarantine's ``raw``)
    typed columns         whatever the mapping needs
    reason VARCHAR        NULL for a good row, else why the row is quarantined

``events_sql(good)`` turns the good rows into events (a row may yield several, of different types):

    __row BIGINT          the source row
    __key                 the event's natural key (any type; a STRUCT of typed columns hashes cheaply)
    __numbered BOOLEAN    true: a row repeating a key is a further event (occurrence 2, 3, …);
                          false: it is the same event again, skipped as a duplicate
    user_id, item_id, event_type VARCHAR; ts TIMESTAMPTZ; properties JSON
    …                     the typed columns ``event_id`` and ``derive`` read

``event_id(occurrence)`` is the SQL of the event's id over those columns: the md5 of the mapping's
name, the natural key and, where repeats are numbered, the occurrence (1 unless the key repeats).

``derive(con, file_events, first_load)`` refreshes the ``users`` and ``items`` it can derive from the
file's events; ``first_load`` says no event of this mapping was stored before, so the file's events are
all there are. Event identity is explained in docs/decisions/002-event-identity.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb

from engine.domain import EVENT_TYPES
from engine.errors import InputError
from engine.ingest.countries import country_time_zone_sql
from engine.ingest.readers import quote_ident as _q
from engine.ingest.readers import sql_str

__all__ = ["MAPPINGS", "Mapping", "choose_mapping"]

Columns = list[tuple[str, str]]


@dataclass(frozen=True)
class Mapping:
    """How one kind of source file becomes canonical events (the SQL contract is in the module docstring)."""

    name: str
    description: str
    matches: Callable[[set[str]], bool]
    checked_sql: Callable[[str, Columns, str, datetime], str]      # (source, columns, path, now) -> SQL
    events_sql: Callable[[str], str]                               # (good rows) -> SQL
    event_id: Callable[[str], str]                                 # (occurrence SQL) -> SQL
    derive: Callable[[duckdb.DuckDBPyConnection, str, bool], None]  # (con, file events, first load)
    #: why a good row can give more than one event, for the ingest summary ("" when it gives one)
    extra_events: str = ""


class _Sql(str):
    """A reason that is an SQL expression (it names the bad value), not a fixed message."""


def _first_reason(*rules: tuple[str, str]) -> str:
    """A CASE expression returning the message of the first rule whose condition holds."""
    whens = " ".join(f"WHEN {cond} THEN {msg if isinstance(msg, _Sql) else sql_str(msg)}" for cond, msg in rules)
    return f"CASE {whens} END"


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


def _online_retail_checked(source: str, columns: Columns, path: str, now: datetime) -> str:
    codes = ", ".join(sql_str(c) for c in NON_PRODUCT_CODES)
    reason = _first_reason(
        ("customer IS NULL", "missing user: CustomerID is empty or not a number"),
        ("local_ts IS NULL", "unparseable time: InvoiceDate"),
        ("invoice IS NULL OR stock_code IS NULL", "missing InvoiceNo or StockCode"),
        ("quantity IS NULL", "unparseable Quantity"),
        ("NOT cancelled AND quantity <= 0", "non-positive Quantity on a purchase invoice"),
        ("cancelled AND quantity > 0", "positive Quantity on a cancellation invoice"),
        ("unit_price IS NULL OR unit_price < 0", "missing or negative UnitPrice"),
        # every such code starts with a letter: most lines (digits) skip the case-folding tests
        (f"ascii(stock_code) NOT BETWEEN 48 AND 57 AND (upper(stock_code) IN ({codes}) "
         f"OR stock_code ILIKE 'gift\\_%' ESCAPE '\\')",
         "not a product line: postage, fee, discount or voucher"),
        ("NOT cancelled AND unit_price = 0", "zero UnitPrice on a purchase"),
    )
    return f"""
    SELECT *, {reason} AS reason FROM (
        SELECT __row, __src,
               nullif(trim(CAST("InvoiceNo" AS VARCHAR)), '') AS invoice,
               nullif(trim(CAST("StockCode" AS VARCHAR)), '') AS stock_code,
               nullif(nullif(trim(CAST("Description" AS VARCHAR)), ''), 'nan') AS description,
               TRY_CAST("Quantity" AS BIGINT) AS quantity,
               {_timestamp_expr("InvoiceDate")} AS local_ts,
               TRY_CAST("UnitPrice" AS DOUBLE) AS unit_price,
               TRY_CAST(TRY_CAST("CustomerID" AS DOUBLE) AS BIGINT) AS customer,
               nullif(trim(CAST("Country" AS VARCHAR)), '') AS country,
               coalesce(CAST("InvoiceNo" AS VARCHAR), '') LIKE 'C%' AS cancelled
        FROM {source}
    )"""


def _online_retail_events(good: str) -> str:
    # Two identical lines on one invoice are two line items (numbered), not one event seen twice.
    return f"""
    SELECT __row,
           struct_pack(invoice, stock_code, quantity, local_ts, unit_price, customer) AS __key,
           true AS __numbered,
           'or:' || customer AS user_id,
           'or:' || stock_code AS item_id,
           CASE WHEN cancelled THEN 'cancellation' ELSE 'purchase' END AS event_type,
           timezone('Europe/London', local_ts) AS ts,
           json_object('invoice', invoice, 'quantity', abs(quantity), 'unit_price', unit_price) AS properties,
           invoice, stock_code, quantity, local_ts, unit_price, customer, country, description
    FROM {good}"""


def _online_retail_event_id(occurrence: str) -> str:
    return (f"md5(concat_ws('|', 'online_retail', invoice, stock_code, quantity, local_ts, unit_price, customer, "
            f"{occurrence}))")


LINES = "pw_retail_lines"  # the file's lines summed per user, per item name and per item price


def _online_retail_derive(con: duckdb.DuckDBPyConnection, file_events: str, first_load: bool) -> None:
    """Users (country, time zone, first and last seen) and items (name, median price) from the lines.

    An event's properties keep only what belongs to the line (invoice, quantity, unit price): the
    country is the customer's and the description the item's, so they live in ``users`` and
    ``items``, computed from the file's typed columns. A later file updates the users and items it
    names: first and last seen widen, a known user keeps their country and a known item its name, and
    an item's price is the median over all its stored purchase lines.

    The file is read once, into a small table of line counts per (user, country, local time), per
    (item, description) and per (item, event type, price); users and items are computed from it.
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {LINES} AS
        SELECT CASE GROUPING(user_id, description, unit_price) WHEN 3 THEN 'user' WHEN 5 THEN 'name'
               ELSE 'price' END AS kind,
               user_id, country, local_ts, item_id, description, event_type, unit_price, count(*) AS n
        FROM {file_events}
        GROUP BY GROUPING SETS ((user_id, country, local_ts), (item_id, description),
                                (item_id, event_type, unit_price))""")
    try:
        _derive_users(con, first_load)
        _derive_items(con, file_events, first_load)
    finally:
        con.execute(f"DROP TABLE IF EXISTS {LINES}")


def _derive_users(con: duckdb.DuckDBPyConnection, first_load: bool) -> None:
    known = "" if first_load else "LEFT JOIN users u USING (user_id)"
    country = "m.country" if first_load else "coalesce(u.country, m.country)"
    seen = ("p.first_seen, p.last_seen" if first_load else
            "least(coalesce(u.first_seen, p.first_seen), p.first_seen), "
            "greatest(coalesce(u.last_seen, p.last_seen), p.last_seen)")
    con.execute(f"""
        INSERT OR REPLACE INTO users (user_id, country, time_zone, source, first_seen, last_seen)
        WITH lines AS (
            SELECT user_id, country, local_ts, n FROM {LINES} WHERE kind = 'user'
        ), per_user AS (
            -- UK local time to UTC once per distinct time, not once per line
            SELECT user_id, min(timezone('Europe/London', local_ts)) AS first_seen,
                   max(timezone('Europe/London', local_ts)) AS last_seen
            FROM lines GROUP BY user_id
        ), main_country AS (
            -- a few customers ordered from two countries: take the one most of their lines name
            SELECT user_id, first(country ORDER BY n DESC, country) AS country
            FROM (SELECT user_id, country, sum(n) AS n FROM lines GROUP BY ALL) GROUP BY user_id
        )
        SELECT p.user_id, {country}, {country_time_zone_sql(country)}, 'online_retail', {seen}
        FROM per_user p JOIN main_country m USING (user_id) {known}
    """)


def _derive_items(con: duckdb.DuckDBPyConnection, file_events: str, first_load: bool) -> None:
    if first_load:  # the file holds every online_retail line: its price counts give the median
        per_item = f"""
            SELECT item_id, median(unit_price) FILTER (WHERE event_type = 'purchase') AS price
            FROM ({_middle_prices()}) GROUP BY item_id"""
    else:  # the median is over every stored line of the items the file names
        per_item = f"""
            SELECT item_id, median(CAST(properties->>'unit_price' AS DOUBLE))
                            FILTER (WHERE event_type = 'purchase') AS price
            FROM events WHERE source = 'online_retail'
              AND item_id IN (SELECT item_id FROM {LINES} WHERE kind = 'price')
            GROUP BY item_id"""
    name = "m.name" if first_load else "coalesce(i.name, m.name)"
    known_item = "" if first_load else "LEFT JOIN items i USING (item_id)"
    con.execute(f"""
        INSERT OR REPLACE INTO items (item_id, name, category, price, currency, source, properties)
        WITH per_item AS ({per_item}
        ), main_name AS (
            -- the description most lines carry; a tie goes to the first alphabetically, so reloads agree
            SELECT item_id, first(description ORDER BY n DESC, description) AS name
            FROM {LINES} WHERE kind = 'name' AND description IS NOT NULL GROUP BY item_id
        )
        SELECT item_id, {name},
               'or:' || coalesce(nullif(regexp_extract(substr(item_id, 4), '^[0-9]+'), ''), substr(item_id, 4)),
               p.price, 'GBP', 'online_retail', json_object('stock_code', substr(item_id, 4))
        FROM per_item p LEFT JOIN main_name m USING (item_id) {known_item}
    """)


def _middle_prices() -> str:
    """Per item and event type, the one or two middle prices of its lines, from the counted prices.

    The median of n sorted prices is the one at position (n + 1) // 2 when n is odd, and interpolates
    the ones at n // 2 and n // 2 + 1 when it is even. Both positions are picked here (the same price
    twice when n is odd), so ``median`` over the pair gives the median of all n lines, to the bit:
    DuckDB interpolates the same two values by the same fraction. Cancellations keep their own middle
    rows, so an item that was only ever cancelled still gets an item row (with no price).
    """
    return f"""
        WITH ranked AS (
            SELECT item_id, event_type, unit_price, n,
                   sum(n) OVER (PARTITION BY item_id, event_type ORDER BY unit_price) AS upto,
                   sum(n) OVER (PARTITION BY item_id, event_type) AS total
            FROM {LINES} WHERE kind = 'price'
        ), positions AS (
            SELECT item_id, event_type, unit_price, upto - n AS after, upto,
                   unnest([(total + 1) // 2, total // 2 + 1]) AS pos
            FROM ranked
        )
        SELECT item_id, event_type, unit_price FROM positions WHERE after < pos AND pos <= upto"""


# --------------------------------------------------------------------------------------------
# Open Bandit Dataset: one impression per row, UTC timestamps, no user id.

OPEN_BANDIT_COLUMNS = {"timestamp", "item_id", "position", "click", "propensity_score", "user_feature_0"}


def _policy_from_path(path: str) -> str:
    from pathlib import Path

    parts = [p.lower() for p in Path(path).resolve().parts]  # `cd random && ingest all.csv` still says random
    # The folder nearest the file names its policy: data/random/open_bandit/bts/all.csv is a bts log.
    for part in reversed(parts[:-1]):
        if part in ("random", "bts"):
            return part
    return "unknown"


def _open_bandit_checked(source: str, columns: Columns, path: str, now: datetime) -> str:
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
    policy = sql_str(_policy_from_path(path))
    return f"""
    SELECT *, {reason} AS reason FROM (
        SELECT __row, __src,
               TRY_CAST("timestamp" AS TIMESTAMPTZ) AS ts,
               TRY_CAST("item_id" AS INTEGER) AS item,
               TRY_CAST("position" AS INTEGER) AS position,
               TRY_CAST("click" AS INTEGER) AS click,
               TRY_CAST("propensity_score" AS DOUBLE) AS propensity,
               {policy} AS policy,
               'obd:' || substr(md5({user_key}), 1, 12) AS user_id,
               json_object('position', TRY_CAST("position" AS INTEGER), 'click', TRY_CAST("click" AS INTEGER),
                           'propensity', TRY_CAST("propensity_score" AS DOUBLE), 'policy', {policy},
                           'affinity', {affinity_list}[TRY_CAST("item_id" AS INTEGER) + 1]
                           {", " + feature_props if feature_props else ""}) AS properties
        FROM {source}
    )"""


def _open_bandit_events(good: str) -> str:
    # A logged impression is identified by its time, item and slot: a repeat is the same impression.
    return f"""
    SELECT __row, struct_pack(ts, item, position, kind) AS __key, false AS __numbered,
           user_id, 'obd:' || item AS item_id, kind AS event_type, ts, properties, policy, item, position, kind
    FROM (SELECT *, 'impression' AS kind FROM {good}
          UNION ALL
          SELECT *, 'click' AS kind FROM {good} WHERE click = 1)"""


def _open_bandit_event_id(occurrence: str) -> str:
    # The impression itself (microsecond time, item, slot) is the identity: the same log copied to a
    # folder that does not name its policy must still deduplicate.
    return "md5('open_bandit|' || concat_ws('|', ts, item, position, kind))"


def _open_bandit_derive(con: duckdb.DuckDBPyConnection, file_events: str, first_load: bool) -> None:
    con.execute(f"""
        INSERT OR IGNORE INTO users (user_id, country, time_zone, source, first_seen, last_seen)
        SELECT user_id, 'Japan', 'Asia/Tokyo', 'open_bandit', min(ts), max(ts)
        FROM {file_events} GROUP BY user_id
    """)
    con.execute(f"""
        INSERT OR IGNORE INTO items (item_id, name, category, price, currency, source, properties)
        SELECT DISTINCT item_id, 'ZOZOTOWN item ' || substr(item_id, 5), NULL, NULL, NULL, 'open_bandit', NULL
        FROM {file_events}
    """)


# --------------------------------------------------------------------------------------------
# Canonical events: user_id, item_id?, event_type, timestamp|ts, properties?, event_id?, time_zone?

#: Canonical timestamps later than this after the ingest clock's now are quarantined (clock skew allowed).
FUTURE_SLACK = timedelta(days=1)
SHOWN_VALUE = 40  # characters of a bad value a reason quotes


def _shown(text_sql: str) -> _Sql:
    """A bad value for a reason: quoted, cut to SHOWN_VALUE characters, control and format characters as '?'."""
    return _Sql(f"""'"' || regexp_replace(left({text_sql}, {SHOWN_VALUE}), '\\p{{C}}', '?', 'g')
                || CASE WHEN length({text_sql}) > {SHOWN_VALUE} THEN '…' ELSE '' END || '"'""")


def _canonical_properties(columns: Columns) -> tuple[str, str]:
    """SQL of (the raw ``properties`` value, it as JSON); text is parsed, a NULL or empty value is absent."""
    types = dict(columns)
    if "properties" not in types:
        return "NULL", "NULL::JSON"
    if types["properties"] == "VARCHAR":  # CSV, a Parquet text column, a JSON line's string
        raw = "nullif(trim(\"properties\"), '')"
        return raw, f"TRY_CAST({raw} AS JSON)"
    return '"properties"', 'CAST(to_json("properties") AS JSON)'


def _canonical_checked(source: str, columns: Columns, path: str, now: datetime) -> str:
    """Rows of a canonical file, checked against the contract of README Data flow §1.

    ``properties`` must be a JSON object (text is parsed; JSON ``null`` counts as absent); a purchase's
    ``properties.quantity`` must not be negative; ``ts`` must not be more than FUTURE_SLACK after ``now``.
    """
    names = {c for c, _ in columns}
    ts_col = "ts" if "ts" in names else "timestamp"
    item = 'nullif(trim(CAST("item_id" AS VARCHAR)), \'\')' if "item_id" in names else "NULL"
    raw_props, props = _canonical_properties(columns)
    given_id = 'nullif(trim(CAST("event_id" AS VARCHAR)), \'\')' if "event_id" in names else "NULL"
    types = ", ".join(sql_str(t) for t in sorted(EVENT_TYPES))
    latest = sql_str((now + FUTURE_SLACK).isoformat())
    reason = _first_reason(
        ("user_id IS NULL", "missing user: user_id is empty"),
        ("event_type IS NULL", "missing event_type"),
        (f"event_type NOT IN ({types})", _Sql(f"'unknown event type ' || {_shown('given_type')}")),
        ("ts_text IS NULL", "missing timestamp"),
        ("ts IS NULL", f"unparseable time: {ts_col}"),
        (f"ts > CAST({latest} AS TIMESTAMPTZ)", "timestamp in the future"),
        ("raw_properties IS NOT NULL AND coalesce(json_type(parsed) NOT IN ('OBJECT', 'NULL'), true)",
         "properties is not a JSON object"),
        ("event_type = 'purchase' AND TRY_CAST(properties->>'quantity' AS DOUBLE) < 0",
         "negative quantity for a purchase"),
    )
    return f"""
    SELECT * EXCLUDE (given_type, ts_text, raw_properties, parsed), {reason} AS reason FROM (
        SELECT *, CASE WHEN json_type(parsed) = 'OBJECT' THEN parsed END AS properties FROM (
            SELECT __row, __src,
                   nullif(trim(CAST("user_id" AS VARCHAR)), '') AS user_id,
                   {item} AS item_id,
                   nullif(trim(CAST("event_type" AS VARCHAR)), '') AS given_type,
                   lower(given_type) AS event_type,
                   nullif(trim(CAST({_q(ts_col)} AS VARCHAR)), '') AS ts_text,
                   TRY_CAST({_q(ts_col)} AS TIMESTAMPTZ) AS ts,
                   {raw_props} AS raw_properties,
                   {props} AS parsed,
                   {given_id} AS given_id
            FROM {source}
        )
    )"""


def _canonical_events(good: str) -> str:
    # A given event_id names the event: a repeat is the same event. Without one, the content is the key.
    return f"""
    SELECT __row,
           CASE WHEN given_id IS NOT NULL THEN 'id|' || given_id ELSE 'content|' || {_CANONICAL_CONTENT} END AS __key,
           given_id IS NULL AS __numbered,
           user_id, item_id, event_type, ts, properties, given_id
    FROM {good}"""


_CANONICAL_CONTENT = "concat_ws('|', user_id, item_id, event_type, ts, CAST(properties AS VARCHAR))"


def _canonical_event_id(occurrence: str) -> str:
    return (f"CASE WHEN given_id IS NOT NULL THEN md5('events|id|' || given_id) "
            f"ELSE md5('events|' || {_CANONICAL_CONTENT} || '|' || {occurrence}) END")


def _canonical_derive(con: duckdb.DuckDBPyConnection, file_events: str, first_load: bool) -> None:
    con.execute(f"""
        INSERT OR IGNORE INTO users (user_id, country, time_zone, source, first_seen, last_seen)
        SELECT user_id, NULL, 'UTC', 'events', min(ts), max(ts) FROM {file_events} GROUP BY user_id
    """)
    con.execute(f"""
        INSERT OR IGNORE INTO items (item_id, name, category, price, currency, source, properties)
        SELECT DISTINCT item_id, NULL, NULL, NULL, NULL, 'events', NULL FROM {file_events}
        WHERE item_id IS NOT NULL
    """)


MAPPINGS: dict[str, Mapping] = {
    m.name: m
    for m in (
        Mapping("online_retail", "UCI Online Retail invoice lines → purchase/cancellation events",
                lambda cols: cols >= ONLINE_RETAIL_COLUMNS,
                _online_retail_checked, _online_retail_events, _online_retail_event_id, _online_retail_derive),
        Mapping("open_bandit", "Open Bandit Dataset logs → impression and click events",
                lambda cols: cols >= OPEN_BANDIT_COLUMNS,
                _open_bandit_checked, _open_bandit_events, _open_bandit_event_id, _open_bandit_derive,
                "rows with a click gave a click event besides the impression"),
        Mapping("events", "canonical events: user_id, event_type, timestamp|ts, [item_id, properties, event_id]",
                lambda cols: {"user_id", "event_type"} <= cols and bool({"ts", "timestamp"} & cols),
                _canonical_checked, _canonical_events, _canonical_event_id, _canonical_derive),
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
