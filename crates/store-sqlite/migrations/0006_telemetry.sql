-- Telemetry: how sessions end, and the facts the SRE metrics, cost accounting and the
-- weekly report are computed from.

ALTER TABLE sessions ADD COLUMN outcome TEXT;

-- Append-only: a fact is recorded once and never changed (docs/metrics.md).
CREATE TABLE telemetry_facts (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    kind            TEXT NOT NULL,
    at              INTEGER NOT NULL,
    session_id      TEXT,
    run_id          TEXT,
    workload_class  TEXT,
    outcome         TEXT,
    reason          TEXT,
    subject         TEXT,
    reference       TEXT,
    value           REAL NOT NULL DEFAULT 0,
    value2          REAL NOT NULL DEFAULT 0,
    bytes           INTEGER NOT NULL DEFAULT 0,
    count           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX telemetry_facts_at ON telemetry_facts (at);
CREATE INDEX telemetry_facts_tenant_at ON telemetry_facts (tenant_id, at);
CREATE INDEX telemetry_facts_run ON telemetry_facts (run_id) WHERE run_id IS NOT NULL;

CREATE TRIGGER telemetry_facts_no_update BEFORE UPDATE ON telemetry_facts
BEGIN
    SELECT RAISE(ABORT, 'telemetry facts are append-only');
END;

CREATE INDEX sessions_open_updated ON sessions (updated_at) WHERE phase <> 'closed';
