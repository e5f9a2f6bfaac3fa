-- A retraining run that fails (no training rows, an unreadable store, a model error) is recorded too,
-- with promoted = false and reason 'failed: …'; it may have no data window and no challenger.
ALTER TABLE retrain_runs ALTER COLUMN train_until DROP NOT NULL;
ALTER TABLE retrain_runs ALTER COLUMN eval_start DROP NOT NULL;
ALTER TABLE retrain_runs ALTER COLUMN eval_end DROP NOT NULL;
ALTER TABLE retrain_runs ALTER COLUMN challenger_version DROP NOT NULL;
