"""The ``pushwise evaluate`` subcommand."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.config import Settings

__all__ = ["register"]


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from engine.evaluation.report import write_reports
    from engine.evaluation.run import run_evaluation

    if getattr(args, "db", None):
        # every figure is on the shipped files, ingested into a temporary store: a database given here
        # would be silently unused, and its user would think their data had been evaluated
        print(f"pushwise evaluate: --db {args.db} is not used: evaluate ingests the shipped files of --data-dir "
              "into a temporary store of its own (your database is never read or written); drop --db",
              file=sys.stderr)
        return 2
    # With --json, stdout carries only the report (the keys of evaluation.json); progress goes to stderr.
    def say(message: str) -> None:
        print(message, file=sys.stderr if args.json else sys.stdout)

    ev = run_evaluation(Path(args.data_dir or settings.data_dir), fast=args.fast, seed=settings.seed, say=say)
    md, js = write_reports(ev, Path(args.out))
    say(f"wrote {md} and {js} in {sum(ev.seconds.values()):.0f} s")
    if args.json:
        print(js.read_text(encoding="utf-8"), end="")
    return 0


def register(add) -> None:
    p = add("evaluate", cmd_evaluate, "run every evaluation on the shipped data; write reports/evaluation.{md,json}")
    p.add_argument("--out", default="reports", help="folder for evaluation.md, evaluation.json and the plots")
    p.add_argument("--fast", action="store_true", help="a small deterministic slice (seconds, not headline numbers)")
    p.add_argument("--data-dir", default=None, help="folder with online_retail/ and open_bandit/ (default: settings)")
    p.epilog = "evaluate builds a temporary store from --data-dir; it never reads or writes --db"
