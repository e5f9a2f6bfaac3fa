"""Pushwise dashboard (Streamlit): funnel, campaigns (treatment vs holdout), vendors, send-time heatmap, models.

Start it from the repository root with::

    streamlit run dashboards/app.py            # reads $PUSHWISE_DB_PATH, default data/pushwise.duckdb

It reads only through :mod:`engine.analytics` over read-only connections from
:func:`engine.store.open_reader` (the live file when free, else the writer's last snapshot); see
``dashboard_data.py`` for why frames, not connections, are cached. Users appear only as keyed
pseudonyms and device tokens never leave the store.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import streamlit as st

# `streamlit run` puts only this folder on sys.path; the engine package lives one level up and is
# not necessarily installed, so make the repository root importable too.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from dashboard_charts import (  # noqa: E402
    MIN_HEATMAP_SENDS,
    arm_rates,
    calibration,
    daily_outcomes,
    funnel_bars,
    funnel_lines,
    heatmap,
    is_replay,
    metric_history,
    plural,
    simulated_banner,
    stacked_states,
    uplift_intervals,
    uplift_reading,
)
from dashboard_data import (  # noqa: E402
    CACHE_TTL_SECONDS,
    Source,
    database_exists,
    default_db_path,
    file_stamp,
    load_options,
    load_views,
)

from dashboards.dashboard_columns import (  # noqa: E402
    ARM_COLUMNS,
    ATTEMPT_COLUMNS,
    CALIBRATION_COLUMNS,
    DAILY_COLUMNS,
    DECISION_COLUMNS,
    FUNNEL_COLUMNS,
    MODEL_COLUMNS,
    QUOTA_COLUMNS,
    READOUT_COLUMNS,
    SKIP_COLUMNS,
    TEMPLATE_COLUMNS,
    VENDOR_COLUMNS,
)
from dashboards.dashboard_tables import (  # noqa: E402
    EMPTY,
    LABELS,
    Col,
    label_values,
    metric_label,
    model_scorecard,
    table,
)
from engine.analytics import STAGES, load_pseudonym_key  # noqa: E402
from engine.errors import PushwiseError  # noqa: E402
from engine.security.dashboard_login import require_login  # noqa: E402

ALL = "All"
BREAKDOWNS = {"campaign": "campaign_id", "vendor": "vendor", "local send hour": "send_hour_local"}
BREAKDOWN_COLUMNS = {"campaign_id": "Campaign", "vendor": "Vendor", "send_hour_local": "Local send hour"}
OUTCOME_LABELS = {"converted": "Converted (bought the pushed item, or attributed)",
                  "any_purchase": "Any purchase"}


def main() -> None:
    st.set_page_config(page_title="Pushwise", page_icon="📬", layout="wide")
    st.title("Pushwise")
    if not require_login(st):   # personal data: password login when configured (engine/security/dashboard_login.py)
        return
    # The file is the operator's choice (PUSHWISE_DB_PATH), never a visitor's: a path box would let
    # anyone who reaches the page open any DuckDB file the server can read.
    db_path = default_db_path()
    st.sidebar.caption(f"Database: `{db_path}` (set PUSHWISE_DB_PATH to change)")
    if not database_exists(db_path):
        st.info(f"No Pushwise database at `{db_path}` yet. Run `pushwise demo` first, "
                "or start the dashboard with PUSHWISE_DB_PATH pointing at another database file.")
        return
    try:
        options = load_options(db_path, file_stamp(db_path))
    except PushwiseError as exc:
        st.error(f"Cannot read `{db_path}`: {exc}\n\nIf it is not a Pushwise database yet, run `pushwise demo` first.")
        return
    _show_source(options["source"])
    banner = simulated_banner(options["simulation"])
    replay = is_replay(options["simulation"])
    if banner:
        st.warning(banner, icon="🧪")
    if options["campaigns"].empty:
        st.info("No campaign has been planned in this database yet. Run `pushwise demo` first.")
        return
    campaign_id, vendor, start, end = _filters(options, db_path)
    try:
        views = load_views(db_path, file_stamp(db_path), campaign_id, vendor, start, end, load_pseudonym_key())
    except PushwiseError as exc:
        st.error(f"Cannot load the analytics: {exc}")
        return
    # Bound to the URL (?page=Vendors) so a page can be linked to, and screenshotted, directly.
    tabs = st.tabs(["Funnel", "Campaigns", "Vendors", "Send-time heatmap", "Models"], key="page",
                   bind="query-params")
    with tabs[0]:
        _funnel_page(views)
    with tabs[1]:
        _uplift_page(views, replay)
    with tabs[2]:
        _vendor_page(views)
    with tabs[3]:
        _heatmap_page(views)
    with tabs[4]:
        _models_page(views)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''} ago"
    return f"{seconds} s ago"


def _show_source(source: Source) -> None:
    age = _age(time.time() - source.modified)
    if source.origin == "live":
        st.caption(f"Reading the live database `{source.path}` (read-only), last written {age}. "
                   "Rerun the page (R) to pick up new data.")
    else:
        st.caption(f"Reading the snapshot `{source.path}`, published {age}: another process (the dispatcher "
                   "or the demo) holds the write lock on the live database. A newer snapshot shows up "
                   f"on the next rerun (results are cached for at most {CACHE_TTL_SECONDS} s).")


def _filters(options: dict, db_path: str) -> tuple[str | None, str | None, object, object]:
    campaigns: pd.DataFrame = options["campaigns"]
    labels = {ALL: None} | {f"{r.name} ({r.campaign_id})": r.campaign_id for r in campaigns.itertuples()}
    campaign_id = labels[st.sidebar.selectbox("Campaign", list(labels), key=f"campaign:{db_path}")]
    vendor = st.sidebar.selectbox("Vendor", [ALL, *options["vendors"]], key=f"vendor:{db_path}")
    first, last = options["dates"]
    start = end = None
    if first is not None:
        picked = st.sidebar.date_input("Send date (UTC)", value=(first, last), min_value=first,
                                       max_value=last, key=f"dates:{db_path}")
        picked = tuple(picked) if isinstance(picked, list | tuple) else (picked,)
        start = picked[0] if picked else None
        end = picked[1] if len(picked) > 1 else None
    st.sidebar.caption("Users are shown as keyed pseudonyms; device tokens are never shown.")
    return campaign_id, (None if vendor == ALL else vendor), start, end


def _show(frame: pd.DataFrame, columns: dict[str, Col], where: object = st, **kwargs: object) -> None:
    shown, config = table(frame, columns)
    where.dataframe(shown, hide_index=True, column_config=config, **kwargs)


def _funnel_page(views: dict[str, pd.DataFrame]) -> None:
    funnel = views["funnel"]
    st.subheader("Planned → sent → delivered → opened → clicked → converted")
    for column, row in zip(st.columns(len(funnel)), funnel.itertuples(index=False), strict=True):
        rate = "" if pd.isna(row.rate_planned) else f"{row.rate_planned:.1%} of planned"
        column.metric(row.stage.capitalize(), f"{row.count:,}", help=rate or None)
    st.altair_chart(funnel_bars(funnel), width="stretch")
    _show(funnel, FUNNEL_COLUMNS)
    st.caption("Converted: a delivered send whose item the user really bought within 14 days after it "
               "went out, or that a conversion event names. Its rate is taken over delivered sends.")

    label = st.radio("Break down by", list(BREAKDOWNS), horizontal=True)
    group = BREAKDOWNS[label]
    by_group = views[f"funnel_by_{group}"]
    if by_group.empty:
        st.info("No planned sends match the filters.")
    else:
        st.altair_chart(funnel_lines(by_group, group, label), width="stretch")
        counts = by_group.pivot(index=group, columns="stage", values="count").reindex(columns=list(STAGES))
        counts = counts.rename(columns=LABELS).rename_axis(index=BREAKDOWN_COLUMNS[group], columns=None)
        st.dataframe(counts.reset_index(), hide_index=True, width="stretch",
                     column_config={LABELS[stage]: st.column_config.NumberColumn(format="localized")
                                    for stage in STAGES})

    with st.expander("Decision log (most recent 500; users pseudonymised)"):
        _show(views["decisions"], DECISION_COLUMNS)


def _uplift_page(views: dict[str, pd.DataFrame], replay: bool) -> None:
    st.subheader("Treatment vs holdout (intention to treat)")
    outcome = st.radio("Outcome", list(OUTCOME_LABELS), format_func=OUTCOME_LABELS.get, horizontal=True)
    arms = views["arms"][views["arms"]["outcome"] == outcome]
    diff = views["uplift"].set_index("outcome").loc[outcome]
    if arms["users"].min() == 0:
        st.info("Both arms need decisions with a send time to compare; none match the filters for one arm.")
    cols = st.columns(4)
    cols[0].metric("Treatment rate", _pct(diff["treatment_rate"]))
    cols[1].metric("Holdout rate", _pct(diff["holdout_rate"]))
    cols[2].metric("Difference (treatment − holdout)", _pp(diff["difference"]),
                   help=f"95% interval (Newcombe): {_pp(diff['diff_low'])} to {_pp(diff['diff_high'])}")
    cols[3].metric("p-value (two-sided z-test)", "–" if pd.isna(diff["p_value"]) else f"{diff['p_value']:.3g}")
    st.markdown(f"95% interval of the difference: **{_pp(diff['diff_low'])} to {_pp(diff['diff_high'])}**; "
                f"relative uplift **{_pct(diff['relative_uplift'])}**.")
    st.info(uplift_reading(diff["diff_low"], diff["diff_high"], diff["p_value"], replay))
    left, right = st.columns([2, 3])
    left.altair_chart(arm_rates(arms), width="stretch")
    _show(arms, ARM_COLUMNS, right)
    simulated = int(arms["simulated_conversions"].sum())
    st.caption("Every treatment decision counts, sent or not, against the randomly held-out users, over "
               "the 14 days after each decision's send time. Rates carry Wilson 95% intervals."
               + (f" {plural(simulated, 'treatment conversion')} {'is' if simulated == 1 else 'are'} simulated "
                  "(an incremental conversion with no real purchase behind it)." if simulated else ""))
    readout = views["readout"]
    if not readout.empty:
        st.markdown("**Both outcomes: treatment − holdout with 95% intervals** "
                    "(the same code as `pushwise experiment analyze`)")
        st.altair_chart(uplift_intervals(readout), width="stretch")
        _show(readout, READOUT_COLUMNS)
        st.caption("pp = percentage points, the difference of two rates: 9% against 7% is +2 pp "
                   "(a relative uplift of 29%).")
    st.subheader("Per template (treatment)")
    _show(views["templates"], TEMPLATE_COLUMNS)
    st.caption("Title and body are the campaign's templates; each user's copy fills in {item_name} and the "
               "other slots. Rates are over delivered sends.")
    st.subheader("Skipped users by reason")
    skips = views["skips"]
    if skips.empty:
        st.caption("No treatment user was skipped.")
    else:
        labelled = skips.assign(skip_reason=label_values(skips["skip_reason"])).rename(
            columns={"campaign_id": "Campaign", "skip_reason": "Reason", "users": "Users"})
        st.bar_chart(labelled, x="Reason", y="Users", color="Campaign", horizontal=True)
        _show(skips, SKIP_COLUMNS)


def _vendor_page(views: dict[str, pd.DataFrame]) -> None:
    st.subheader("Vendor outcomes")
    summary = views["vendor_summary"]
    if summary.empty:
        st.info("No sends match the filters.")
        return
    _show(summary, VENDOR_COLUMNS)
    st.caption("Sends: outbox rows. *Queued or retrying*: not yet sent, being sent, or waiting for a retry "
               "(not the same as *Opened* in the funnel, which counts users opening the push).")
    left, right = st.columns(2)
    left.altair_chart(stacked_states(views["vendor_outcomes"]), width="stretch")
    right.markdown("**Every vendor answer, retries included**")
    _show(views["attempts"], ATTEMPT_COLUMNS, right)
    daily = views["vendor_daily"]
    if not daily.empty:
        st.markdown("**Vendor answers per day** (attempts, retries included)")
        vendors = sorted(daily["vendor"].unique())
        for column, name in zip(st.columns(len(vendors)), vendors, strict=True):
            column.altair_chart(daily_outcomes(daily[daily["vendor"] == name], name), width="stretch")
        rates = daily.groupby(["day", "vendor"], as_index=False).agg(
            attempts=("attempts", "sum"), retries=("retries", "sum"), invalid_token_rate=("invalid_token_rate", "first"))
        _show(rates, DAILY_COLUMNS)
    st.markdown("**Daily quota use**")
    quota = views["quota"]
    if quota.empty:
        st.caption("No vendor quota has been recorded (no quota-limited vendor has been used).")
    else:
        _show(quota, QUOTA_COLUMNS)
        st.caption(f"{EMPTY}: the vendor never told us a daily limit, or the quota was not exhausted.")


def _heatmap_page(views: dict[str, pd.DataFrame]) -> None:
    st.subheader("Sends and opens by local weekday and hour")
    cells = views["heatmap"]
    if cells.empty:
        st.info("No sends have gone out for these filters yet.")
        return
    st.markdown("**Sends**")
    st.altair_chart(heatmap(cells, "sends", "sends", "d", min_sends=1), width="stretch")
    st.markdown("**Open rate** (opens ÷ sends)")
    st.altair_chart(heatmap(cells, "open_rate", "open rate", ".0%"), width="stretch")
    caption = (f"The number in each cell is its sends. Grey cells have fewer than {MIN_HEATMAP_SENDS} sends: "
               "too few for their open rate to mean anything.")
    if cells["simulated_opens"].sum():
        caption += (f" {int(cells['simulated_opens'].sum()):,} of {plural(int(cells['opens'].sum()), 'open')} "
                    f"{'is' if int(cells['simulated_opens'].sum()) == 1 else 'are'} simulated.")
    st.caption(caption)


def _models_page(views: dict[str, pd.DataFrame]) -> None:
    st.subheader("Trained models")
    models = views["models"]
    if models.empty:
        st.info("No model has been trained in this database yet.")
        return
    _show(models, MODEL_COLUMNS)
    names = sorted(models["model_name"].unique())
    # Open on a model whose training compared it with a baseline, when there is one: that is the reading
    # a marketer needs ("does it beat the simple rule?").
    compared = [n for n in names if any("_minus_" in k for k in models[models["model_name"] == n].iloc[0]["metrics"])]
    name = st.selectbox("Model", names, index=names.index(compared[0]) if compared else 0)
    latest = models[models["model_name"] == name].iloc[0]   # newest first
    st.markdown(f"**{name}, version {latest['version']}: metrics on held-out data**")
    scorecard = model_scorecard(latest["metrics"])
    st.dataframe(scorecard, hide_index=True, height=35 * (len(scorecard) + 1) + 3)
    if (scorecard["Reading"] == EMPTY).all():
        st.caption("This model's training recorded no comparison with a baseline.")
    metrics = views["model_metrics"]
    chosen = metrics[(metrics["model_name"] == name) & ~metrics["metric"].str.endswith(("_low", "_high"))]
    if not chosen.empty:
        metric = st.selectbox("Metric over time", sorted(chosen["metric"].unique()), format_func=metric_label)
        st.altair_chart(metric_history(chosen[chosen["metric"] == metric], metric_label(metric)), width="stretch")
    st.subheader("Calibration of the live click scores")
    cells = views["calibration"]
    if cells.empty:
        st.info("No delivered send with a model score matches the filters.")
        return
    left, right = st.columns(2)
    left.altair_chart(calibration(cells), width="stretch")
    _show(cells, CALIBRATION_COLUMNS, right)
    caption = ("Delivered sends in ten equal groups by the model's predicted click probability (score), "
               "lowest first; points on the dashed diagonal mean the scores match the observed click rates.")
    simulated = int(cells["simulated_clicks"].sum())
    if simulated:
        caption += (f" {simulated:,} of {plural(int(cells['clicks'].sum()), 'click')} "
                    f"{'is' if simulated == 1 else 'are'} simulated: this shows how the scores match the "
                    "simulation, not real users.")
    st.caption(caption)


def _pct(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.1%}"


def _pp(value: float) -> str:
    return "–" if pd.isna(value) else f"{value * 100:+.1f} pp"


main()
