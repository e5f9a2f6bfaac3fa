-- Daily vendor quotas per (vendor, app, message class): what was accepted on each vendor day, and
-- when the vendor said the quota is exhausted. Dispatch holds those sends until resets_at; the
-- planner reads the same table (engine/dispatch/quota.py) so it does not schedule past a known quota.
CREATE TABLE IF NOT EXISTS vendor_quota (
    vendor         VARCHAR NOT NULL,
    app_id         VARCHAR NOT NULL,
    message_class  VARCHAR NOT NULL,
    quota_day      DATE NOT NULL,          -- the vendor's calendar day (China time for Chinese vendors, UTC otherwise)
    accepted       INTEGER NOT NULL DEFAULT 0,
    daily_limit    INTEGER,                -- known cap for the day, NULL when the vendor never told us
    exhausted_at   TIMESTAMPTZ,            -- first QUOTA_EXHAUSTED answer that day
    resets_at      TIMESTAMPTZ NOT NULL,   -- start of the next vendor day
    PRIMARY KEY (vendor, app_id, message_class, quota_day)
);
