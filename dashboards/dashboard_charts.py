"""Altair charts for the dashboard: pure functions from analytics frames to chart specs (no I/O)."""

from __future__ import annotations

import altair as alt
import pandas as pd

from dashboards.dashboard_tables import LABELS, label_values
from engine.analytics import STAGES, WEEKDAYS

__all__ = ["MIN_HEATMAP_SENDS", "arm_rates", "calibration", "daily_outcomes", "funnel_bars", "funnel_lines",
           "heatmap", "is_replay", "metric_history", "plural", "simulated_banner", "stacked_states",
           "uplift_intervals", "uplift_reading"]

#: Heatmap cells with fewer sends than this are greyed out: an open rate over a handful of sends
#: (say 1 of 1 = 100%) is noise; at 20 sends a Wilson 95% interval is still about ±20 pp wide.
MIN_HEATMAP_SENDS = 20
STAGE_LABELS = [LABELS[s] if s in LABELS else s.capitalize() for s in STAGES]


def plural(n: int, singular: str, plural_form: str | None = None) -> str:
    """``"1 conversion"``, ``"2,017 conversions"`` (pure)."""
    return f"{n:,} {singular if n == 1 else (plural_form or singular + 's')}"


def _stages(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(stage=[LABELS.get(s, str(s).capitalize()) for s in frame["stage"]])


def funnel_bars(funnel: pd.DataFrame) -> alt.Chart:
    """Bars per stage, the part resting only on simulated events drawn in its own colour."""
    funnel = _stages(funnel)
    parts = pd.concat([
        funnel.assign(evidence="observed", n=funnel["count"] - funnel["simulated"]),
        funnel.assign(evidence="simulated", n=funnel["simulated"]),
    ])[["stage", "evidence", "n"]]
    return alt.Chart(parts).mark_bar().encode(
        x=alt.X("stage:N", sort=STAGE_LABELS, title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("n:Q", title="sends"),
        color=alt.Color("evidence:N", scale=alt.Scale(domain=["observed", "simulated"],
                                                      range=["#4c78a8", "#f58518"]), title=None),
        tooltip=[alt.Tooltip("stage:N", title="stage"), "evidence", alt.Tooltip("n:Q", title="sends", format=",")],
    )


def funnel_lines(by_group: pd.DataFrame, group: str, label: str) -> alt.Chart:
    """Share of planned sends reaching each stage, one line per group."""
    frame = _stages(by_group).assign(**{label: by_group[group].astype(str)})
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("stage:N", sort=STAGE_LABELS, title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("rate_planned:Q", axis=alt.Axis(format="%"), title="% of planned sends"),
        color=alt.Color(f"{label}:N"),
        tooltip=[label, "stage", "count", alt.Tooltip("rate_planned:Q", format=".1%")],
    )


def arm_rates(arms: pd.DataFrame) -> alt.LayerChart:
    """Rate per arm with its Wilson 95% interval as an error bar."""
    arms = arms.assign(arm=label_values(arms["arm"]))
    base = alt.Chart(arms).encode(x=alt.X("arm:N", sort=["Treatment", "Holdout"], title=None,
                                          axis=alt.Axis(labelAngle=0)))
    bars = base.mark_errorbar(ticks=True).encode(
        y=alt.Y("ci_low:Q", axis=alt.Axis(format="%"), title="conversion rate, % (95% interval)"), y2="ci_high:Q")
    points = base.mark_point(filled=True, size=90).encode(
        y="rate:Q", color=alt.Color("arm:N", legend=None),
        tooltip=["arm", "users", "conversions", alt.Tooltip("rate:Q", format=".2%"),
                 alt.Tooltip("ci_low:Q", format=".2%", title="95% low"),
                 alt.Tooltip("ci_high:Q", format=".2%", title="95% high")])
    return bars + points


def stacked_states(outcomes: pd.DataFrame) -> alt.Chart:
    """Sends per vendor, stacked by outbox state (legend below the bars, so long labels fit)."""
    frame = outcomes.assign(state=label_values(outcomes["state"]), outcome=label_values(outcomes["outcome"]))
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("vendor:N", title=None, axis=alt.Axis(labelAngle=0)), y=alt.Y("sum(sends):Q", title="sends"),
        color=alt.Color("state:N", title="Outbox state", legend=alt.Legend(orient="bottom", labelLimit=0)),
        tooltip=["vendor", alt.Tooltip("state:N", title="outbox state"),
                 alt.Tooltip("outcome:N", title="last vendor answer"), "sends"],
    )


def daily_outcomes(daily: pd.DataFrame, title: str) -> alt.Chart:
    """One vendor's answers per day, stacked by outcome (the page draws one chart per vendor).

    Days are an ordinal axis (one labelled bar per day, no clock ticks); separate charts rather
    than facets, because Streamlit cannot stretch a faceted chart to the page and its labels collide.
    """
    frame = daily.assign(outcome=label_values(daily["outcome"]),
                         date=pd.to_datetime(daily["day"]).dt.strftime("%a %d %b"),
                         order=pd.to_datetime(daily["day"]))
    days = list(frame.sort_values("order")["date"].drop_duplicates())
    return alt.Chart(frame, title=title).mark_bar().encode(
        x=alt.X("date:O", sort=days, title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("sum(attempts):Q", title="attempts"),
        color=alt.Color("outcome:N", title="Vendor answer", legend=alt.Legend(orient="bottom", labelLimit=0)),
        tooltip=[alt.Tooltip("date:O", title="day (UTC)"), "vendor", alt.Tooltip("outcome:N", title="answer"),
                 alt.Tooltip("status_code:Q", title="HTTP status"), "attempts", "retries"],
    )


def uplift_intervals(readout: pd.DataFrame) -> alt.LayerChart:
    """Difference (arm − control) per outcome with its 95% interval, and a zero line."""
    # Differences of two rates are percentage points, not percent: scale and label them so.
    frame = readout.assign(outcome=label_values(readout["outcome"]),
                           **{c: readout[c] * 100 for c in ("difference", "diff_low", "diff_high")})
    base = alt.Chart(frame).encode(y=alt.Y("outcome:N", title=None))
    bars = base.mark_errorbar(ticks=True).encode(
        x=alt.X("diff_low:Q", axis=alt.Axis(format="+.1f"), title="treatment − holdout, pp (95% interval)"),
        x2="diff_high:Q")
    points = base.mark_point(filled=True, size=90).encode(
        x="difference:Q", tooltip=["outcome", alt.Tooltip("difference:Q", format="+.2f", title="difference (pp)"),
                                   alt.Tooltip("p_value:Q", format=".3g", title="p-value")])
    zero = alt.Chart(pd.DataFrame({"x": [0.0]})).mark_rule(strokeDash=[4, 4]).encode(x="x:Q")
    return bars + points + zero


def metric_history(metrics: pd.DataFrame, metric: str) -> alt.Chart:
    """One metric of one model over training time, a point per version (visible even for a single run).

    Training times are an ordinal axis of "YYYY-MM-DD HH:MM" labels: a time axis over one or two
    runs seconds apart ticks in milliseconds (".460"), which reads as nonsense.
    """
    frame = metrics.assign(trained=pd.to_datetime(metrics["trained_at"], utc=True).dt.strftime("%Y-%m-%d %H:%M"))
    order = list(frame.sort_values("trained_at")["trained"].drop_duplicates())
    return alt.Chart(frame).mark_line(point=alt.OverlayMarkDef(size=80)).encode(
        x=alt.X("trained:O", sort=order, title="trained at (UTC)", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("value:Q", title=metric, axis=alt.Axis(format=".2~f")),
        tooltip=["version", alt.Tooltip("trained:O", title="trained at (UTC)"), alt.Tooltip("value:Q", format=".4f")],
    )


def calibration(cells: pd.DataFrame) -> alt.LayerChart:
    """Observed click rate (with Wilson interval) against mean predicted score per bin; the diagonal is perfect."""
    top = float(max(cells["ci_high"].max(), cells["mean_score"].max(), 0.01))
    diagonal = alt.Chart(pd.DataFrame({"p": [0.0, top]})).mark_line(strokeDash=[4, 4], color="grey").encode(
        x="p:Q", y="p:Q")
    base = alt.Chart(cells).encode(x=alt.X("mean_score:Q", title="mean predicted click probability",
                                           axis=alt.Axis(format="%")))
    bars = base.mark_errorbar().encode(y=alt.Y("ci_low:Q", title="observed click rate (95% interval)",
                                               axis=alt.Axis(format="%")), y2="ci_high:Q")
    points = base.mark_point(filled=True).encode(
        y="click_rate:Q", tooltip=["sends", "clicks", alt.Tooltip("mean_score:Q", format=".1%", title="mean score"),
                                   alt.Tooltip("click_rate:Q", format=".1%", title="click rate")])
    return diagonal + bars + points


def heatmap(cells: pd.DataFrame, value: str, title: str, fmt: str,
            min_sends: int = MIN_HEATMAP_SENDS) -> alt.LayerChart:
    """Local weekday × hour grid coloured by ``value``, each cell labelled with its number of sends.

    Cells with fewer than ``min_sends`` sends are grey and left out of the colour scale, so one
    open out of one send neither paints a 100% cell nor stretches the legend.
    """
    x = alt.X("hour:O", title="local hour", scale=alt.Scale(domain=list(range(24))), axis=alt.Axis(labelAngle=0))
    y = alt.Y("weekday_name:N", sort=list(WEEKDAYS), title=None, scale=alt.Scale(domain=list(WEEKDAYS)))
    tooltip = [alt.Tooltip("weekday_name:N", title="weekday"), alt.Tooltip("hour:O", title="local hour"),
               "sends", "opens", alt.Tooltip("simulated_opens:Q", title="of which simulated"),
               alt.Tooltip("open_rate:Q", format=".1%", title="open rate")]
    sent = cells[cells["sends"] > 0]
    enough = sent[sent["sends"] >= min_sends]
    few = alt.Chart(sent).mark_rect(color="#e4e4e4").encode(x=x, y=y, tooltip=tooltip)
    coloured = alt.Chart(enough).mark_rect().encode(
        x=x, y=y, tooltip=tooltip, color=alt.Color(f"{value}:Q", title=title, legend=alt.Legend(format=fmt),
                                                   scale=alt.Scale(zero=True)))
    dark = float(enough[value].max()) * 0.6 if not enough.empty else 0.0
    counts = alt.Chart(sent.assign(dark=(sent["sends"] >= min_sends) & (sent[value] > dark))).mark_text(
        fontSize=10).encode(
        x=x, y=y, text=alt.Text("sends:Q", format="d"), tooltip=tooltip,
        color=alt.condition(alt.datum.dark, alt.value("white"), alt.value("#333333")),
    )
    return (few + coloured + counts).properties(height=230)


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

    reactions = [p for p in (part("event:push_open", "opens"), part("event:push_click", "clicks")) if p]
    setup = [p for p in (part("devices", "devices"), part("consents", "consent records")) if p]
    conversions, simulated_conversions = counts.get("event:conversion", (0, 0))
    incremental = counts.get("conversion:incremental", (0, 0))[1]
    if not reactions and not setup and not simulated_conversions and not incremental:
        return None
    lines = ["**Simulated data — read these numbers as a sandbox, not as real campaign results.**"]
    if reactions:
        lines.append(f"- Reactions to pushes come from a seeded simulation: {', '.join(reactions)}. "
                     "Opened and clicked counts rest on them; the charts draw the simulated part in orange "
                     "and the tables count it in *of which simulated* columns.")
    if simulated_conversions or incremental:
        # The funnel counts as simulated only conversions with no real purchase behind them (the
        # incremental ones); a grounded conversion event attributes a real purchase from the log.
        grounded = conversions - incremental
        lines.append(f"- Conversions: {grounded:,} of {plural(conversions, 'conversion event')} attribute a real "
                     f"purchase from the purchase log to the push before it (the purchase is real, the attribution "
                     f"is simulated); {plural(incremental, 'conversion')} "
                     f"{'is' if incremental == 1 else 'are'} simulated incremental "
                     "(`grounded: false`, no real purchase behind "
                     f"{'it' if incremental == 1 else 'them'}) and counted as simulated in the funnel.")
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
