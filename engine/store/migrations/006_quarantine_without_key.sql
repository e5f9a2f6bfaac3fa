-- The quarantine loses its PRIMARY KEY (file, row_number), like events in 001: maintaining the index
-- cost more than writing the rows on a bulk load (1.37 M quarantined lines of the ingest benchmark:
-- 2.8 CPU-seconds with the key, 1.5 without it and with zstd for the raw JSON). Ingest keeps
-- (file, row_number) unique itself: a file path it has quarantined rows for is anti-joined.
-- See docs/decisions/002-event-identity.md.
CREATE TABLE quarantine_006 (
    source          VARCHAR NOT NULL,
    file            VARCHAR NOT NULL,
    row_number      BIGINT NOT NULL,        -- 1-based row in the file
    reason          VARCHAR NOT NULL,
    raw             JSON USING COMPRESSION zstd,
    quarantined_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO quarantine_006 SELECT source, file, row_number, reason, raw, quarantined_at FROM quarantine;
DROP TABLE quarantine;
ALTER TABLE quarantine_006 RENAME TO quarantine;
