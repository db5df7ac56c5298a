-- Schema version 2: what tenants need. The tokens a batch enqueued when it
-- started (its enqueued-token quota holds them in proportion to its
-- requests not yet finished).
ALTER TABLE batches ADD COLUMN enqueued_tokens BIGINT NOT NULL DEFAULT 0;
