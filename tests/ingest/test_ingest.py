"""Ingest: contract, quarantine reasons, idempotent re-ingest, derived users and items."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from engine.errors import InputError, StoreError
from engine.ingest import MAPPINGS, ingest_path
from engine.store import Store
from tests.conftest import DATA

HEADER = "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
GOOD = "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850.0,United Kingdom\n"

# (row, exact quarantine reason) — each row breaks the Online Retail contract in one way
MALFORMED = [
    ("536366,22633,HAND WARMER,6,12/1/2010 8:28,1.85,,United Kingdom", "missing user: CustomerID is empty or not a number"),
    ("536366,22633,HAND WARMER,6,12/1/2010 8:28,1.85,abc,United Kingdom", "missing user: CustomerID is empty or not a number"),
    ("536367,84879,BIRD ORNAMENT,32,yesterday at noon,1.69,13047.0,United Kingdom", "unparseable time: InvoiceDate"),
    ("536368,22960,JAM MAKING SET,-6,12/1/2010 8:34,4.25,13047.0,United Kingdom", "non-positive Quantity on a purchase invoice"),
    ("536369,21756,BATH BUILDING BLOCK,three,12/1/2010 8:35,5.95,13047.0,United Kingdom", "unparseable Quantity"),
    ("C536379,22556,PLASTERS IN TIN,5,12/1/2010 9:41,1.65,14527.0,United Kingdom", "positive Quantity on a cancellation invoice"),
    ("536370,22728,ALARM CLOCK,24,12/1/2010 8:45,-3.75,12583.0,France", "missing or negative UnitPrice"),
    ("536370,POST,POSTAGE,3,12/1/2010 8:45,18.0,12583.0,France", "not a product line: postage, fee, discount or voucher"),
    ("536371,22086,PAPER CHAIN KIT,80,12/1/2010 9:00,0,13748.0,United Kingdom", "zero UnitPrice on a purchase"),
    (",22086,PAPER CHAIN KIT,80,12/1/2010 9:00,2.55,13748.0,United Kingdom", "missing InvoiceNo or StockCode"),
]


def _csv(tmp_path: Path, rows: list[str], name: str = "retail.csv") -> Path:
    p = tmp_path / name
    p.write_text(HEADER + "".join(r if r.endswith("\n") else r + "\n" for r in rows))
    return p


@pytest.mark.parametrize(("row", "reason"), MALFORMED)
def test_each_malformed_row_is_quarantined_with_its_exact_reason_while_good_rows_land(store, tmp_path, row, reason):
    path = _csv(tmp_path, [GOOD, row, GOOD.replace("85123A", "71053")])
    report = ingest_path(store, path)
    assert report.events_loaded == 2
    assert report.rows_quarantined == 1
    assert report.reasons == {reason: 1}
    got = store.execute("SELECT row_number, reason, raw FROM quarantine").fetchall()
    assert [(r[0], r[1]) for r in got] == [(3, reason)]  # the file line: the header is line 1
    assert json.loads(got[0][2])["StockCode"] == row.split(",")[1]


def test_cancellation_is_stored_but_never_as_a_purchase(store, tmp_path):
    path = _csv(tmp_path, [GOOD, "C536379,85123A,WHITE HANGING HEART T-LIGHT HOLDER,-2,12/1/2010 9:41,2.55,17850.0,United Kingdom"])
    ingest_path(store, path)
    rows = store.execute("SELECT event_type, properties->>'quantity' FROM events ORDER BY event_type").fetchall()
    assert rows == [("cancellation", "2"), ("purchase", "6")]


def test_uk_local_time_becomes_utc_across_daylight_saving(store, tmp_path):
    path = _csv(tmp_path, [GOOD, GOOD.replace("12/1/2010 8:26", "6/1/2011 8:26").replace("536365", "555555")])
    ingest_path(store, path)
    hours = [r[0] for r in store.execute("SELECT hour(ts) FROM events ORDER BY ts").fetchall()]
    assert hours == [8, 7]  # GMT in December, BST (UTC+1) in June


def test_reingesting_the_same_file_adds_nothing(store, tmp_path):
    path = _csv(tmp_path, [GOOD, GOOD, MALFORMED[0][0]])  # the duplicate line is a real second line item
    first = ingest_path(store, path)
    assert (first.events_loaded, first.rows_quarantined) == (2, 1)
    before = [store.count(t) for t in ("events", "quarantine", "users", "items")]
    second = ingest_path(store, path)
    assert second.already_ingested and second.events_loaded == 0
    assert [store.count(t) for t in ("events", "quarantine", "users", "items")] == before


def test_same_rows_in_another_file_are_recognised_as_duplicates(store, tmp_path):
    ingest_path(store, _csv(tmp_path, [GOOD], "a.csv"))
    report = ingest_path(store, _csv(tmp_path, [GOOD, GOOD.replace("85123A", "71053")], "b.csv"))
    assert (report.events_loaded, report.events_duplicate) == (1, 1)
    assert store.count("events") == 2


def test_event_ids_are_the_md5_of_source_natural_key_and_occurrence(store, tmp_path):
    ingest_path(store, _csv(tmp_path, [GOOD, GOOD]))
    key = "online_retail|536365|85123A|6|2010-12-01 08:26:00|2.55|17850"
    expected = sorted(hashlib.md5(f"{key}|{n}".encode()).hexdigest() for n in (1, 2))
    assert sorted(r[0] for r in store.execute("SELECT event_id FROM events").fetchall()) == expected


def test_event_ids_stay_unique_across_repeats_and_overlapping_files(store, tmp_path):
    ingest_path(store, _csv(tmp_path, [GOOD, GOOD], "a.csv"))
    report = ingest_path(store, _csv(tmp_path, [GOOD, GOOD, GOOD], "b.csv"))  # a third identical line is new
    assert (report.events_loaded, report.events_duplicate) == (1, 2)
    assert store.scalar("SELECT count(*) FROM events") == 3
    assert store.scalar("SELECT count(DISTINCT event_id) FROM events") == 3


def test_a_later_file_extends_the_users_it_touches(store, tmp_path):
    ingest_path(store, _csv(tmp_path, [GOOD], "a.csv"))
    later = GOOD.replace("536365", "555555").replace("12/1/2010 8:26", "6/1/2011 8:26")
    ingest_path(store, _csv(tmp_path, [GOOD, later], "b.csv"))
    first, last = store.execute("SELECT hour(first_seen), month(last_seen) FROM users").fetchone()
    assert (first, last) == (8, 6)


def test_a_later_file_keeps_known_countries_and_names_and_prices_items_over_all_lines(store, tmp_path):
    ingest_path(store, _csv(tmp_path, [GOOD], "a.csv"))
    moved = (GOOD.replace("536365", "555555").replace("2.55", "3.55").replace("United Kingdom", "France")
             .replace("WHITE HANGING HEART T-LIGHT HOLDER", "HEART HOLDER"))
    newcomer = "555556,22728,ALARM CLOCK,2,6/2/2011 9:45,4.25,12583.0,France\n"
    ingest_path(store, _csv(tmp_path, [moved, newcomer], "b.csv"))
    assert store.execute("SELECT user_id, country, time_zone FROM users ORDER BY 1").fetchall() == [
        ("or:12583", "France", "Europe/Paris"), ("or:17850", "United Kingdom", "Europe/London")]
    assert store.execute("SELECT name, price FROM items WHERE item_id = 'or:85123A'").fetchone() == (
        "WHITE HANGING HEART T-LIGHT HOLDER", 3.05)  # median of 2.55 and 3.55


def test_event_properties_hold_the_line_and_users_and_items_the_rest(store, tmp_path):
    ingest_path(store, _csv(tmp_path, [GOOD]))
    assert json.loads(store.scalar("SELECT properties FROM events")) == {
        "invoice": "536365", "quantity": 6, "unit_price": 2.55}


def test_migration_006_keeps_the_quarantine_rows_of_an_older_store(tmp_path):
    path = tmp_path / "old.duckdb"
    with Store(path) as old:
        old.execute("DELETE FROM schema_migrations WHERE name = '006_quarantine_without_key.sql'")
        old.execute("DROP TABLE quarantine")
        old.execute("""CREATE TABLE quarantine (source VARCHAR NOT NULL, file VARCHAR NOT NULL,
                       row_number BIGINT NOT NULL, reason VARCHAR NOT NULL, raw JSON,
                       quarantined_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (file, row_number))""")
        old.execute("INSERT INTO quarantine VALUES ('online_retail', 'f.csv', 2, 'why', '{}', now())")
    with Store(path) as migrated:
        assert migrated.execute("SELECT file, row_number, reason FROM quarantine").fetchall() == [("f.csv", 2, "why")]
        assert migrated.scalar("SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'quarantine' "
                               "AND constraint_type = 'PRIMARY KEY'") == 0


def test_parquet_rows_are_numbered_checked_and_identified_like_csv(store, tmp_path):
    rows = [GOOD] + [row for row, _ in MALFORMED] + [GOOD.replace("85123A", "71053")]
    csv = _csv(tmp_path, rows)
    parquet = tmp_path / "retail.parquet"
    duckdb.sql(f"COPY (SELECT * FROM read_csv('{csv}', all_varchar=true)) TO '{parquet}' (ROW_GROUP_SIZE 4)")
    ingest_path(store, parquet)
    with Store(":memory:") as other:
        ingest_path(other, csv)
        # a Parquet row number is the CSV line less the header's
        for sql in ("SELECT row_number - {header}, reason, raw FROM quarantine ORDER BY row_number",
                    "SELECT event_id, ts, properties FROM events ORDER BY event_id"):
            assert store.execute(sql.format(header=0)).fetchall() == other.execute(sql.format(header=1)).fetchall()
    assert [r[0] for r in store.execute("SELECT row_number FROM quarantine ORDER BY 1").fetchall()] == list(
        range(2, len(MALFORMED) + 2))


def test_a_file_changed_in_place_keeps_its_first_quarantine_rows(store, tmp_path):
    path = _csv(tmp_path, [GOOD, MALFORMED[0][0]])
    ingest_path(store, path)
    _csv(tmp_path, [GOOD.replace("85123A", "71053"), MALFORMED[2][0]])
    report = ingest_path(store, path)
    assert (report.events_loaded, report.rows_quarantined) == (1, 1)
    assert store.execute("SELECT row_number, reason FROM quarantine").fetchall() == [(3, MALFORMED[0][1])]


def test_a_failure_leaves_the_store_as_it_was(store, tmp_path, monkeypatch):
    def broken_derive(con, file_events, first_load):
        con.execute("SELECT * FROM no_such_table")

    broken = dataclasses.replace(MAPPINGS["online_retail"], derive=broken_derive)
    monkeypatch.setitem(MAPPINGS, "online_retail", broken)
    with pytest.raises(StoreError, match="no_such_table"):
        ingest_path(store, _csv(tmp_path, [GOOD, MALFORMED[0][0]]))
    assert [store.count(t) for t in ("events", "quarantine", "users", "items", "ingested_files")] == [0] * 5
    assert store.scalar("SELECT count(*) FROM duckdb_tables() WHERE temporary") == 0


def test_users_get_a_time_zone_from_their_country_and_items_a_kind(store, tmp_path):
    rows = [GOOD, "536370,22728,ALARM CLOCK BAKELIKE PINK,24,12/1/2010 8:45,3.75,12583.0,France",
            "536371,22728,ALARM CLOCK BAKELIKE PINK,2,12/1/2010 9:45,4.25,12583.0,France",
            "536372,22728A,ALARM CLOCK BAKELIKE RED,2,12/1/2010 9:45,4.25,12583.0,France"]
    ingest_path(store, _csv(tmp_path, rows))
    assert dict(store.execute("SELECT user_id, time_zone FROM users").fetchall()) == {
        "or:17850": "Europe/London", "or:12583": "Europe/Paris"}
    items = {r[0]: r[1:] for r in store.execute("SELECT item_id, name, category, price FROM items").fetchall()}
    assert items["or:22728"] == ("ALARM CLOCK BAKELIKE PINK", "or:22728", 4.0)
    assert items["or:22728A"][1] == "or:22728"  # colour variants share a kind


@pytest.mark.parametrize("prices", [[2.55], [3.75, 4.25], [1.0, 2.0, 2.0, 5.0], [0.1, 0.2, 0.7], [4.95] * 3 + [0.85] * 2,
                                    [1.65, 0.42, 2.1, 0.42, 0.42, 9.95, 1.25, 2.1]])
def test_an_items_price_is_the_median_of_its_purchase_lines(store, tmp_path, prices):
    rows = [f"5{i:05d},22728,ALARM CLOCK,2,12/1/2010 9:45,{p},12583.0,France" for i, p in enumerate(prices)]
    rows.append("C599999,22728,ALARM CLOCK,-1,12/2/2010 9:45,99.0,12583.0,France")  # a cancellation: not a sale
    ingest_path(store, _csv(tmp_path, rows))
    expected = store.scalar(f"SELECT median(p) FROM unnest({prices}::DOUBLE[]) t(p)")  # over all lines
    assert store.scalar("SELECT price FROM items WHERE item_id = 'or:22728'") == expected


def test_an_item_only_ever_cancelled_is_an_item_without_a_price(store, tmp_path):
    ingest_path(store, _csv(tmp_path, [GOOD, "C536379,22556,PLASTERS IN TIN,-5,12/1/2010 9:41,1.65,14527.0,UK"]))
    assert store.execute("SELECT name, price FROM items WHERE item_id = 'or:22556'").fetchone() == (
        "PLASTERS IN TIN", None)


def test_ingest_leaves_the_connections_row_order_setting_as_it_found_it(store, tmp_path):
    store.execute("SET preserve_insertion_order = true")
    ingest_path(store, _csv(tmp_path, [GOOD], "a.csv"))
    assert store.scalar("SELECT current_setting('preserve_insertion_order')") is True
    store.execute("SET preserve_insertion_order = false")
    ingest_path(store, _csv(tmp_path, [GOOD.replace("85123A", "71053")], "b.csv"))
    assert store.scalar("SELECT current_setting('preserve_insertion_order')") is False


CANONICAL_BAD = [
    ({"user_id": "", "event_type": "click", "ts": "2024-01-01T10:00:00Z"}, "missing user: user_id is empty"),
    ({"user_id": "u1", "event_type": "teleport", "ts": "2024-01-01T10:00:00Z"}, 'unknown event type "teleport"'),
    ({"user_id": "u1", "event_type": "click", "ts": "last tuesday"}, "unparseable time: ts"),
    ({"user_id": "u1", "event_type": None, "ts": "2024-01-01T10:00:00Z"}, "missing event_type"),
]


@pytest.mark.parametrize(("row", "reason"), CANONICAL_BAD)
def test_canonical_jsonl_quarantines_contract_breaks(store, tmp_path, row, reason):
    good = {"user_id": "u1", "item_id": "sku-1", "event_type": "purchase", "ts": "2024-01-01T10:00:00+02:00",
            "properties": {"quantity": 1}}
    p = tmp_path / "events.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in (good, row, good | {"item_id": "sku-2"})) + "\n")
    report = ingest_path(store, p)
    assert (report.events_loaded, report.reasons) == (2, {reason: 1})
    assert store.scalar("SELECT hour(ts) FROM events LIMIT 1") == 8


def test_a_repeated_given_event_id_is_one_event(store, tmp_path):
    row = {"user_id": "u1", "event_type": "click", "ts": "2024-01-01T10:00:00Z", "event_id": "x1"}
    p = tmp_path / "events.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in (row, row | {"item_id": "sku-9"})) + "\n")
    report = ingest_path(store, p)
    assert (report.events_loaded, report.events_duplicate) == (1, 1)
    assert store.scalar("SELECT item_id FROM events") is None  # the first arrival is kept


def test_a_repeated_open_bandit_impression_is_one_event(store, tmp_path):
    header, first = (DATA / "open_bandit" / "random" / "all.csv").read_text().splitlines()[:2]
    p = tmp_path / "random" / "all.csv"
    p.parent.mkdir()
    p.write_text("\n".join((header, first, first)) + "\n")
    report = ingest_path(store, p)
    assert (report.rows_read, report.events_loaded, report.events_duplicate) == (2, 1, 1)


def test_open_bandit_rows_become_impressions_and_clicks(store):
    report = ingest_path(store, DATA / "open_bandit" / "random" / "all.csv")
    counts = dict(store.execute("SELECT event_type, count(*) FROM events GROUP BY 1").fetchall())
    assert counts == {"impression": 10_000, "click": 38}
    assert report.rows_read == 10_000 and report.rows_quarantined == 0
    p = json.loads(store.scalar("SELECT properties FROM events WHERE event_type = 'click' LIMIT 1"))
    assert p["policy"] == "random" and p["click"] == 1 and 0 < p["propensity"] <= 1


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (None, {}, "no such file"),
        ("", {}, "input.csv is empty"),
        ("a,b\n1,2\n", {}, "no built-in mapping fits the columns a, b"),
        (HEADER + GOOD, {"mapping": "open_bandit"}, "the file's columns do not fit mapping 'open_bandit'"),
        (HEADER + GOOD, {"mapping": "nope"}, "unknown mapping 'nope'"),
        (HEADER + GOOD, {"fmt": "xml"}, "unknown format 'xml'"),
    ],
)
def test_unusable_files_get_a_clear_error(store, tmp_path, content, kwargs, message):
    path = tmp_path / "input.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        ingest_path(store, path, **kwargs)
    assert store.count("events") == 0


def test_open_bandit_policy_comes_from_the_real_folder_and_copies_deduplicate(store, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(DATA / "open_bandit" / "random")
    first = ingest_path(store, "all.csv")          # a relative path: the folder still names the policy
    assert store.scalar("SELECT DISTINCT properties->>'policy' FROM events") == "random"
    copy = tmp_path / "elsewhere" / "log_plus.csv"  # the same log under a folder that names no policy
    copy.parent.mkdir()
    shutil.copy(DATA / "open_bandit" / "random" / "all.csv", copy)
    last = (DATA / "open_bandit" / "random" / "all.csv").read_text().rstrip("\n").rsplit("\n", 1)[1].split(",")
    last[1] = "2019-11-30 23:59:59.000001+00:00"   # one new impression, every column present
    with copy.open("a") as fh:
        fh.write(",".join(last) + "\n")
    second = ingest_path(store, copy)
    assert second.events_loaded == 1 and second.events_duplicate == first.events_loaded
    assert store.count("events") == first.events_loaded + 1


def test_csv_lines_duckdb_cannot_parse_are_quarantined_and_later_rows_keep_their_numbers(store, tmp_path):
    p = tmp_path / "ragged.csv"
    p.write_text("user_id,event_type,ts\n"
                 "u1,click,2024-01-01T00:00:00Z\n"
                 "u2,click,2024-01-01T00:00:00Z,extra,fields\n"   # line 3: two fields too many
                 "u3,teleport,2024-01-01T00:00:00Z\n"             # line 4: parses, breaks the contract
                 "u4,app_open,2024-01-01T00:00:00Z\n")
    report = ingest_path(store, p)
    assert report.events_loaded == 2 and report.rows_read == 4
    rows = store.execute("SELECT row_number, reason, raw->>'user_id' FROM quarantine ORDER BY 1").fetchall()
    assert rows == [(3, "unparseable CSV line: Expected Number of Columns: 3 Found: 4",
                     "u2,click,2024-01-01T00:00:00Z,extra,fields"),
                    (4, 'unknown event type "teleport"', "u3")]
    assert sorted(r[0] for r in store.execute("SELECT user_id FROM events").fetchall()) == ["u1", "u4"]


@pytest.mark.parametrize(("folders", "policy"), [(("random", "bts"), "bts"), (("bts", "x", "random"), "random"),
                                                 (("bts",), "bts"), (("random", "campaign"), "random")])
def test_the_folder_nearest_an_open_bandit_file_names_its_policy(store, tmp_path, folders, policy):
    """A workspace folder called 'random' must not turn the bts log inside it into random-policy impressions."""
    header, first = (DATA / "open_bandit" / "bts" / "all.csv").read_text().splitlines()[:2]
    path = tmp_path.joinpath(*folders, "all.csv")
    path.parent.mkdir(parents=True)
    path.write_text(header + "\n" + first + "\n")
    ingest_path(store, path)
    assert store.scalar("SELECT DISTINCT properties->>'policy' FROM events") == policy
