//! `session_events` and `egress_decisions` refuse updates and deletions in every
//! backend, whoever asks: the schema enforces it, not only the store code. These checks need raw SQL, which the
//! `Store` trait deliberately does not offer, so they open their own connection.

use cordon_core::{EgressDecision, ReasonCode, Role, SessionId};
use cordon_store::{Store, StoreError};
use cordon_test_support::{TestBackend, TestStore, fixtures, test_store};
use sqlx::{Connection, PgConnection};

/// A store holding one session, hence one event, and one egress decision.
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
    store
        .append_egress_decisions(&[EgressDecision {
            seq: 0,
            tenant_id: tenant.id,
            session_id: SessionId::generate(),
            at: fixtures::at(1),
            kind: "http".to_owned(),
            host: "example.com".to_owned(),
            port: 80,
            address: None,
            method: Some("GET".to_owned()),
            path: Some("/".to_owned()),
            reason: ReasonCode::EgressDestinationNotAllowed,
            mode: "enforce".to_owned(),
            service_class: None,
            rule: None,
            policy_version: "1".to_owned(),
            credential: None,
            status: None,
            bytes_sent: 0,
            bytes_received: 0,
            duration_micros: 10,
        }])
        .await?;
    Ok(test)
}

const TAMPERING: [&str; 6] = [
    "UPDATE session_events SET actor = 'mallory'",
    "UPDATE session_events SET seq = seq + 100",
    "DELETE FROM session_events",
    "UPDATE egress_decisions SET reason = 'EGRESS_ALLOWED'",
    "UPDATE egress_decisions SET host = 'elsewhere.example', bytes_sent = 0",
    "DELETE FROM egress_decisions",
];

/// Each table with one row, and an append that must still work.
const TABLES: [(&str, &str, &str); 2] = [
    (
        "session_events",
        "SELECT COUNT(*) FROM session_events",
        "INSERT INTO session_events (session_id, seq, actor, to_phase, at)
         SELECT session_id, 2, 'x', 'active', 0 FROM session_events",
    ),
    (
        "egress_decisions",
        "SELECT COUNT(*) FROM egress_decisions",
        "INSERT INTO egress_decisions (tenant_id, session_id, at, kind, host, port, reason,
             mode, policy_version, bytes_sent, bytes_received, duration_micros)
         SELECT tenant_id, session_id, 2, kind, host, port, 'EGRESS_ALLOWED', mode,
             policy_version, 0, 0, 0 FROM egress_decisions",
    ),
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
    for (table, count, append) in TABLES {
        let rows: i64 = connection.query_row(count, [], |row| row.get(0)).unwrap();
        assert_eq!(rows, 1, "{table}");
        // Appending is what the table is for.
        connection.execute(append, []).unwrap();
    }
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
    for (table, count, append) in TABLES {
        let rows: i64 = sqlx::query_scalar(count)
            .fetch_one(&mut connection)
            .await
            .unwrap();
        assert_eq!(rows, 1, "{table}");
        sqlx::query(append).execute(&mut connection).await.unwrap();
    }
    connection.close().await.unwrap();
}
