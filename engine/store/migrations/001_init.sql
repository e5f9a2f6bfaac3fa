-- Canonical schema of the Pushwise store. Every timestamp is TIMESTAMPTZ (UTC instants).

-- No PRIMARY KEY: the writers keep event_id unique (ingest numbers repeats and anti-joins stored ids);
-- maintaining the index made bulk loads about 2.5 times slower. event_id (random hex) and properties
-- (JSON) use zstd, smaller and cheaper to write than the default string compression.
-- See docs/decisions/002-event-identity.md.
CREATE TABLE IF NOT EXISTS events (
    event_id     VARCHAR NOT NULL USING COMPRESSION zstd,  -- md5 of (source, natural key, occurrence): re-ingest is a no-op
    user_id      VARCHAR NOT NULL,
    item_id      VARCHAR,
    event_type   VARCHAR NOT NULL,          -- see engine.domain.EVENT_TYPES
    ts           TIMESTAMPTZ NOT NULL,
    properties   JSON USING COMPRESSION zstd,
    source       VARCHAR NOT NULL,          -- mapping name, e.g. 'online_retail', 'open_bandit', 'pushwise'
    simulated    BOOLEAN NOT NULL DEFAULT false,
    ingested_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS quarantine (
    source          VARCHAR NOT NULL,
    file            VARCHAR NOT NULL,
    row_number      BIGINT NOT NULL,        -- 1-based row in the file
    reason          VARCHAR NOT NULL,
    raw             JSON,
    quarantined_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (file, row_number)
);

CREATE TABLE IF NOT EXISTS ingested_files (
    sha256            VARCHAR PRIMARY KEY,
    path              VARCHAR NOT NULL,
    mapping           VARCHAR NOT NULL,
    rows_read         BIGINT NOT NULL,
    rows_loaded       BIGINT NOT NULL,
    rows_duplicate    BIGINT NOT NULL,
    rows_quarantined  BIGINT NOT NULL,
    ingested_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    user_id     VARCHAR PRIMARY KEY,
    country     VARCHAR,
    time_zone   VARCHAR NOT NULL,           -- IANA name
    source      VARCHAR NOT NULL,
    first_seen  TIMESTAMPTZ,
    last_seen   TIMESTAMPTZ
);

CREATE TABLE IF NOT EXISTS items (
    item_id      VARCHAR PRIMARY KEY,
    name         VARCHAR,
    category     VARCHAR,                   -- the item's "kind", used for similar-item features
    price        DOUBLE,
    currency     VARCHAR,
    source       VARCHAR NOT NULL,
    properties   JSON
);

CREATE TABLE IF NOT EXISTS consents (
    user_id        VARCHAR NOT NULL,
    channel        VARCHAR NOT NULL,        -- 'push'
    message_class  VARCHAR NOT NULL,        -- 'marketing' | 'transactional'
    granted        BOOLEAN NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    simulated      BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, channel, message_class)
);

CREATE TABLE IF NOT EXISTS devices (
    device_id            VARCHAR PRIMARY KEY,
    user_id              VARCHAR NOT NULL,
    vendor               VARCHAR NOT NULL,  -- 'apns' | 'fcm' | ...
    app_id               VARCHAR NOT NULL,
    token                VARCHAR NOT NULL,
    active               BOOLEAN NOT NULL DEFAULT true,
    registered_at        TIMESTAMPTZ NOT NULL,
    deactivated_at       TIMESTAMPTZ,
    deactivation_reason  VARCHAR,
    simulated            BOOLEAN NOT NULL DEFAULT false
);

CREATE TABLE IF NOT EXISTS campaigns (
    campaign_id  VARCHAR PRIMARY KEY,
    name         VARCHAR NOT NULL,
    spec         JSON NOT NULL,
    as_of        TIMESTAMPTZ NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);

-- One row per (campaign, user) considered: treatment sends, holdout and skipped users alike.
CREATE TABLE IF NOT EXISTS decisions (
    decision_id    VARCHAR PRIMARY KEY,
    campaign_id    VARCHAR NOT NULL,
    user_id        VARCHAR NOT NULL,
    arm            VARCHAR NOT NULL,        -- 'treatment' | 'holdout'
    action         VARCHAR NOT NULL,        -- 'send' | 'holdout' | 'skip'
    skip_reason    VARCHAR,                 -- why no send: 'no_consent', 'no_device', 'frequency_cap', ...
    item_id        VARCHAR,
    position       INTEGER,                 -- rank of the chosen item among the candidates (0 = top)
    template_id    VARCHAR,
    title          VARCHAR,
    body           VARCHAR,
    score          DOUBLE,                  -- model's click probability of the chosen item
    propensity     DOUBLE,                  -- probability the policy chose this item for this user
    template_propensity DOUBLE,             -- probability the copy policy chose this template
    policy         VARCHAR NOT NULL,
    model_version  VARCHAR,
    send_at        TIMESTAMPTZ,
    send_hour_local INTEGER,
    device_id      VARCHAR,
    vendor         VARCHAR,
    message_class  VARCHAR NOT NULL,
    as_of          TIMESTAMPTZ NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL
);

-- The outbox: one row per planned push, moved through a state machine by the dispatcher.
CREATE TABLE IF NOT EXISTS sends (
    send_id            VARCHAR PRIMARY KEY, -- also the vendor idempotency key (apns-id)
    decision_id        VARCHAR NOT NULL,
    campaign_id        VARCHAR NOT NULL,
    user_id            VARCHAR NOT NULL,
    device_id          VARCHAR NOT NULL,
    vendor             VARCHAR NOT NULL,
    message_class      VARCHAR NOT NULL,
    title              VARCHAR NOT NULL,
    body               VARCHAR NOT NULL,
    data               JSON,
    due_at             TIMESTAMPTZ NOT NULL,
    state              VARCHAR NOT NULL,    -- pending | in_flight | retry | delivered | invalid_token | failed | cancelled
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TIMESTAMPTZ NOT NULL,
    outcome            VARCHAR,             -- last Outcome value from the vendor
    vendor_message_id  VARCHAR,
    last_error         VARCHAR,
    sent_at            TIMESTAMPTZ,
    updated_at         TIMESTAMPTZ NOT NULL
);

CREATE TABLE IF NOT EXISTS send_attempts (
    send_id      VARCHAR NOT NULL,
    attempt      INTEGER NOT NULL,
    attempted_at TIMESTAMPTZ NOT NULL,
    outcome      VARCHAR NOT NULL,
    status_code  INTEGER,
    reason       VARCHAR,
    PRIMARY KEY (send_id, attempt)
);

CREATE TABLE IF NOT EXISTS model_runs (
    model_name  VARCHAR NOT NULL,
    version     VARCHAR NOT NULL,
    trained_at  TIMESTAMPTZ NOT NULL,
    path        VARCHAR NOT NULL,
    metrics     JSON NOT NULL,
    card        JSON NOT NULL,
    PRIMARY KEY (model_name, version)
);

-- Simulation truth for the sandbox demo (the real world the engine cannot see): which simulated
-- devices have uninstalled the app. Everything simulated is flagged or lives in sim_* tables.
CREATE TABLE IF NOT EXISTS sim_device_truth (
    device_id       VARCHAR PRIMARY KEY,
    vendor          VARCHAR NOT NULL,
    token           VARCHAR NOT NULL,
    uninstalled_at  TIMESTAMPTZ NOT NULL
);
