"""Ingest throughput: `pushwise ingest` vs DuckDB's bare CREATE TABLE AS SELECT on the same file.

Online Retail is replicated (each copy with its own invoice numbers, so nothing deduplicates away) to
at least 5 million rows in one Parquet file. Both runs write a fresh on-disk DuckDB database.

    .venv/bin/python benchmarks/ingest.py [--copies 10] [--repeat 3] [--profile] [--breakdown]

Prints both rates and the ratio; writes reports/bench-ingest.json. The ratio is of wall-clock
medians; the process CPU seconds are recorded too, because on a shared machine they move less than
wall time. ``--profile`` also prints the wall and CPU seconds of every SQL statement of the last
pushwise run. ``--breakdown`` runs pushwise once more per part of the Online Retail events that it
replaces by a constant (the md5 event ids, the JSON properties) and prints what each part costs;
docs/decisions/012-ingest-throughput.md reads these numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.ingest import MAPPINGS, ingest_path  # noqa: E402
from engine.store import Store  # noqa: E402

SOURCE = REPO / "data" / "online_retail" / "online_retail.parquet"


def make_file(folder: Path, copies: int) -> tuple[Path, int]:
    out = folder / "online_retail_x.parquet"
    con = duckdb.connect()
    con.execute(f"""
        COPY (
            SELECT CASE WHEN InvoiceNo LIKE 'C%' THEN 'C' || k || substr(InvoiceNo, 2) ELSE k || InvoiceNo END
                       AS InvoiceNo,
                   StockCode, Description, Quantity, InvoiceDate, UnitPrice, CustomerID, Country
            FROM read_parquet('{SOURCE}'), range({copies}) r(k)
        ) TO '{out}' (FORMAT parquet, ROW_GROUP_SIZE 122880)""")
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
    return out, rows


def _cpu() -> float:
    """CPU seconds of this process so far, all DuckDB threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare(path: Path, folder: Path, i: int) -> tuple[float, float]:
    db = folder / f"bare{i}.duckdb"
    con = duckdb.connect(str(db))
    t, c = time.perf_counter(), _cpu()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{path}')")
    con.execute("CHECKPOINT")
    elapsed, cpu = time.perf_counter() - t, _cpu() - c
    con.close()
    return elapsed, cpu


class StatementTimer:
    """Stands in for a store's DuckDB connection and records each statement's wall and CPU seconds."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self.rows: list[tuple[float, float, str]] = []

    def execute(self, sql: str, params: object = None):
        wall, cpu = time.perf_counter(), _cpu()
        result = self._con.execute(sql, params) if params is not None else self._con.execute(sql)
        self.rows.append((time.perf_counter() - wall, _cpu() - cpu, " ".join(sql.split())))
        return result

    def __getattr__(self, name: str):
        return getattr(self._con, name)

    def print(self) -> None:
        print(f"{'wall s':>8} {'cpu s':>8}  statement")
        for wall, cpu, sql in self.rows:
            label = re.sub(r"'[^']{40,}'", "'…'", sql)
            print(f"{wall:8.3f} {cpu:8.3f}  {label[:110]}")
        print(f"{sum(r[0] for r in self.rows):8.3f} {sum(r[1] for r in self.rows):8.3f}  total")


def ours(path: Path, folder: Path, i: int, timer: bool = False) -> tuple[float, float, object]:
    store = Store(folder / f"pushwise{i}.duckdb")
    if timer:
        store.con = StatementTimer(store.con)  # type: ignore[assignment]
    t, c = time.perf_counter(), _cpu()
    report = ingest_path(store, path)
    store.execute("CHECKPOINT")
    elapsed, cpu = time.perf_counter() - t, _cpu() - c
    if timer:
        store.con.print()  # type: ignore[attr-defined]
    store.close()
    return elapsed, cpu, report


def breakdown(path: Path, folder: Path, full_cpu: float) -> dict[str, float]:
    """CPU seconds that each expensive part of an Online Retail event costs (full run minus a run without it)."""
    mapping = MAPPINGS["online_retail"]
    props = "json_object('invoice', invoice, 'quantity', abs(quantity), 'unit_price', unit_price)"
    assert props in mapping.events_sql("x"), "the breakdown no longer matches the mapping's properties"
    without = {
        "event_id (md5 hex)": dataclasses.replace(mapping, event_id=lambda occurrence: "''"),
        "properties (JSON)": dataclasses.replace(
            mapping, events_sql=lambda good: mapping.events_sql(good).replace(props, "NULL::JSON")),
    }
    costs = {}
    try:
        for i, (part, variant) in enumerate(without.items()):
            MAPPINGS["online_retail"] = variant
            _, cpu, _ = ours(path, folder, 100 + i)
            costs[part] = round(full_cpu - cpu, 3)
    finally:
        MAPPINGS["online_retail"] = mapping
    return costs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="time every statement of the last pushwise run")
    ap.add_argument("--breakdown", action="store_true", help="CPU cost of the event ids and of the properties")
    args = ap.parse_args()
    parts: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path, rows = make_file(folder, args.copies)
        bare_s, ours_s, bare_cpu, ours_cpu = [], [], [], []
        report = None
        for i in range(args.repeat):  # interleaved, so both see the same machine state
            elapsed, cpu = bare(path, folder, i)
            bare_s.append(elapsed)
            bare_cpu.append(cpu)
            elapsed, cpu, report = ours(path, folder, i, timer=args.profile and i == args.repeat - 1)
            ours_s.append(elapsed)
            ours_cpu.append(cpu)
        if args.breakdown:
            parts = breakdown(path, folder, statistics.median(ours_cpu))
    b, o = statistics.median(bare_s), statistics.median(ours_s)
    result = {
        "rows": rows,
        "events_loaded": report.events_loaded,
        "rows_quarantined": report.rows_quarantined,
        "bare_rows_per_s": round(rows / b),
        "pushwise_rows_per_s": round(rows / o),
        "ratio": round(b / o, 3),
        "bare_seconds": [round(x, 3) for x in bare_s],
        "pushwise_seconds": [round(x, 3) for x in ours_s],
        "bare_cpu_seconds": [round(x, 3) for x in bare_cpu],
        "pushwise_cpu_seconds": [round(x, 3) for x in ours_cpu],
        "cpu_ratio": round(statistics.median(bare_cpu) / statistics.median(ours_cpu), 3),
        **({"pushwise_cpu_seconds_by_part": parts} if parts else {}),
        "baseline": "duckdb CREATE TABLE AS SELECT * FROM read_parquet (same file, fresh on-disk db)",
        "duckdb": duckdb.__version__,
        "python": platform.python_version(),
    }
    out = REPO / "reports" / "bench-ingest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"rows {rows:,}: bare CTAS {result['bare_rows_per_s']:,} rows/s, "
          f"pushwise ingest {result['pushwise_rows_per_s']:,} rows/s, ratio {result['ratio']}")
    print(f"process CPU: bare {statistics.median(bare_cpu):.2f} s, pushwise {statistics.median(ours_cpu):.2f} s, "
          f"ratio {result['cpu_ratio']}")
    for part, cost in parts.items():
        print(f"  of which {part}: {cost:.2f} CPU s")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
