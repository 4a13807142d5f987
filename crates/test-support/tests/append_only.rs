//! `session_events` refuses updates and deletions in every backend, whoever asks: the
//! schema enforces it, not only the store code. These checks need raw SQL, which the
//! `Store` trait deliberately does not offer, so they open their own connection.

use cordon_core::Role;
use cordon_store::{Store, StoreError};
use cordon_test_support::{TestBackend, TestStore, fixtures, test_store};
use sqlx::{Connection, PgConnection};

/// A store holding one session, hence one event.
async fn store_with_an_event(backend: TestBackend) -> Result<TestStore, StoreError> {
    let test = test_store(backend).await;
    let store: &dyn Store = &*test.store;
    let tenant = fixtures::tenant("a");
    store.create_tenant(&tenant).await?;
    let key = fixtures::key(tenant.id, Role::Admin);
    store.create_key(&key).await?;
    store
        .create_session(&fixtures::new_session(tenant.id, key.id), "creator")
        .await?;
    Ok(test)
}

const TAMPERING: [&str; 3] = [
    "UPDATE session_events SET actor = 'mallory'",
    "UPDATE session_events SET seq = seq + 100",
    "DELETE FROM session_events",
];

#[tokio::test]
async fn sqlite_session_events_are_append_only() {
    let test = store_with_an_event(TestBackend::Sqlite).await.unwrap();
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
    let count: i64 = connection
        .query_row("SELECT COUNT(*) FROM session_events", [], |row| row.get(0))
        .unwrap();
    assert_eq!(count, 1);
    // Appending is what the table is for.
    connection
        .execute(
            "INSERT INTO session_events (session_id, seq, actor, to_phase, at)
             SELECT session_id, 2, 'x', 'active', 0 FROM session_events",
            [],
        )
        .unwrap();
}

#[tokio::test]
async fn postgres_session_events_are_append_only() {
    let test = store_with_an_event(TestBackend::Postgres).await.unwrap();
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
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM session_events")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(count, 1);
    sqlx::query(
        "INSERT INTO session_events (session_id, seq, actor, to_phase, at)
         SELECT session_id, 2, 'x', 'active', 0 FROM session_events",
    )
    .execute(&mut connection)
    .await
    .unwrap();
    connection.close().await.unwrap();
}
