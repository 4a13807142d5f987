//! The PostgreSQL backend's migration bookkeeping: safe when several nodes start at once,
//! idempotent on restart, and refusing schemas it does not recognise.

use cordon_store::{Store, StoreError};
use cordon_store_postgres::{PostgresOptions, PostgresStore};
use cordon_test_support::fresh_postgres_database;
use sqlx::{Connection, PgConnection};

async fn connect(url: &str) -> Result<PostgresStore, StoreError> {
    PostgresStore::connect(PostgresOptions {
        url: url.to_owned(),
        max_connections: 2,
    })
    .await
}

async fn applied(url: &str) -> sqlx::Result<Vec<(i64, String)>> {
    let mut connection = PgConnection::connect(url).await?;
    let rows = sqlx::query_as("SELECT version, name FROM cordon_migrations ORDER BY version")
        .fetch_all(&mut connection)
        .await?;
    connection.close().await?;
    Ok(rows)
}

/// The migrations this binary ships, each applied once.
fn every_migration() -> Vec<(i64, String)> {
    vec![
        (1, "foundation".to_owned()),
        (2, "idempotency_expiry".to_owned()),
        (3, "egress".to_owned()),
        (4, "artifacts".to_owned()),
        (5, "workflows".to_owned()),
        (6, "telemetry".to_owned()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_migrate_once() {
    let database = fresh_postgres_database().await;
    let mut nodes = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let url = database.url().to_owned();
        nodes.spawn(async move { connect(&url).await });
    }
    for node in nodes.join_all().await {
        let store = node.unwrap();
        store.ping().await.unwrap();
        store.close().await;
    }
    assert_eq!(applied(database.url()).await.unwrap(), every_migration());

    // A restart finds nothing to do.
    let store = connect(database.url()).await.unwrap();
    assert!(store.list_tenants().await.unwrap().is_empty());
    store.close().await;
    assert_eq!(applied(database.url()).await.unwrap(), every_migration());
}

#[tokio::test]
async fn edited_and_unknown_migrations_are_refused() {
    let database = fresh_postgres_database().await;
    connect(database.url()).await.unwrap().close().await;
    let mut connection = PgConnection::connect(database.url()).await.unwrap();

    sqlx::query("UPDATE cordon_migrations SET checksum = checksum + 1 WHERE version = 1")
        .execute(&mut connection)
        .await
        .unwrap();
    let StoreError::Backend(message) = connect(database.url()).await.unwrap_err() else {
        panic!("expected a backend error");
    };
    assert!(
        message.contains("changed after it was applied"),
        "{message}"
    );

    sqlx::query("UPDATE cordon_migrations SET checksum = checksum - 1 WHERE version = 1")
        .execute(&mut connection)
        .await
        .unwrap();
    sqlx::query("INSERT INTO cordon_migrations VALUES (99, 'future', 0, 0)")
        .execute(&mut connection)
        .await
        .unwrap();
    let StoreError::Backend(message) = connect(database.url()).await.unwrap_err() else {
        panic!("expected a backend error");
    };
    assert!(message.contains("newer than this binary"), "{message}");
    connection.close().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Nothing listens on port 1: the connection is refused at once.
    let error = connect("postgres://postgres@127.0.0.1:1/postgres")
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
}
