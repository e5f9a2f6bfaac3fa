"""Ingest throughput: `pushwise ingest` vs DuckDB's bare CREATE TABLE AS SELECT on the same file.

Online Retail is replicated (each copy with its own invoice numbers, so nothing deduplicates away) to
at least 5 million rows in one Parquet file. Both runs write a fresh on-disk DuckDB database.

    .venv/bin/python benchmarks/ingest.py [--copies 10] [--repeat 3]

Prints both rates and the ratio; writes reports/bench-ingest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.ingest import ingest_path  # noqa: E402
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


def bare(path: Path, folder: Path, i: int) -> float:
    db = folder / f"bare{i}.duckdb"
    con = duckdb.connect(str(db))
    t = time.perf_counter()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{path}')")
    con.execute("CHECKPOINT")
    elapsed = time.perf_counter() - t
    con.close()
    return elapsed


def ours(path: Path, folder: Path, i: int) -> tuple[float, object]:
    store = Store(folder / f"pushwise{i}.duckdb")
    t = time.perf_counter()
    report = ingest_path(store, path)
    store.execute("CHECKPOINT")
    elapsed = time.perf_counter() - t
    store.close()
    return elapsed, report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path, rows = make_file(folder, args.copies)
        bare_s, ours_s = [], []
        report = None
        for i in range(args.repeat):  # interleaved, so both see the same machine state
            bare_s.append(bare(path, folder, i))
            elapsed, report = ours(path, folder, i)
            ours_s.append(elapsed)
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
        "baseline": "duckdb CREATE TABLE AS SELECT * FROM read_parquet (same file, fresh on-disk db)",
        "duckdb": duckdb.__version__,
        "python": platform.python_version(),
    }
    out = REPO / "reports" / "bench-ingest.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"rows {rows:,}: bare CTAS {result['bare_rows_per_s']:,} rows/s, "
          f"pushwise ingest {result['pushwise_rows_per_s']:,} rows/s, ratio {result['ratio']}")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
