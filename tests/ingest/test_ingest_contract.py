"""The canonical events contract of README Data flow §1, from CSV, Parquet and JSON lines, and the --db guard."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from engine.cli import main
from engine.clock import FixedClock
from engine.ingest import ingest_path
from tests.conftest import DATA

NOW = FixedClock(datetime(2026, 12, 4, 12, 0, tzinfo=UTC))
HEADER = "user_id,event_type,ts,item_id,properties\n"
GOOD = 'u1,purchase,2024-01-01T10:00:00Z,sku-1,"{""quantity"": 2}"\n'
LATER = 'u2,view,2024-01-02T10:00:00Z,sku-2,\n'

# (CSV line, exact quarantine reason) — each line breaks the canonical contract in one way
CANONICAL_MALFORMED = [
    ('u1,purchase,2024-01-01T10:00:00Z,sku-1,"{""quantity"": 2"', "properties is not a JSON object"),
    ('u1,purchase,2024-01-01T10:00:00Z,sku-1,"[1, 2]"', "properties is not a JSON object"),
    ("u1,purchase,2024-01-01T10:00:00Z,sku-1,quantity=2", "properties is not a JSON object"),
    ("u1,purchase,2024-01-01T10:00:00Z,sku-1,42", "properties is not a JSON object"),
    ('u1,purchase,2024-01-01T10:00:00Z,sku-1,"{""quantity"": -3}"', "negative quantity for a purchase"),
    ("u1,view,2031-01-01T00:00:00Z,sku-1,", "timestamp in the future"),
    ("u1,view,2026-12-05T12:00:01Z,sku-1,", "timestamp in the future"),  # a day and a second after now
    ("u1,view,,sku-1,", "missing timestamp"),
    ("u1,view,last tuesday,sku-1,", "unparseable time: ts"),
    ("u1,teleport,2024-01-01T10:00:00Z,sku-1,", 'unknown event type "teleport"'),
    ("u1,\x1b[31mred" + "x" * 60 + ",2024-01-01T10:00:00Z,sku-1,", 'unknown event type "?[31mred' + "x" * 32 + '…"'),
]


def _csv(tmp_path: Path, lines: list[str], name: str = "events.csv") -> Path:
    p = tmp_path / name
    p.write_text(HEADER + "".join(line if line.endswith("\n") else line + "\n" for line in lines))
    return p


def _parquet(csv: Path) -> Path:
    out = csv.with_suffix(".parquet")
    duckdb.sql(f"COPY (SELECT * FROM read_csv('{csv}', all_varchar=true)) TO '{out}'")
    return out


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize(("line", "reason"), CANONICAL_MALFORMED)
def test_each_canonical_contract_break_is_quarantined_with_its_exact_reason(store, tmp_path, fmt, line, reason):
    path = _csv(tmp_path, [GOOD, line, LATER])
    if fmt == "parquet":
        path = _parquet(path)
    report = ingest_path(store, path, clock=NOW)
    assert (report.events_loaded, report.reasons) == (2, {reason: 1})
    # CSV: the file line (the header is line 1); Parquet: the 1-based row
    assert store.execute("SELECT row_number, reason FROM quarantine").fetchall() == [(3 if fmt == "csv" else 2, reason)]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_canonical_text_properties_are_stored_as_json_objects(store, tmp_path, fmt):
    path = _csv(tmp_path, [GOOD, LATER])
    if fmt == "parquet":
        path = _parquet(path)
    ingest_path(store, path, clock=NOW)
    rows = store.execute("SELECT user_id, properties->>'quantity', json_type(properties) FROM events ORDER BY 1")
    assert rows.fetchall() == [("u1", "2", "OBJECT"), ("u2", None, None)]


def test_a_purchase_with_zero_quantity_and_a_cancellation_with_a_negative_one_land(store, tmp_path):
    path = _csv(tmp_path, ['u1,purchase,2024-01-01T10:00:00Z,sku-1,"{""quantity"": 0}"',
                           'u1,cancellation,2024-01-01T10:00:00Z,sku-1,"{""quantity"": -1}"'])
    assert ingest_path(store, path, clock=NOW).events_loaded == 2


# (JSON line, exact quarantine reason) — the parser's own reason for a line it cannot read
JSONL_MALFORMED = [
    ('{"user_id": "u9", "event_type": "click", "ts": ', "unparseable JSON line: Malformed JSON at byte 47 of input: "
                                                       "unexpected end of data."),
    ("not json", "unparseable JSON line: Malformed JSON at byte 0 of input: invalid literal."),
    ("[1, 2]", "JSON line is not an object"),
    ('{"user_id": "u9", "event_type": "click", "ts": "2024-01-01T10:00:00Z", "properties": [1]}',
     "properties is not a JSON object"),
]


@pytest.mark.parametrize(("line", "reason"), JSONL_MALFORMED)
def test_a_bad_json_line_is_quarantined_at_its_line_and_the_good_lines_land(store, tmp_path, line, reason):
    good = {"user_id": "u1", "event_type": "purchase", "ts": "2024-01-01T10:00:00Z", "properties": {"quantity": 1}}
    p = tmp_path / "events.jsonl"
    # a blank line and a CRLF still count as lines: the bad one is line 4
    p.write_text(json.dumps(good) + "\r\n\n" + json.dumps(good | {"user_id": "u2"}) + "\n" + line + "\n"
                 + json.dumps(good | {"user_id": "u3"}) + "\n")
    report = ingest_path(store, p, clock=NOW)
    assert (report.rows_read, report.events_loaded, report.reasons) == (4, 3, {reason: 1})
    assert store.execute("SELECT row_number, reason, raw FROM quarantine").fetchall()[0][:2] == (4, reason)
    assert store.scalar("SELECT count(*) FROM events WHERE properties->>'quantity' = '1'") == 3


def test_the_same_bad_rows_of_a_grown_file_are_quarantined_once(store, tmp_path):
    bad = ["u1,teleport,2024-01-01T10:00:00Z,sku-1,", "u1,view,,sku-1,"]
    ingest_path(store, _csv(tmp_path, [GOOD, *bad], "day1.csv"), clock=NOW)
    grown = ingest_path(store, _csv(tmp_path, [GOOD, *bad, LATER, bad[0]], "day1-2.csv"), clock=NOW)
    assert grown.rows_quarantined == 3  # the file's bad rows
    # the repeated bad line is a second bad row of the file, so it is new; the first two are not
    assert store.execute("SELECT file, row_number FROM quarantine ORDER BY 1, 2").fetchall() == [
        (str(tmp_path / "day1-2.csv"), 6), (str(tmp_path / "day1.csv"), 3), (str(tmp_path / "day1.csv"), 4)]


def test_two_identical_bad_lines_of_one_file_are_two_quarantine_rows(store, tmp_path):
    bad = "u1,teleport,2024-01-01T10:00:00Z,sku-1,"
    ingest_path(store, _csv(tmp_path, [bad, bad]), clock=NOW)
    assert [r[0] for r in store.execute("SELECT row_number FROM quarantine ORDER BY 1").fetchall()] == [2, 3]


def test_the_summary_says_why_events_differ_from_good_rows(tmp_path, capsys):
    db = str(tmp_path / "p.duckdb")
    assert main(["--db", db, "ingest", str(DATA / "open_bandit" / "random" / "all.csv")]) == 0
    out = capsys.readouterr().out
    assert "10,000 rows read, 10,038 events loaded" in out
    assert "10,000 good rows gave 10,038 new events: 38 rows with a click gave a click event besides the impression" in out
    assert main(["--db", db, "ingest", str(_csv(tmp_path, [GOOD], "a.csv"))]) == 0
    assert "good rows gave" not in capsys.readouterr().out
    assert main(["--db", db, "ingest", str(_csv(tmp_path, [GOOD, LATER], "b.csv"))]) == 0  # GOOD again
    assert "2 good rows gave 1 new event: 1 duplicate skipped" in capsys.readouterr().out


def test_the_summary_is_silent_when_each_good_row_is_one_new_event(tmp_path, capsys):
    assert main(["--db", str(tmp_path / "p.duckdb"), "ingest", str(_csv(tmp_path, [GOOD, "u1,view,,x,"]))]) == 0
    assert "good rows gave" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("v.csv", None, "is not a DuckDB database path: .csv is a data file suffix; give a .duckdb path"),
        ("v.parquet", None, "is not a DuckDB database path: .parquet is a data file suffix; give a .duckdb path"),
        ("v.jsonl", None, "is not a DuckDB database path: .jsonl is a data file suffix; give a .duckdb path"),
        ("v.CSV.gz", None, "is not a DuckDB database path: .csv is a data file suffix; give a .duckdb path"),
        ("old.csv", HEADER + GOOD, "is not a DuckDB database path: .csv is a data file suffix; give a .duckdb path"),
        ("notes.duckdb", "not a database\n" * 4, "is not a DuckDB database file"),
    ],
)
def test_a_db_that_is_not_a_duckdb_file_is_refused_in_one_line(tmp_path, capsys, name, content, message):
    db = tmp_path / "ext" / name
    if content is not None:
        db.parent.mkdir()
        db.write_text(content)
    assert main(["--db", str(db), "ingest", str(_csv(tmp_path, [GOOD]))]) == 3
    captured = capsys.readouterr()
    assert captured.err == f"pushwise: error: {db} {message}\n" and captured.out == ""
    assert db.exists() == (content is not None)
    if content is not None:
        assert db.read_text() == content


def test_a_compressed_json_lines_file_is_read_whole_and_a_null_properties_is_absent(store, tmp_path):
    import gzip

    good = {"user_id": "u1", "event_type": "click", "ts": "2024-01-01T10:00:00Z"}
    p = tmp_path / "events.jsonl.gz"
    p.write_bytes(gzip.compress((json.dumps(good | {"properties": None}) + "\n"
                                 + json.dumps(good | {"properties": {"k": "v"}}) + "\n").encode()))
    report = ingest_path(store, p, clock=NOW)
    assert (report.rows_read, report.events_loaded, report.rows_quarantined) == (2, 2, 0)
    assert sorted(str(r[0]) for r in store.execute("SELECT properties->>'k' FROM events").fetchall()) == ["None", "v"]
