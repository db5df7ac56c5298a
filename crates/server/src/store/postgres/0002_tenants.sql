-- Schema version 2: what tenants need. The tokens a batch enqueued when it
-- started (its enqueued-token quota holds them in proportion to its
-- requests not yet finished).
ALTER TABLE batches ADD COLUMN enqueued_tokens BIGINT NOT NULL DEFAULT 0;

-- The webhook outbox: a batch's end, until its event is delivered. next_at
-- is in ms; a node delivering an event holds it by moving next_at on.
CREATE TABLE events (
    id         TEXT PRIMARY KEY,
    tenant     TEXT NOT NULL,
    batch_id   TEXT NOT NULL,
    type       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    attempts   BIGINT NOT NULL DEFAULT 0,
    next_at    BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX events_due ON events (next_at);
