-- Scheduled retraining: one row per challenger-versus-champion run, promoted or not (engine.training.retrain).
CREATE TABLE IF NOT EXISTS retrain_runs (
    run_id             VARCHAR PRIMARY KEY,
    model_name         VARCHAR NOT NULL,
    started_at         TIMESTAMPTZ NOT NULL,
    train_until        TIMESTAMPTZ NOT NULL,   -- the challenger learnt from data before this instant
    eval_start         TIMESTAMPTZ NOT NULL,   -- the newest window both models are scored on
    eval_end           TIMESTAMPTZ NOT NULL,
    champion_version   VARCHAR,                -- NULL: there was no champion yet
    challenger_version VARCHAR NOT NULL,
    metric             VARCHAR NOT NULL,       -- e.g. 'auc' (higher is better)
    champion_score     DOUBLE,
    challenger_score   DOUBLE,
    margin             DOUBLE NOT NULL,
    promoted           BOOLEAN NOT NULL,
    reason             VARCHAR NOT NULL,
    metrics            JSON NOT NULL
);
