-- Durable workflows: definitions, runs, their journal, dead letters, cron schedules.

-- Stored by content digest: the same document stored twice is one row.
CREATE TABLE workflow_definitions (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    digest      TEXT NOT NULL,
    name        TEXT NOT NULL,
    document    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, digest)
);

-- One row per run: the engine's state plus the columns the scheduler queries.
CREATE TABLE workflow_runs (
    id                TEXT PRIMARY KEY,
    tenant_id         TEXT NOT NULL REFERENCES tenants(id),
    definition        TEXT,
    name              TEXT NOT NULL,
    session_id        TEXT,
    status            TEXT NOT NULL,
    input             TEXT NOT NULL,
    state             TEXT NOT NULL,
    output            TEXT,
    reason            TEXT,
    idempotency_key   TEXT,
    created_by        TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    deadline          BIGINT,
    next_due_at       BIGINT,
    lease_holder      TEXT,
    lease_token       BIGINT NOT NULL,
    lease_expires_at  BIGINT,
    journal_seq       BIGINT NOT NULL,
    -- NULLs are distinct: runs without a key never clash.
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX workflow_runs_by_tenant ON workflow_runs (tenant_id, id);
-- Claims look for runs due now; a run waiting only for something from outside has no
-- due time and stays out of the index.
CREATE INDEX workflow_runs_due ON workflow_runs (next_due_at) WHERE next_due_at IS NOT NULL;
-- Claims also look for held runs whose lease lapsed, and for a node's own runs.
CREATE INDEX workflow_runs_leased ON workflow_runs (lease_expires_at) WHERE lease_holder IS NOT NULL;
CREATE INDEX workflow_runs_holder ON workflow_runs (lease_holder) WHERE lease_holder IS NOT NULL;

-- Append-only: the triggers below refuse edits and deletions.
CREATE TABLE workflow_journal (
    run_id   TEXT NOT NULL REFERENCES workflow_runs(id),
    seq      BIGINT NOT NULL,
    step     TEXT,
    attempt  BIGINT NOT NULL,
    kind     TEXT NOT NULL,
    reason   TEXT,
    detail   TEXT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE TRIGGER workflow_journal_append_only BEFORE UPDATE OR DELETE ON workflow_journal
FOR EACH ROW EXECUTE FUNCTION cordon_refuse_change();

CREATE TABLE workflow_dead_letters (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    run_id       TEXT NOT NULL REFERENCES workflow_runs(id),
    session_id   TEXT,
    step         TEXT NOT NULL,
    attempt      BIGINT NOT NULL,
    reason       TEXT NOT NULL,
    summary      TEXT NOT NULL,
    status       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    resolved_at  BIGINT,
    resolved_by  TEXT
);
CREATE INDEX workflow_dead_letters_by_tenant ON workflow_dead_letters (tenant_id, id);

CREATE TABLE workflow_schedules (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    definition    TEXT NOT NULL,
    cron          TEXT NOT NULL,
    input         TEXT NOT NULL,
    next_fire_at  BIGINT NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX workflow_schedules_by_tenant ON workflow_schedules (tenant_id, id);
CREATE INDEX workflow_schedules_due ON workflow_schedules (next_fire_at);
