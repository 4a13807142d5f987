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
    files          INTEGER NOT NULL,
    dirs           INTEGER NOT NULL,
    symlinks       INTEGER NOT NULL,
    bytes          INTEGER NOT NULL,
    blobs_written  INTEGER NOT NULL,
    bytes_written  INTEGER NOT NULL,
    origin         TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    deleted_at     INTEGER
);
CREATE INDEX workspace_versions_by_session ON workspace_versions (tenant_id, session_id, id);
-- One live version per parent (and one live first version per session): the chain
-- cannot fork, whatever the code above it does.
CREATE UNIQUE INDEX workspace_versions_one_child
    ON workspace_versions (session_id, COALESCE(parent, '')) WHERE deleted_at IS NULL;

-- Retention looks for sessions closed long enough ago.
CREATE INDEX sessions_closed_by_age ON sessions (updated_at) WHERE phase = 'closed';

-- How many entries each tenant's evidence log holds: the next index to hand out.
CREATE TABLE evidence_heads (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants(id),
    size       INTEGER NOT NULL
) WITHOUT ROWID;

-- Append-only: the triggers below refuse edits and deletions. No foreign key to
-- sessions: evidence outlives the sessions it is about, and some is about none.
CREATE TABLE evidence_entries (
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    idx         INTEGER NOT NULL,
    session_id  TEXT,
    kind        TEXT NOT NULL,
    at          INTEGER NOT NULL,
    leaf        TEXT NOT NULL,
    leaf_hash   BLOB NOT NULL,
    PRIMARY KEY (tenant_id, idx)
) WITHOUT ROWID;
CREATE INDEX evidence_entries_by_session ON evidence_entries (tenant_id, session_id, idx);
-- Shredding walks entries by age.
CREATE INDEX evidence_entries_by_age ON evidence_entries (tenant_id, at);
CREATE TRIGGER evidence_entries_no_update BEFORE UPDATE ON evidence_entries
BEGIN SELECT RAISE(ABORT, 'evidence_entries is append-only'); END;
CREATE TRIGGER evidence_entries_no_delete BEFORE DELETE ON evidence_entries
BEGIN SELECT RAISE(ABORT, 'evidence_entries is append-only'); END;

-- An entry's payload, field by field. Deleting a field is shredding it (its entry's leaf
-- keeps the commitment); changing one is refused.
CREATE TABLE evidence_fields (
    tenant_id  TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    name       TEXT NOT NULL,
    salt       TEXT NOT NULL,
    value      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, idx, name),
    FOREIGN KEY (tenant_id, idx) REFERENCES evidence_entries (tenant_id, idx)
) WITHOUT ROWID;
CREATE TRIGGER evidence_fields_no_update BEFORE UPDATE ON evidence_fields
BEGIN SELECT RAISE(ABORT, 'evidence_fields can be shredded (deleted), never changed'); END;

-- Signed tree heads. Append-only: the triggers below refuse edits and deletions.
CREATE TABLE evidence_checkpoints (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    size       INTEGER NOT NULL,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, size)
) WITHOUT ROWID;
CREATE TRIGGER evidence_checkpoints_no_update BEFORE UPDATE ON evidence_checkpoints
BEGIN SELECT RAISE(ABORT, 'evidence_checkpoints is append-only'); END;
CREATE TRIGGER evidence_checkpoints_no_delete BEFORE DELETE ON evidence_checkpoints
BEGIN SELECT RAISE(ABORT, 'evidence_checkpoints is append-only'); END;

-- Releases are immutable: the triggers below refuse deletions and every edit but
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
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER,
    UNIQUE (tenant_id, name)
);
CREATE INDEX releases_by_tenant ON releases (tenant_id, id);
CREATE TRIGGER releases_only_removal BEFORE UPDATE ON releases
WHEN OLD.deleted_at IS NOT NULL OR NEW.deleted_at IS NULL
  OR NEW.id IS NOT OLD.id OR NEW.tenant_id IS NOT OLD.tenant_id OR NEW.name IS NOT OLD.name
  OR NEW.session_id IS NOT OLD.session_id OR NEW.version_id IS NOT OLD.version_id
  OR NEW.root IS NOT OLD.root OR NEW.envelope IS NOT OLD.envelope
  OR NEW.created_by IS NOT OLD.created_by OR NEW.created_at IS NOT OLD.created_at
BEGIN SELECT RAISE(ABORT, 'releases are immutable: only deleted_at may be set, once'); END;
CREATE TRIGGER releases_no_delete BEFORE DELETE ON releases
BEGIN SELECT RAISE(ABORT, 'releases are immutable: only deleted_at may be set, once'); END;
