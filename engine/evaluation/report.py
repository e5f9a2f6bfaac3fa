"""Write an :class:`~engine.evaluation.run.Evaluation` as reports/evaluation.json (the issue's keys) and evaluation.md with PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from engine.evaluation.retail import MetricCI
from engine.evaluation.run import Evaluation

__all__ = ["evaluation_json", "write_reports"]

BASELINES = ("popularity", "repeat", "cooccurrence", "als")


def evaluation_json(ev: Evaluation) -> dict[str, Any]:
    """Exactly the keys issue 4 item 1 names."""
    rec, st, ope = ev.recommend, ev.send_time, ev.ope
    truth = ope.ground_truth.value
    return {
        "recommend": {"recall_at_10": rec.recall["model"].value, "ndcg_at_10": rec.ndcg["model"].value,
                      **{b: {"recall_at_10": rec.recall[b].value} for b in BASELINES}},
        "send_time": {"top1": st.top1["model"].value, "top3": st.top3["model"].value,
                      "baseline_global_top3": st.top3["global"].value, "baseline_last_top3": st.top3["last"].value},
        "ope": {**{name: {"estimate": e.value, "ci": [e.low, e.high], "relative_error": e.relative_error(truth)}
                   for name, e in ope.estimates.items()},
                "ground_truth": truth, "no_change": ope.no_change.value, "default_estimator": ope.default_estimator},
        "simulation": {"value": ev.simulation.value, "oracle": ev.simulation.oracle, "random": ev.simulation.random},
    }


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, through dicts and lists."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _ci(m: MetricCI, digits: int = 3) -> str:
    return f"{m.value:.{digits}f} [{m.low:.{digits}f}, {m.high:.{digits}f}]"


def _bars(path: Path, title: str, rows: dict[str, MetricCI], ref: float | None = None, ref_label: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    names = list(rows)
    vals = [rows[n].value for n in names]
    err = [[rows[n].value - rows[n].low for n in names], [rows[n].high - rows[n].value for n in names]]
    ax.bar(names, vals, yerr=err, capsize=4, color="#4c72b0")
    if ref is not None:
        ax.axhline(ref, color="#c44e52", linestyle="--", label=ref_label)
        ax.legend(loc="best", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(ev: Evaluation) -> str:
    rec, st, ope, cm, sim = ev.recommend, ev.send_time, ev.ope, ev.click_model, ev.simulation
    truth = ope.ground_truth.value
    out = ["# Pushwise evaluation", "",
           f"{'FAST SLICE (not the headline numbers). ' if ev.fast else ''}Every figure is on the shipped data, "
           "baselines computed in the same run; brackets are bootstrap 95 % intervals. "
           "Seconds per part: " + ", ".join(f"{k} {v:.0f}" for k, v in ev.seconds.items()) + ".", "",
           "## Recommendations (Online Retail, train < 2011-11-01, next 30 days)", "",
           f"{rec.n_users:,} customers active before and after; {rec.repeat_share:.0%} of their (customer, item) "
           "purchases are repeats. `model` is the served recommender: the `click` model trained by "
           "`train_click` as of the split, ranking the candidates of `rank_items` (the lists the planner's "
           f"policy draws from); {rec.candidate_coverage:.0%} of the judged purchases were among its candidates.",
           "", "![recall](evaluation-recommend.png)", "",
           "| method | Recall@10 | NDCG@10 | Recall@10, new items only |", "|---|---|---|---|"]
    for name in rec.recall:
        new = _ci(rec.new_recall[name]) if name in rec.new_recall else "—"
        out.append(f"| {name} | {_ci(rec.recall[name])} | {_ci(rec.ndcg[name])} | {new} |")
    als = rec.recall["als"].value
    model = rec.recall["model"].value
    met = "met" if model >= 0.19 and model >= 1.4 * als else "not met"
    out += ["", f"Goal Recall@10 ≥ 0.19 and ≥ 1.4× ALS ({met}): model {model:.3f} = {model / als:.2f}× ALS.", "",
            "## Send time (Online Retail, learn < 2011-09-01, every later invoice of a returning customer)", "",
            f"{st.n_invoices:,} invoices of {st.n_users:,} customers (an invoice sharing its customer and second "
            "with another counts once, as one engagement), in each customer's local time; intervals "
            "resample customers. `model` is the served `send_time` model (trained by `train_send_time` as of the "
            "split, scored by `hour_scores` with features frozen there) ranking the hours of the invoice's weekday. "
            "Its hour-of-day estimator, chosen on data before the split: " +
            ", ".join(f"{k} {v:g}" for k, v in st.hour_model.items()) + ".", "",
            "![send time](evaluation-send-time.png)", "",
            "| method | top-1 hour | top-3 hours |", "|---|---|---|"]
    for name in st.top1:
        out.append(f"| {name} | {_ci(st.top1[name])} | {_ci(st.top3[name])} |")
    top3 = st.top3["model"].value
    out += ["", f"Goal top-3 ≥ 0.46 ({'met' if top3 >= 0.46 else 'not met'}): model {top3:.3f}.", "",
            "Hour of week (168 slots), top-3 hit rate: " +
            ", ".join(f"{n} {_ci(m)}" for n, m in st.hour_of_week_top3.items()) + ".", "",
            "## Off-policy evaluation (Open Bandit \"all\": Bernoulli TS estimated from the random logs)", "",
            f"Truth (click rate in the bts logs): {_ci(MetricCI(truth, ope.ground_truth.low, ope.ground_truth.high), 4)}; "
            f"no change (the random logs' own rate): {_ci(MetricCI(ope.no_change.value, ope.no_change.low, ope.no_change.high), 4)}, "
            f"relative error {ope.no_change.relative_error(truth):.3f}. Default estimator: **{ope.default_estimator}**.", "",
            *([f"Weights: {ope.weights.describe()}.", ""] if ope.weights is not None else []),
            "![ope](evaluation-ope.png)", "",
            "| estimator | estimate [95 %] | relative error | interval covers truth |", "|---|---|---|---|"]
    for name, e in {**ope.estimates, "ipw, naive averaged propensities": ope.naive_ipw}.items():
        out.append(f"| {name} | {_ci(MetricCI(e.value, e.low, e.high), 4)} | {e.relative_error(truth):.3f} | "
                   f"{'yes' if e.covers(truth) else 'no'} |")
    m = cm.metrics
    out += ["", "## Click model on Open Bandit (LightGBM, 70/30 time split)", "",
            f"{int(m['n_eval']):,} test impressions with {int(m['eval_clicks'])} clicks: read the intervals.", "",
            "| predictor | AUC | log loss |", "|---|---|---|",
            f"| model | {m['auc']:.3f} [{m['auc_low']:.3f}, {m['auc_high']:.3f}] | "
            f"{m['log_loss']:.4f} [{m['log_loss_low']:.4f}, {m['log_loss_high']:.4f}] |"]
    for name, b in cm.baselines.items():
        out.append(f"| {name} | {b['auc']:.3f} [{b['auc_low']:.3f}, {b['auc_high']:.3f}] | "
                   f"{b['log_loss']:.4f} [{b['log_loss_low']:.4f}, {b['log_loss_high']:.4f}] |")
    c = cm.calibration
    out += ["", f"Calibration: observed / expected clicks = {c['observed_over_expected']:.2f} "
            f"[{c['low']:.2f}, {c['high']:.2f}] (mean predicted {c['mean_predicted']:.4f}, observed {c['observed_rate']:.4f}).",
            "", "| predicted-probability quintile | mean predicted | observed rate | impressions |", "|---|---|---|---|"]
    for r in cm.reliability.itertuples():
        out.append(f"| {int(r.bin) + 1} | {r.predicted:.4f} | {r.observed:.4f} | {int(r.n):,} |")
    out += ["", "## Known truth (seeded simulation)", "",
            f"{sim.n_users:,} users, {sim.n_logged:,} logged random pushes; expected clicks per user:", "",
            "| plan | expected clicks / user | share of oracle |", "|---|---|---|",
            f"| pipeline (train → greedy plan) | {sim.value:.4f} | {sim.share_of_oracle:.1%} |",
            f"| oracle | {sim.oracle:.4f} | 100% |", f"| random | {sim.random:.4f} | {sim.random / sim.oracle:.1%} |", ""]
    return "\n".join(out)


def write_reports(ev: Evaluation, out_dir: Path) -> tuple[Path, Path]:
    """Write ``evaluation.json``, ``evaluation.md`` and its PNG plots into ``out_dir``; returns (md, json)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _bars(out_dir / "evaluation-recommend.png", "Recall@10 (95 % CI)", ev.recommend.recall, 0.19, "goal 0.19")
    _bars(out_dir / "evaluation-send-time.png", "top-3 hour hit rate (95 % CI)", ev.send_time.top3, 0.46, "goal 0.46")
    ope = {n: MetricCI(e.value, e.low, e.high) for n, e in ev.ope.estimates.items()}
    ope["no change"] = MetricCI(ev.ope.no_change.value, ev.ope.no_change.low, ev.ope.no_change.high)
    _bars(out_dir / "evaluation-ope.png", "bts click rate estimated from random logs", ope,
          ev.ope.ground_truth.value, "truth (bts logs)")
    md, js = out_dir / "evaluation.md", out_dir / "evaluation.json"
    md.write_text(_markdown(ev), encoding="utf-8")
    # NaN (e.g. a relative error against a truth of 0) is not JSON: it is written as null.
    js.write_text(json.dumps(_finite(evaluation_json(ev)), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return md, js
