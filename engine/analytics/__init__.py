"""Read-only analytics over the store for the dashboard, notebooks and the experiment CLI.

Every query is a function ``(con, filters) -> DataFrame`` over a DuckDB connection (the dashboard's
comes from :func:`engine.store.open_reader`); the statistics in :mod:`engine.analytics.stats` are
pure functions of counts. Numbers that rest on simulated events are reported in their own columns.
"""

from engine.analytics.catalog import (
    campaigns,
    decision_log,
    model_metrics,
    model_runs,
    send_date_range,
    simulation_summary,
    vendors,
)
from engine.analytics.delivery import (
    WEEKDAYS,
    attempt_outcomes,
    send_time_heatmap,
    skip_reasons,
    vendor_outcomes,
    vendor_summary,
)
from engine.analytics.experiment import READOUT_COLUMNS, experiment_readout
from engine.analytics.filters import NO_FILTERS, Filters
from engine.analytics.funnel import FUNNEL_GROUPS, PREVIOUS_STAGE, STAGES, funnel, send_outcomes
from engine.analytics.operations import (
    holdout_readout,
    quota_use,
    score_calibration,
    template_summary,
    vendor_daily,
)
from engine.analytics.pseudonym import load_pseudonym_key, pseudonymise
from engine.analytics.retrain import retrain_runs
from engine.analytics.stats import (
    ProportionComparison,
    compare_proportions,
    newcombe_interval,
    two_proportion_z_test,
    wilson_interval,
)
from engine.analytics.uplift import ARMS, OUTCOMES, arm_outcomes, compare_arms

__all__ = [
    "ARMS",
    "FUNNEL_GROUPS",
    "NO_FILTERS",
    "OUTCOMES",
    "PREVIOUS_STAGE",
    "READOUT_COLUMNS",
    "STAGES",
    "WEEKDAYS",
    "Filters",
    "ProportionComparison",
    "arm_outcomes",
    "attempt_outcomes",
    "campaigns",
    "compare_arms",
    "compare_proportions",
    "decision_log",
    "experiment_readout",
    "funnel",
    "holdout_readout",
    "load_pseudonym_key",
    "model_metrics",
    "model_runs",
    "newcombe_interval",
    "pseudonymise",
    "retrain_runs",
    "quota_use",
    "score_calibration",
    "send_date_range",
    "send_outcomes",
    "send_time_heatmap",
    "simulation_summary",
    "skip_reasons",
    "template_summary",
    "two_proportion_z_test",
    "vendor_daily",
    "vendor_outcomes",
    "vendor_summary",
    "vendors",
    "wilson_interval",
]
