-- Egress: policy versions, secrets, credential leases, decisions, deployment values.

CREATE TABLE egress_policies (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    version     INTEGER NOT NULL,
    document    TEXT NOT NULL,
    digest      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, version)
) WITHOUT ROWID;

-- A deleted secret keeps its row (leases and decisions name it) but not its value.
CREATE TABLE secrets (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    service_class  TEXT NOT NULL,
    header_name    TEXT NOT NULL,
    header_format  TEXT NOT NULL,
    sealed_value   BLOB NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    deleted_at     INTEGER
);
CREATE INDEX secrets_by_tenant ON secrets (tenant_id, id);
CREATE UNIQUE INDEX secrets_live_name ON secrets (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE credential_leases (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    session_id      TEXT NOT NULL REFERENCES sessions(id),
    secret_id       TEXT NOT NULL REFERENCES secrets(id),
    issued_by       TEXT NOT NULL,
    issued_at       INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    max_expires_at  INTEGER NOT NULL,
    revoked_at      INTEGER,
    revoke_reason   TEXT
);
CREATE INDEX credential_leases_by_session ON credential_leases (tenant_id, session_id, id);
CREATE INDEX credential_leases_by_secret ON credential_leases (secret_id);

-- Append-only: the triggers below refuse edits and deletions. No foreign key to
-- sessions: decisions outlive the sessions they are about.
CREATE TABLE egress_decisions (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    session_id       TEXT NOT NULL,
    at               INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    host             TEXT NOT NULL,
    port             INTEGER NOT NULL,
    address          TEXT,
    method           TEXT,
    path             TEXT,
    reason           TEXT NOT NULL,
    mode             TEXT NOT NULL,
    service_class    TEXT,
    rule             TEXT,
    policy_version   TEXT NOT NULL,
    credential       TEXT,
    status           INTEGER,
    bytes_sent       INTEGER NOT NULL,
    bytes_received   INTEGER NOT NULL,
    duration_micros  INTEGER NOT NULL
);
CREATE INDEX egress_decisions_by_tenant ON egress_decisions (tenant_id, seq);
CREATE INDEX egress_decisions_by_session ON egress_decisions (tenant_id, session_id, seq);
CREATE TRIGGER egress_decisions_no_update BEFORE UPDATE ON egress_decisions
BEGIN SELECT RAISE(ABORT, 'egress_decisions is append-only'); END;
CREATE TRIGGER egress_decisions_no_delete BEFORE DELETE ON egress_decisions
BEGIN SELECT RAISE(ABORT, 'egress_decisions is append-only'); END;

-- Deployment-wide values (the sealed egress CA, ...): written once, by the first node.
CREATE TABLE deployment_values (
    name   TEXT PRIMARY KEY,
    value  BLOB NOT NULL
) WITHOUT ROWID;
