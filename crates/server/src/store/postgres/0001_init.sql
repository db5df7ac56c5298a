-- batchkit's job store on PostgreSQL, schema version 1. Applied once, in
-- one transaction, under an advisory lock (see postgres.rs).
CREATE TABLE files (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    tenant     TEXT NOT NULL,
    bytes      BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    filename   TEXT NOT NULL,
    purpose    TEXT NOT NULL
);
CREATE INDEX files_by_tenant ON files (tenant, seq);
CREATE INDEX files_by_expiry ON files (expires_at) WHERE expires_at IS NOT NULL;

CREATE TABLE batches (
    seq                  BIGSERIAL PRIMARY KEY,
    id                   TEXT NOT NULL UNIQUE,
    tenant               TEXT NOT NULL,
    endpoint             TEXT NOT NULL,
    model                TEXT,
    input_file_id        TEXT NOT NULL,
    completion_window    TEXT NOT NULL,
    status               TEXT NOT NULL,
    output_file_id       TEXT,
    error_file_id        TEXT,
    created_at           BIGINT NOT NULL,
    expires_at           BIGINT NOT NULL,
    in_progress_at       BIGINT,
    finalizing_at        BIGINT,
    completed_at         BIGINT,
    failed_at            BIGINT,
    expired_at           BIGINT,
    cancelling_at        BIGINT,
    cancelled_at         BIGINT,
    total                BIGINT NOT NULL DEFAULT 0,
    completed            BIGINT NOT NULL DEFAULT 0,
    failed               BIGINT NOT NULL DEFAULT 0,
    metadata             TEXT,
    errors               TEXT,
    input_tokens         BIGINT NOT NULL DEFAULT 0,
    cached_tokens        BIGINT NOT NULL DEFAULT 0,
    output_tokens        BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens     BIGINT NOT NULL DEFAULT 0,
    total_tokens         BIGINT NOT NULL DEFAULT 0,
    output_expires_after BIGINT
);
CREATE INDEX batches_by_tenant ON batches (tenant, seq);
CREATE INDEX batches_by_status ON batches (status);

-- Each request's result until the batch's files are written.
CREATE TABLE results (
    batch_id TEXT NOT NULL,
    line     BIGINT NOT NULL,
    ok       BOOLEAN NOT NULL,
    body     TEXT NOT NULL,
    PRIMARY KEY (batch_id, line)
);

-- A batch's units of work and their leases: unit 0 is the batch itself
-- (validation, finalization), 1.. its chunks. Lease times are the
-- database's clock.
CREATE TABLE units (
    batch_id    TEXT NOT NULL,
    unit        INTEGER NOT NULL,
    first_line  BIGINT NOT NULL DEFAULT 1,
    end_line    BIGINT NOT NULL DEFAULT 0,
    start_byte  BIGINT NOT NULL DEFAULT 0,
    end_byte    BIGINT NOT NULL DEFAULT 0,
    done        BOOLEAN NOT NULL DEFAULT false,
    owner       TEXT,
    epoch       BIGINT NOT NULL DEFAULT 0,
    lease_until TIMESTAMPTZ NOT NULL DEFAULT '-infinity',
    PRIMARY KEY (batch_id, unit)
);
CREATE INDEX units_open ON units (batch_id) WHERE NOT done;
CREATE INDEX units_leased ON units (owner) WHERE owner IS NOT NULL;
