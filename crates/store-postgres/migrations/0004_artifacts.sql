-- Artifacts: workspace versions, the per-tenant evidence log, releases.

-- Versions of a session form a chain; retention marks them removed (`deleted_at`) and
-- never deletes the row.
CREATE TABLE workspace_versions (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    session_id     TEXT NOT NULL REFERENCES sessions(id),
    parent         TEXT,
    root           TEXT NOT NULL,
    summary        TEXT NOT NULL,
    files          BIGINT NOT NULL,
    dirs           BIGINT NOT NULL,
    symlinks       BIGINT NOT NULL,
    bytes          BIGINT NOT NULL,
    blobs_written  BIGINT NOT NULL,
    bytes_written  BIGINT NOT NULL,
    origin         TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    deleted_at     BIGINT
);
CREATE INDEX workspace_versions_by_session ON workspace_versions (tenant_id, session_id, id);
-- One live version per parent (and one live first version per session): the chain
-- cannot fork, whatever the code above it does.
CREATE UNIQUE INDEX workspace_versions_one_child
    ON workspace_versions (session_id, COALESCE(parent, '')) WHERE deleted_at IS NULL;

-- Retention looks for sessions closed long enough ago.
CREATE INDEX sessions_closed_by_age ON sessions (updated_at) WHERE phase = 'closed';

-- How many entries each tenant's evidence log holds: the next index to hand out. An
-- append updates its tenant's row and holds the row lock until it commits, so appends
-- of one tenant take their indexes, and commit, one after the other.
CREATE TABLE evidence_heads (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants(id),
    size       BIGINT NOT NULL
);

-- Append-only: the trigger below (its function is in 0001) refuses edits and deletions.
-- No foreign key to sessions: evidence outlives the sessions it is about, and some is
-- about none.
CREATE TABLE evidence_entries (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    idx         BIGINT NOT NULL,
    session_id  TEXT,
    kind        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    leaf        TEXT NOT NULL,
    leaf_hash   BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, idx)
);
CREATE INDEX evidence_entries_by_session ON evidence_entries (tenant_id, session_id, idx);
-- Shredding walks entries by age.
CREATE INDEX evidence_entries_by_age ON evidence_entries (tenant_id, at);
CREATE TRIGGER evidence_entries_append_only BEFORE UPDATE OR DELETE ON evidence_entries
FOR EACH ROW EXECUTE FUNCTION cordon_refuse_change();

-- An entry's payload, field by field. Deleting a field is shredding it (its entry's leaf
-- keeps the commitment); changing one is refused.
CREATE TABLE evidence_fields (
    tenant_id  TEXT NOT NULL,
    idx        BIGINT NOT NULL,
    name       TEXT NOT NULL,
    salt       TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, idx, name),
    FOREIGN KEY (tenant_id, idx) REFERENCES evidence_entries (tenant_id, idx)
);
CREATE FUNCTION cordon_refuse_field_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% can be shredded (deleted), never changed', TG_TABLE_NAME;
END;
$$;
CREATE TRIGGER evidence_fields_no_update BEFORE UPDATE ON evidence_fields
FOR EACH ROW EXECUTE FUNCTION cordon_refuse_field_change();

-- Signed tree heads. Append-only: the trigger below refuses edits and deletions.
CREATE TABLE evidence_checkpoints (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    size       BIGINT NOT NULL,
    root       BYTEA NOT NULL,
    note       TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, size)
);
CREATE TRIGGER evidence_checkpoints_append_only BEFORE UPDATE OR DELETE ON evidence_checkpoints
FOR EACH ROW EXECUTE FUNCTION cordon_refuse_change();

-- Releases are immutable: the trigger below refuses deletions and every edit but
-- marking a live release removed. A name is never reused, removed or not.
CREATE TABLE releases (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    name        TEXT NOT NULL,
    session_id  TEXT NOT NULL REFERENCES sessions(id),
    version_id  TEXT NOT NULL REFERENCES workspace_versions(id),
    root        TEXT NOT NULL,
    envelope    TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT,
    UNIQUE (tenant_id, name)
);
CREATE INDEX releases_by_tenant ON releases (tenant_id, id);
CREATE FUNCTION cordon_release_removal_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL
       AND (NEW.id, NEW.tenant_id, NEW.name, NEW.session_id, NEW.version_id, NEW.root,
            NEW.envelope, NEW.created_by, NEW.created_at)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.tenant_id, OLD.name, OLD.session_id, OLD.version_id, OLD.root,
            OLD.envelope, OLD.created_by, OLD.created_at)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'releases are immutable: only deleted_at may be set, once';
END;
$$;
CREATE TRIGGER releases_removal_only BEFORE UPDATE OR DELETE ON releases
FOR EACH ROW EXECUTE FUNCTION cordon_release_removal_only();
