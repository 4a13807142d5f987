//! The harness itself: where stores live, and that they are cleaned up.

use cordon_test_support::{TestBackend, fresh_postgres_database, test_store};
use sqlx::{Connection, PgConnection};

#[tokio::test]
async fn each_backend_says_where_its_store_lives() {
    let sqlite = test_store(TestBackend::Sqlite).await;
    assert_eq!(sqlite.backend(), TestBackend::Sqlite);
    assert_eq!(sqlite.store.backend(), cordon_store::Backend::Sqlite);
    assert_eq!(sqlite.database_url(), None);
    let path = sqlite.sqlite_path().unwrap().to_owned();
    assert!(path.exists());
    drop(sqlite);
    assert!(!path.exists(), "{} outlived its store", path.display());

    let postgres = test_store(TestBackend::Postgres).await;
    assert_eq!(postgres.backend(), TestBackend::Postgres);
    assert_eq!(postgres.store.backend(), cordon_store::Backend::Postgres);
    assert_eq!(postgres.sqlite_path(), None);
    let url = postgres.database_url().unwrap();
    assert!(url.contains("/cordon_test_"), "{url}");
    PgConnection::connect(&url)
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_databases_are_separate_and_dropped() {
    let first = fresh_postgres_database().await;
    let second = fresh_postgres_database().await;
    assert_ne!(first.name(), second.name());
    assert!(first.name().starts_with("cordon_test_") && first.name().len() == 44);

    let url = first.url().to_owned();
    // Left open on purpose: the drop must not wait for the test to disconnect.
    let open = PgConnection::connect(&url).await.unwrap();
    drop(first);
    let error = PgConnection::connect(&url).await.unwrap_err();
    assert!(error.to_string().contains("does not exist"), "{error}");
    drop(open);
    PgConnection::connect(second.url())
        .await
        .unwrap()
        .close()
        .await
        .unwrap();
}
