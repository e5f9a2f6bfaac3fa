"""A/A check of the holdout readout: re-plan the demo campaign under other ids (other hash splits).

Grounded conversions are real historical purchases, which sandbox pushes cannot cause, so every split
is an A/A test: about 5% of them should show p < 0.05. A much higher share would mean a bias in the
planner or the readout.

    .venv/bin/python benchmarks/aa_holdout.py --db data/pushwise.duckdb [--splits 12]

Works on a copy of the database (the original is not touched) with the models in --models.
Writes reports/aa-holdout.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.analytics import Filters, arm_outcomes, compare_arms  # noqa: E402
from engine.config import Settings  # noqa: E402
from engine.demo import demo_campaign_path, plan  # noqa: E402
from engine.schedule.campaign import parse_campaign  # noqa: E402
from engine.store import Store  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=str(REPO / "data" / "pushwise.duckdb"), help="a database `pushwise demo` made")
    ap.add_argument("--models", default=str(REPO / "models"))
    ap.add_argument("--splits", type=int, default=12)
    args = ap.parse_args()
    spec = tomllib.loads(demo_campaign_path().read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "aa.duckdb"
        shutil.copy(args.db, db)
        settings = Settings(db_path=str(db), models_dir=args.models)
        with Store(db) as store:
            for k in range(args.splits):
                s = copy.deepcopy(spec)
                s["id"] = f"aa-{k}"
                s["limits"]["frequency_cap"] = 1000   # every split judges the same users
                plan(store, settings, parse_campaign(s), None)
                c = compare_arms(arm_outcomes(store.con, Filters(campaign_id=s["id"])))
                r = c[c["outcome"] == "converted"].iloc[0]
                rows.append({"split": s["id"], "treatment_rate": round(float(r["treatment_rate"]), 4),
                             "holdout_rate": round(float(r["holdout_rate"]), 4),
                             "p_value": round(float(r["p_value"]), 4)})
                print(rows[-1], flush=True)
    low = sum(r["p_value"] < 0.05 for r in rows)
    result = {"splits": rows, "share_p_below_0_05": round(low / len(rows), 3), "expected_share": 0.05}
    out = REPO / "reports" / "aa-holdout.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{low} of {len(rows)} splits with p < 0.05 (expected about 5%); written to {out}")


if __name__ == "__main__":
    main()
