//! The artifact tables defend themselves in every backend, whoever asks: evidence
//! entries and checkpoints are append-only, evidence fields can be deleted (shredded)
//! but not changed, and a release can only be marked removed, once. Like
//! `append_only.rs`, these checks need raw SQL, so they open their own connection.

use cordon_core::{
    EvidenceCheckpoint, EvidenceField, NewEvidenceEntry, Release, ReleaseId, Role, VersionId,
    VersionStats, WorkspaceVersion,
};
use cordon_store::{Store, StoreError};
use cordon_test_support::{TestBackend, TestStore, fixtures, test_store};
use sqlx::{Connection, PgConnection};

/// A store holding one version, one evidence entry with one field, one checkpoint and
/// one release.
async fn store_with_artifacts(backend: TestBackend) -> Result<TestStore, StoreError> {
    let test = test_store(backend).await;
    let store: &dyn Store = &*test.store;
    let tenant = fixtures::tenant("a");
    store.create_tenant(&tenant).await?;
    let key = fixtures::key(tenant.id, Role::Admin);
    store.create_key(&key).await?;
    let session = store
        .create_session(&fixtures::new_session(tenant.id, key.id), "creator")
        .await?;
    let version = WorkspaceVersion {
        id: VersionId::generate(),
        tenant_id: tenant.id,
        session_id: session.id,
        parent: None,
        root: "root".to_owned(),
        summary: "first".to_owned(),
        stats: VersionStats::default(),
        origin: "checkpoint".to_owned(),
        created_by: "creator".to_owned(),
        created_at: fixtures::at(1),
        deleted_at: None,
    };
    store.create_version(&version).await?;
    store
        .append_evidence(&[NewEvidenceEntry {
            tenant_id: tenant.id,
            session_id: Some(session.id),
            kind: "exec".to_owned(),
            at: fixtures::at(1),
            leaf: "{}".to_owned(),
            leaf_hash: [7; 32],
            fields: vec![EvidenceField {
                name: "command".to_owned(),
                salt: "00".repeat(16),
                value: "\"ls\"".to_owned(),
            }],
        }])
        .await?;
    store
        .put_evidence_checkpoint(&EvidenceCheckpoint {
            tenant_id: tenant.id,
            size: 1,
            root: [8; 32],
            note: "note".to_owned(),
            at: fixtures::at(2),
        })
        .await?;
    store
        .create_release(&Release {
            id: ReleaseId::generate(),
            tenant_id: tenant.id,
            name: "v1".to_owned(),
            session_id: session.id,
            version_id: version.id,
            root: "release-root".to_owned(),
            envelope: "{}".to_owned(),
            created_by: "creator".to_owned(),
            created_at: fixtures::at(3),
            deleted_at: None,
        })
        .await?;
    Ok(test)
}

/// Statements the schema refuses, and a word of the error each must give.
const REFUSED: [(&str, &str); 12] = [
    ("UPDATE evidence_entries SET kind = 'forged'", "append-only"),
    ("UPDATE evidence_entries SET idx = idx + 100", "append-only"),
    ("DELETE FROM evidence_entries", "append-only"),
    (
        "UPDATE evidence_fields SET value = '\"rm -rf\"'",
        "never changed",
    ),
    (
        "UPDATE evidence_checkpoints SET note = 'forged'",
        "append-only",
    ),
    ("DELETE FROM evidence_checkpoints", "append-only"),
    ("DELETE FROM releases", "immutable"),
    ("UPDATE releases SET name = 'renamed'", "immutable"),
    (
        "UPDATE releases SET root = 'other', deleted_at = 9",
        "immutable",
    ),
    ("UPDATE releases SET deleted_at = NULL", "immutable"),
    ("UPDATE releases SET envelope = '[]'", "immutable"),
    ("UPDATE releases SET created_at = 0", "immutable"),
];

/// What the schema allows: shredding fields and marking a release removed.
const ALLOWED: [(&str, &str); 2] = [
    (
        "DELETE FROM evidence_fields",
        "SELECT COUNT(*) FROM evidence_fields",
    ),
    (
        "UPDATE releases SET deleted_at = 10",
        "SELECT COUNT(*) FROM releases WHERE deleted_at IS NULL",
    ),
];

/// A removed release stays removed, at its first removal time.
const REFUSED_AFTER_REMOVAL: [&str; 2] = [
    "UPDATE releases SET deleted_at = 11",
    "UPDATE releases SET deleted_at = NULL",
];

#[tokio::test]
async fn sqlite_artifact_tables_defend_themselves() {
    let test = store_with_artifacts(TestBackend::Sqlite).await.unwrap();
    let connection = rusqlite::Connection::open(test.sqlite_path().unwrap()).unwrap();
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    for (statement, word) in REFUSED {
        let error = connection.execute(statement, []).unwrap_err();
        assert!(error.to_string().contains(word), "{statement}: {error}");
    }
    for (statement, remaining) in ALLOWED {
        assert_eq!(connection.execute(statement, []).unwrap(), 1, "{statement}");
        let rows: i64 = connection
            .query_row(remaining, [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 0, "{statement}");
    }
    for statement in REFUSED_AFTER_REMOVAL {
        let error = connection.execute(statement, []).unwrap_err();
        assert!(
            error.to_string().contains("immutable"),
            "{statement}: {error}"
        );
    }
    let removed_at: i64 = connection
        .query_row("SELECT deleted_at FROM releases", [], |row| row.get(0))
        .unwrap();
    assert_eq!(removed_at, 10);
}

#[tokio::test]
async fn postgres_artifact_tables_defend_themselves() {
    let test = store_with_artifacts(TestBackend::Postgres).await.unwrap();
    let mut connection = PgConnection::connect(&test.database_url().unwrap())
        .await
        .unwrap();
    for (statement, word) in REFUSED {
        let error = sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert!(error.to_string().contains(word), "{statement}: {error}");
    }
    for (statement, remaining) in ALLOWED {
        let done = sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1, "{statement}");
        let rows: i64 = sqlx::query_scalar(remaining)
            .fetch_one(&mut connection)
            .await
            .unwrap();
        assert_eq!(rows, 0, "{statement}");
    }
    for statement in REFUSED_AFTER_REMOVAL {
        let error = sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("immutable"),
            "{statement}: {error}"
        );
    }
    let removed_at: i64 = sqlx::query_scalar("SELECT deleted_at FROM releases")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(removed_at, 10);
    connection.close().await.unwrap();
}
