"""How each dashboard table is shown: source column -> label with its unit, and kind (see ``Col``)."""

from __future__ import annotations

from dashboards.dashboard_tables import Col

__all__ = ["ARM_COLUMNS", "ATTEMPT_COLUMNS", "CALIBRATION_COLUMNS", "DAILY_COLUMNS", "DECISION_COLUMNS",
           "FUNNEL_COLUMNS", "MODEL_COLUMNS", "QUOTA_COLUMNS", "READOUT_COLUMNS", "SKIP_COLUMNS", "TEMPLATE_COLUMNS",
           "VENDOR_COLUMNS"]

FUNNEL_COLUMNS = {
    "stage": Col("Stage", "label"), "count": Col("Sends", "count"),
    "simulated": Col("of which simulated", "count"), "previous_stage": Col("Previous stage", "label"),
    "rate_previous": Col("% of previous stage", "percent"), "rate_planned": Col("% of planned", "percent"),
}
DECISION_COLUMNS = {
    "user": Col("User (pseudonym)"), "campaign_id": Col("Campaign"), "arm": Col("Arm", "label"),
    "action": Col("Action", "label"), "skip_reason": Col("Skip reason", "label"), "item_name": Col("Item"),
    "item_id": Col("Item id"), "position": Col("Position (0 = top)", "count"),
    "send_at": Col("Send time (UTC)", "datetime"),
    "vendor": Col("Vendor"), "send_hour_local": Col("Local send hour", "count"),
    "score": Col("Click score (%)", "percent"), "propensity": Col("Propensity (%)", "percent"),
    "policy": Col("Policy"), "model_version": Col("Model version"),
}
ARM_COLUMNS = {
    "arm": Col("Arm", "label"), "users": Col("Users", "count"), "conversions": Col("Conversions", "count"),
    "simulated_conversions": Col("of which simulated", "count"), "rate": Col("Rate (%)", "percent"),
    "ci_low": Col("95% low (%)", "percent"), "ci_high": Col("95% high (%)", "percent"),
}
READOUT_COLUMNS = {
    "outcome": Col("Outcome", "label"), "users": Col("Treatment users", "count"),
    "rate": Col("Treatment rate (%)", "percent"), "control_users": Col("Holdout users", "count"),
    "control_rate": Col("Holdout rate (%)", "percent"), "difference": Col("Difference (pp)", "pp"),
    "diff_low": Col("95% low (pp)", "pp"), "diff_high": Col("95% high (pp)", "pp"),
    "relative_uplift": Col("Relative uplift (%)", "percent"), "p_value": Col("p-value", "p"),
}
TEMPLATE_COLUMNS = {
    "campaign_id": Col("Campaign"), "template_id": Col("Template"), "title": Col("Title template"),
    "body": Col("Body template"), "decisions": Col("Decisions", "count"), "skipped": Col("Skipped", "count"),
    "sent": Col("Sent", "count"), "delivered": Col("Delivered", "count"), "opened": Col("Opened", "count"),
    "clicked": Col("Clicked", "count"), "open_rate": Col("Open rate (%)", "percent"),
    "open_low": Col("Open 95% low (%)", "percent"), "open_high": Col("Open 95% high (%)", "percent"),
    "click_rate": Col("Click rate (%)", "percent"),
}
SKIP_COLUMNS = {
    "campaign_id": Col("Campaign"), "skip_reason": Col("Reason", "label"), "users": Col("Users", "count"),
    "share": Col("Share of treatment users (%)", "percent"),
}
VENDOR_COLUMNS = {
    "vendor": Col("Vendor"), "sends": Col("Sends", "count"), "sent": Col("Sent", "count"),
    "delivered": Col("Delivered", "count"), "invalid_token": Col("Invalid token", "count"),
    "failed": Col("Failed", "count"), "cancelled": Col("Cancelled", "count"),
    "open": Col("Queued or retrying", "count"), "attempts": Col("Attempts", "count"),
    "retries": Col("Retries", "count"), "delivery_rate": Col("Delivery rate (%)", "percent"),
}
ATTEMPT_COLUMNS = {
    "vendor": Col("Vendor"), "outcome": Col("Vendor answer", "label"),
    "first_attempts": Col("First attempts", "count"), "retries": Col("Retries", "count"),
    "attempts": Col("Attempts", "count"),
}
DAILY_COLUMNS = {
    "day": Col("Day (UTC)", "date"), "vendor": Col("Vendor"), "attempts": Col("Attempts", "count"),
    "retries": Col("Retries", "count"), "invalid_token_rate": Col("Invalid-token rate (%)", "percent"),
}
QUOTA_COLUMNS = {
    "quota_day": Col("Day (vendor's)", "date"), "vendor": Col("Vendor"), "app_id": Col("App"),
    "message_class": Col("Message class"), "accepted": Col("Accepted", "count"),
    "daily_limit": Col("Daily limit", "count"), "share": Col("Share of limit (%)", "percent"),
    "exhausted_at": Col("Exhausted at (UTC)", "datetime"), "resets_at": Col("Resets at (UTC)", "datetime"),
}
MODEL_COLUMNS = {
    "model_name": Col("Model"), "version": Col("Version"), "trained_at": Col("Trained at (UTC)", "datetime"),
    "path": Col("Artifact folder"),
}
CALIBRATION_COLUMNS = {
    "bin": Col("Score group (0 = lowest)", "count"), "sends": Col("Sends", "count"),
    "mean_score": Col("Mean score (%)", "percent"), "clicks": Col("Clicks", "count"),
    "click_rate": Col("Click rate (%)", "percent"), "ci_low": Col("95% low (%)", "percent"),
    "ci_high": Col("95% high (%)", "percent"), "simulated_clicks": Col("of which simulated", "count"),
}
