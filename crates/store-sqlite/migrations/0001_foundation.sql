CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    role          TEXT NOT NULL,
    name          TEXT NOT NULL,
    system        INTEGER NOT NULL,
    token_digest  BLOB NOT NULL UNIQUE,
    created_by    TEXT,
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, id);

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    owner           TEXT NOT NULL,
    workload_class  TEXT NOT NULL,
    environment     TEXT NOT NULL,
    labels          TEXT NOT NULL,
    policy_version  TEXT NOT NULL,
    phase           TEXT NOT NULL,
    version         INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX sessions_by_tenant ON sessions (tenant_id, id);
CREATE INDEX sessions_by_tenant_phase ON sessions (tenant_id, phase, id);
CREATE INDEX sessions_by_phase ON sessions (phase);

-- Append-only: the triggers below refuse edits and deletions.
CREATE TABLE session_events (
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    seq         INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    from_phase  TEXT,
    to_phase    TEXT NOT NULL,
    reason      TEXT,
    at          INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TRIGGER session_events_no_update BEFORE UPDATE ON session_events
BEGIN SELECT RAISE(ABORT, 'session_events is append-only'); END;
CREATE TRIGGER session_events_no_delete BEFORE DELETE ON session_events
BEGIN SELECT RAISE(ABORT, 'session_events is append-only'); END;

CREATE TABLE session_leases (
    session_id  TEXT PRIMARY KEY REFERENCES sessions(id),
    holder      TEXT NOT NULL,
    token       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE idempotency_keys (
    tenant_id     TEXT NOT NULL,
    principal     TEXT NOT NULL,
    key           TEXT NOT NULL,
    fingerprint   BLOB NOT NULL,
    status        INTEGER,
    body          BLOB,
    created_at    INTEGER NOT NULL,
    completed_at  INTEGER,
    PRIMARY KEY (tenant_id, principal, key)
) WITHOUT ROWID;
