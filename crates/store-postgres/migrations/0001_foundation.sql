CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    role          TEXT NOT NULL,
    name          TEXT NOT NULL,
    system        BOOLEAN NOT NULL,
    token_digest  BYTEA NOT NULL UNIQUE,
    created_by    TEXT,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
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
    version         BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX sessions_by_tenant ON sessions (tenant_id, id);
CREATE INDEX sessions_by_tenant_phase ON sessions (tenant_id, phase, id);
CREATE INDEX sessions_by_phase ON sessions (phase);

-- Append-only: the trigger below refuses edits and deletions.
CREATE TABLE session_events (
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    seq         BIGINT NOT NULL,
    actor       TEXT NOT NULL,
    from_phase  TEXT,
    to_phase    TEXT NOT NULL,
    reason      TEXT,
    at          BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE FUNCTION cordon_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER session_events_append_only BEFORE UPDATE OR DELETE ON session_events
FOR EACH ROW EXECUTE FUNCTION cordon_refuse_change();

CREATE TABLE session_leases (
    session_id  TEXT PRIMARY KEY REFERENCES sessions(id),
    holder      TEXT NOT NULL,
    token       BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE idempotency_keys (
    tenant_id     TEXT NOT NULL,
    principal     TEXT NOT NULL,
    key           TEXT NOT NULL,
    fingerprint   BYTEA NOT NULL,
    status        INTEGER,
    body          BYTEA,
    created_at    BIGINT NOT NULL,
    completed_at  BIGINT,
    PRIMARY KEY (tenant_id, principal, key)
);
