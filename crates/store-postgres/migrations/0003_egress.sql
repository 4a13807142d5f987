-- Egress: policy versions, secrets, credential leases, decisions, deployment values.

CREATE TABLE egress_policies (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    version     BIGINT NOT NULL,
    document    TEXT NOT NULL,
    digest      TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

-- A deleted secret keeps its row (leases and decisions name it) but not its value.
CREATE TABLE secrets (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    name           TEXT NOT NULL,
    service_class  TEXT NOT NULL,
    header_name    TEXT NOT NULL,
    header_format  TEXT NOT NULL,
    sealed_value   BYTEA NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    deleted_at     BIGINT
);
CREATE INDEX secrets_by_tenant ON secrets (tenant_id, id);
CREATE UNIQUE INDEX secrets_live_name ON secrets (tenant_id, name) WHERE deleted_at IS NULL;

CREATE TABLE credential_leases (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    session_id      TEXT NOT NULL REFERENCES sessions(id),
    secret_id       TEXT NOT NULL REFERENCES secrets(id),
    issued_by       TEXT NOT NULL,
    issued_at       BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    max_expires_at  BIGINT NOT NULL,
    revoked_at      BIGINT,
    revoke_reason   TEXT
);
CREATE INDEX credential_leases_by_session ON credential_leases (tenant_id, session_id, id);
CREATE INDEX credential_leases_by_secret ON credential_leases (secret_id);

-- Append-only: the trigger below (its function is in 0001) refuses edits and deletions.
-- No foreign key to sessions: decisions outlive the sessions they are about.
CREATE TABLE egress_decisions (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants(id),
    session_id       TEXT NOT NULL,
    at               BIGINT NOT NULL,
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
    bytes_sent       BIGINT NOT NULL,
    bytes_received   BIGINT NOT NULL,
    duration_micros  BIGINT NOT NULL
);
CREATE INDEX egress_decisions_by_tenant ON egress_decisions (tenant_id, seq);
CREATE INDEX egress_decisions_by_session ON egress_decisions (tenant_id, session_id, seq);
CREATE TRIGGER egress_decisions_append_only BEFORE UPDATE OR DELETE ON egress_decisions
FOR EACH ROW EXECUTE FUNCTION cordon_refuse_change();

-- Deployment-wide values (the sealed egress CA, ...): written once, by the first node.
CREATE TABLE deployment_values (
    name   TEXT PRIMARY KEY,
    value  BYTEA NOT NULL
);
