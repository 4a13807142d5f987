//! `workflow_journal` refuses updates and deletions in every backend, whoever asks: the
//! schema enforces it, not only the store code. Like `append_only.rs`, these checks need
//! raw SQL, so they open their own connection.

use cordon_core::{NewJournalEntry, NewRun, RunId, RunStatus};
use cordon_store::{RunCreated, Store, StoreError};
use cordon_test_support::{TestBackend, TestStore, fixtures, test_store};
use sqlx::{Connection, PgConnection};

/// A store holding one run with one journal entry.
async fn store_with_a_run(backend: TestBackend) -> Result<TestStore, StoreError> {
    let test = test_store(backend).await;
    let store: &dyn Store = &*test.store;
    let tenant = fixtures::tenant("a");
    store.create_tenant(&tenant).await?;
    let run = NewRun {
        id: RunId::generate(),
        tenant_id: tenant.id,
        definition: None,
        name: "run".to_owned(),
        session_id: None,
        status: RunStatus::Running,
        input: "{}".to_owned(),
        state: "{}".to_owned(),
        idempotency_key: None,
        created_by: "creator".to_owned(),
        created_at: fixtures::at(1),
        deadline: None,
        next_due_at: None,
        lease_holder: None,
        lease_expires_at: None,
    };
    let entry = NewJournalEntry {
        step: None,
        attempt: 1,
        kind: "run_started".to_owned(),
        reason: None,
        detail: "{}".to_owned(),
        at: fixtures::at(1),
    };
    let created = store.create_run(&run, &[entry]).await?;
    assert!(matches!(created, RunCreated::New(_)), "{created:?}");
    Ok(test)
}

const TAMPERING: [&str; 3] = [
    "UPDATE workflow_journal SET detail = '{\"forged\":true}'",
    "UPDATE workflow_journal SET seq = seq + 100",
    "DELETE FROM workflow_journal",
];

const COUNT: &str = "SELECT COUNT(*) FROM workflow_journal";

/// Appending is what the table is for.
const APPEND: &str = "INSERT INTO workflow_journal (run_id, seq, attempt, kind, detail, at)
     SELECT run_id, 2, 1, 'signal', '{}', 2 FROM workflow_journal";

#[tokio::test]
async fn sqlite_workflow_journal_is_append_only() {
    let test = store_with_a_run(TestBackend::Sqlite).await.unwrap();
    let connection = rusqlite::Connection::open(test.sqlite_path().unwrap()).unwrap();
    connection
        .busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    for statement in TAMPERING {
        let error = connection.execute(statement, []).unwrap_err();
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let rows: i64 = connection.query_row(COUNT, [], |row| row.get(0)).unwrap();
    assert_eq!(rows, 1);
    connection.execute(APPEND, []).unwrap();
}

#[tokio::test]
async fn postgres_workflow_journal_is_append_only() {
    let test = store_with_a_run(TestBackend::Postgres).await.unwrap();
    let mut connection = PgConnection::connect(&test.database_url().unwrap())
        .await
        .unwrap();
    for statement in TAMPERING {
        let error = sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("append-only"),
            "{statement}: {error}"
        );
    }
    let rows: i64 = sqlx::query_scalar(COUNT)
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    sqlx::query(APPEND).execute(&mut connection).await.unwrap();
    connection.close().await.unwrap();
}
