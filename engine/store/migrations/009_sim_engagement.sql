-- Sandbox demo: which delivered sends engine.simulate.engagement has already judged (reaction or not),
-- so a re-run draws nothing twice. Simulation bookkeeping only; it holds no personal data.
CREATE TABLE IF NOT EXISTS sim_engagement (
    send_id       VARCHAR PRIMARY KEY,
    evaluated_at  TIMESTAMPTZ NOT NULL,
    seed          INTEGER NOT NULL
);
