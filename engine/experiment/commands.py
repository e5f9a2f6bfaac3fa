"""``pushwise experiment analyze`` (per-arm readout of an experiment file) and ``experiment ope`` (off-policy
estimates of another copy or item policy on a campaign's own logged decisions), as tables or JSON."""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd

from engine.analytics.experiment import experiment_readout
from engine.config import Settings
from engine.experiment.reader import experiment_counts

__all__ = ["cmd_analyze", "cmd_ope", "format_readout", "register"]


def _num(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _pct(value: float) -> str:
    return "–" if _num(value) is None else f"{value:.2%}"


def _pp(value: float) -> str:
    return "–" if _num(value) is None else f"{value * 100:+.2f}"


def _p(value: float) -> str:
    # Doubles underflow to 0 far out in the tail; say so rather than print a p-value of 0.
    return "–" if _num(value) is None else ("<1e-16" if value < 1e-16 else f"{value:.3g}")


def format_readout(readout: pd.DataFrame, control: str, confidence: float) -> str:
    """The readout as a plain-text table: one block per outcome, one line per treatment arm."""
    level = f"{confidence:.0%}"
    lines = []
    for outcome, frame in readout.groupby("outcome", sort=False):
        first = frame.iloc[0]
        lines.append(f"outcome {outcome}: control {control!r} {int(first.control_successes):,} / "
                     f"{int(first.control_users):,} = {_pct(first.control_rate)}")
        lines.append(f"  {'arm':<20} {'n':>9} {'rate':>8}  {'diff (pp)':>9} {level + ' interval':>18}"
                     f"  {'relative':>9} {level + ' interval':>20}  {'p-value':>9}")
        for r in frame.itertuples(index=False):
            lines.append(
                f"  {r.arm:<20} {r.users:>9,} {_pct(r.rate):>8}  {_pp(r.difference):>9} "
                f"{'[' + _pp(r.diff_low) + ', ' + _pp(r.diff_high) + ']':>18}  {_pct(r.relative_uplift):>9} "
                f"{'[' + _pct(r.relative_low) + ', ' + _pct(r.relative_high) + ']':>20}  {_p(r.p_value):>9}")
    lines.append(f"diff: arm rate − control rate in percentage points, Newcombe {level} interval; "
                 "p-value: two-sided two-proportion z-test.")
    return "\n".join(lines)


def cmd_analyze(args: argparse.Namespace, settings: Settings) -> int:
    """Read the file, compare every arm with the control, print a table or JSON; exit 0."""
    del settings
    counts = experiment_counts(args.file, args.assignment, args.control, args.outcome)
    readout = experiment_readout(counts, args.control, confidence=args.confidence)
    if args.json:
        rows = [{k: (_num(v) if isinstance(v, float) else v) for k, v in row.items()}
                for row in readout.to_dict(orient="records")]
        print(json.dumps({"file": args.file, "assignment": args.assignment, "control": args.control,
                          "confidence": args.confidence, "comparisons": rows}, indent=2, default=int))
    else:
        print(format_readout(readout, args.control, args.confidence))
    return 0


def cmd_ope(args: argparse.Namespace, settings: Settings) -> int:
    """Estimate what ``--target`` would have got on a campaign's own sent decisions; exit 0."""
    import numpy as np

    from engine.experiment.offpolicy import estimate_campaign_policy
    from engine.store import open_reader

    con, origin = open_reader(settings.db_path)
    try:
        out = estimate_campaign_policy(con, args.campaign, args.target, np.random.default_rng(settings.seed),
                                       choice=args.choice, reward=args.reward, top_k=args.top_k, n_boot=args.n_boot)
    finally:
        con.close()
    if args.json:
        print(json.dumps({"campaign_id": out.campaign_id, "choice": out.choice, "target": out.target,
                          "reward": args.reward, "sends": out.n, "logged_policy": out.logged, "database": origin,
                          "estimates": {k: {"value": e.value, "ci": [e.low, e.high]}
                                        for k, e in out.estimates.items()},
                          "weights": None if out.weights is None else {
                              "mean": out.weights.mean, "ci": [out.weights.low, out.weights.high],
                              "max": out.weights.max, "unlogged_mass": out.weights.unlogged_mass,
                              "ok": out.weights.ok}}, indent=2))
        return 0
    counted = "sent decisions" if out.choice == "copy" else "decisions sent or skipped by [volume] for their item"
    print(f"campaign {out.campaign_id}: {out.n:,} {counted}; the logged policy's {args.reward} rate "
          f"{_pct(out.logged)}")
    per = "send" if out.choice == "copy" else "decision"
    print(f"target {out.target!r} ({out.choice}), estimated {args.reward} rate per {per}:")
    for name, e in out.estimates.items():
        print(f"  {name:<6} {_pct(e.value):>8}  95% interval [{_pct(e.low)}, {_pct(e.high)}]")
    if out.weights is not None:
        print(out.weights.describe())
    print("ipw: inverse propensity weighting; snipw: self-normalised; dm: direct method (shrunk per-action "
          "rates); dr: doubly robust. Intervals: bootstrap over decisions.")
    return 0


def register(add) -> None:
    """Add ``experiment analyze`` to the ``pushwise`` command line."""
    sp = add("experiment", None, "randomized-experiment readouts")
    sub = sp.add_subparsers(dest="experiment_command", required=True, metavar="ACTION")
    an = sub.add_parser("analyze", help="compare every arm of an experiment file with its control",
                        description="Per treatment arm against control: rates, absolute and relative uplift "
                                    "with intervals and a p-value, for each binary outcome column.")
    an.set_defaults(func=cmd_analyze)
    an.add_argument("file", help="CSV or Parquet file, one row per randomised unit")
    an.add_argument("--assignment", required=True, metavar="COL", help="column holding each unit's arm")
    an.add_argument("--control", required=True, metavar="VALUE", help="the control arm's value")
    an.add_argument("--outcome", required=True, action="append", metavar="COL",
                    help="binary (0/1) outcome column; repeat for several")
    an.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    an.add_argument("--json", action="store_true", help="print machine-readable JSON")
    op = sub.add_parser("ope", help="what another copy or item policy would have got on a campaign's own logs",
                        description="Off-policy estimates (IPW, SNIPW, DM, DR with bootstrap intervals) of a "
                                    "target policy from the propensities a campaign's decisions logged.")
    op.set_defaults(func=cmd_ope)
    op.add_argument("campaign", help="campaign id (decisions.campaign_id)")
    op.add_argument("--target", required=True,
                    help="copy: 'uniform' or 'always:<template_id>'; item: 'greedy' or 'epsilon:<e>'")
    op.add_argument("--choice", choices=["copy", "item"], default="copy", help="which decision to re-play")
    op.add_argument("--reward", choices=["clicked", "opened"], default="clicked")
    op.add_argument("--top-k", type=int, default=None,
                    help="ranks the item policy drew from (default: its top_k, read from decisions.policy)")
    op.add_argument("--n-boot", type=int, default=500, help="bootstrap resamples")
    op.add_argument("--json", action="store_true", help="print machine-readable JSON")
