"""Altair charts for the dashboard: pure functions from analytics frames to chart specs (no I/O)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from engine.analytics import STAGES, WEEKDAYS

__all__ = ["arm_rates", "calibration", "daily_outcomes", "funnel_bars", "funnel_lines", "heatmap", "is_replay",
           "metric_history", "simulated_banner", "stacked_states", "uplift_intervals", "uplift_reading"]


def funnel_bars(funnel: pd.DataFrame) -> alt.Chart:
    """Bars per stage, the part resting only on simulated events drawn in its own colour."""
    parts = pd.concat([
        funnel.assign(evidence="observed", n=funnel["count"] - funnel["simulated"]),
        funnel.assign(evidence="simulated", n=funnel["simulated"]),
    ])[["stage", "evidence", "n"]]
    return alt.Chart(parts).mark_bar().encode(
        x=alt.X("stage:N", sort=list(STAGES), title=None),
        y=alt.Y("n:Q", title="sends"),
        color=alt.Color("evidence:N", scale=alt.Scale(domain=["observed", "simulated"],
                                                      range=["#4c78a8", "#f58518"]), title=None),
        tooltip=["stage", "evidence", "n"],
    )


def funnel_lines(by_group: pd.DataFrame, group: str, label: str) -> alt.Chart:
    """Share of planned sends reaching each stage, one line per group."""
    frame = by_group.assign(**{label: by_group[group].astype(str)})
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("stage:N", sort=list(STAGES), title=None),
        y=alt.Y("rate_planned:Q", axis=alt.Axis(format="%"), title="of planned"),
        color=alt.Color(f"{label}:N"),
        tooltip=[label, "stage", "count", alt.Tooltip("rate_planned:Q", format=".1%")],
    )


def arm_rates(arms: pd.DataFrame) -> alt.LayerChart:
    """Rate per arm with its Wilson 95% interval as an error bar."""
    base = alt.Chart(arms).encode(x=alt.X("arm:N", sort=["treatment", "holdout"], title=None))
    bars = base.mark_errorbar(ticks=True).encode(
        y=alt.Y("ci_low:Q", axis=alt.Axis(format="%"), title="rate (95% interval)"), y2="ci_high:Q")
    points = base.mark_point(filled=True, size=90).encode(
        y="rate:Q", color=alt.Color("arm:N", legend=None),
        tooltip=["arm", "users", "conversions", alt.Tooltip("rate:Q", format=".2%"),
                 alt.Tooltip("ci_low:Q", format=".2%"), alt.Tooltip("ci_high:Q", format=".2%")])
    return bars + points


def stacked_states(outcomes: pd.DataFrame) -> alt.Chart:
    """Sends per vendor, stacked by outbox state."""
    return alt.Chart(outcomes).mark_bar().encode(
        x=alt.X("vendor:N", title=None), y=alt.Y("sum(sends):Q", title="sends"),
        color=alt.Color("state:N"), tooltip=["vendor", "state", "outcome", "sends"],
    )


def daily_outcomes(daily: pd.DataFrame) -> alt.Chart:
    """Vendor answers per day, stacked by outcome, one column of panels per vendor."""
    return alt.Chart(daily).mark_bar().encode(
        x=alt.X("day:T", title=None), y=alt.Y("sum(attempts):Q", title="attempts"),
        color=alt.Color("outcome:N"), column=alt.Column("vendor:N", title=None),
        tooltip=["day:T", "vendor", "outcome", "status_code", "attempts", "retries"],
    )


def uplift_intervals(readout: pd.DataFrame) -> alt.LayerChart:
    """Difference (arm − control) per outcome with its 95% interval, and a zero line."""
    base = alt.Chart(readout).encode(y=alt.Y("outcome:N", title=None))
    bars = base.mark_errorbar(ticks=True).encode(
        x=alt.X("diff_low:Q", axis=alt.Axis(format="+%"), title="treatment − holdout (95% interval)"),
        x2="diff_high:Q")
    points = base.mark_point(filled=True, size=90).encode(
        x="difference:Q", tooltip=["outcome", alt.Tooltip("difference:Q", format="+.2%"),
                                   alt.Tooltip("p_value:Q", format=".3g")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    return bars + points + zero


def metric_history(metrics: pd.DataFrame, metric: str) -> alt.Chart:
    """One metric of one model over training time, a point per version (visible even for a single run)."""
    return alt.Chart(metrics).mark_line(point=alt.OverlayMarkDef(size=80)).encode(
        x=alt.X("trained_at:T", title="trained at (UTC)"), y=alt.Y("value:Q", title=metric),
        tooltip=["version", "trained_at:T", alt.Tooltip("value:Q", format=".4f")],
    )


def calibration(cells: pd.DataFrame) -> alt.LayerChart:
    """Observed click rate (with Wilson interval) against mean predicted score per bin; the diagonal is perfect."""
    top = float(max(cells["ci_high"].max(), cells["mean_score"].max(), 0.01))
    diagonal = alt.Chart(pd.DataFrame({"p": [0.0, top]})).mark_line(strokeDash=[4, 4], color="grey").encode(
        x="p:Q", y="p:Q")
    base = alt.Chart(cells).encode(x=alt.X("mean_score:Q", title="mean predicted score"))
    bars = base.mark_errorbar().encode(y=alt.Y("ci_low:Q", title="observed click rate"), y2="ci_high:Q")
    points = base.mark_point(filled=True).encode(y="click_rate:Q", tooltip=["bin", "sends", "clicks", "mean_score"])
    return diagonal + bars + points


def heatmap(cells: pd.DataFrame, value: str, title: str, fmt: str) -> alt.Chart:
    """Local weekday × hour grid coloured by ``value``."""
    return alt.Chart(cells).mark_rect().encode(
        x=alt.X("hour:O", title="local hour", scale=alt.Scale(domain=list(range(24)))),
        y=alt.Y("weekday_name:N", sort=list(WEEKDAYS), title=None, scale=alt.Scale(domain=list(WEEKDAYS))),
        color=alt.Color(f"{value}:Q", title=title, legend=alt.Legend(format=fmt)),
        tooltip=["weekday_name", "hour", "sends", "opens", "simulated_opens",
                 alt.Tooltip("open_rate:Q", format=".1%")],
    )


def is_replay(summary: pd.DataFrame) -> bool:
    """Whether the store's devices are simulated: pushes went to sandboxes over a replay of real history."""
    return any(row.kind == "devices" and int(row.simulated) > 0 for row in summary.itertuples(index=False))


def simulated_banner(summary: pd.DataFrame) -> str | None:
    """The text that says which numbers are simulated; None when nothing in the store is.

    Args:
        summary: :func:`engine.analytics.simulation_summary` frame (kind, rows, simulated).
    """
    counts = {row.kind: (int(row.rows), int(row.simulated)) for row in summary.itertuples(index=False)}

    def part(kind: str, noun: str) -> str | None:
        rows, sim = counts.get(kind, (0, 0))
        return f"{sim:,} of {rows:,} {noun}" if sim else None

    reactions = [p for p in (part("event:push_open", "opens"), part("event:push_click", "clicks"),
                             part("event:conversion", "conversion events")) if p]
    setup = [p for p in (part("devices", "devices"), part("consents", "consent records")) if p]
    incremental = counts.get("conversion:incremental", (0, 0))[1]
    if not reactions and not setup:
        return None
    lines = ["**Simulated data — read these numbers as a sandbox, not as real campaign results.**"]
    if reactions:
        lines.append(f"- Reactions to pushes come from a seeded simulation: {', '.join(reactions)}. "
                     "Opened, clicked and attributed-conversion counts rest on them; the charts draw "
                     "the simulated part in orange and the tables count it in *simulated* columns.")
    if incremental:
        lines.append(f"- {incremental:,} conversions are simulated incremental conversions "
                     "(`grounded: false`, not backed by a real purchase).")
    if setup:
        lines.append(f"- Devices and consent are simulated ({', '.join(setup)}): the public datasets "
                     "record no app installs or push consent, so deliveries go to sandbox vendors.")
    lines.append("- Purchases and holdout outcomes come from the real purchase log.")
    return "\n".join(lines)


def uplift_reading(low: float, high: float, p_value: float, replay: bool) -> str:
    """How to read a treatment − holdout difference, in words (pure).

    Args:
        low, high: its 95% interval (NaN when an arm is empty).
        p_value: two-sided p-value (NaN when not computable).
        replay: the store replays historical purchases to simulated devices (the demo): its outcomes
            were not caused by any push, so a difference between the arms can only be chance.
    """
    if pd.isna(low) or pd.isna(high):
        text = "Not enough users in one arm to compare."
    elif low <= 0 <= high:
        text = (f"The 95% interval includes zero (p = {p_value:.2g}): this difference is not distinguishable "
                "from chance, and neither is the relative uplift.")
    else:
        text = f"The 95% interval excludes zero (p = {p_value:.2g})."
    if replay:
        text += (" This database replays historical purchases to simulated devices: conversions in both arms "
                 "are real 2011 purchases that a sandbox push cannot have caused, so any difference here is "
                 "chance (`benchmarks/aa_holdout.py` shows how far it moves across random holdout splits).")
    return text
