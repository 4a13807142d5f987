//! Test harness for Cordon: throwaway stores on every backend, the fixtures to fill
//! them, and the store conformance suite both backends must pass.
//!
//! ```text
//! for backend in TestBackend::ALL {
//!     let test = test_store(backend).await;
//!     test.store.ping().await?;
//! } // each store's temporary directory or database is gone here
//! ```
//!
//! SQLite stores live in a temporary directory. PostgreSQL stores each get a database of
//! their own on the server named by `CORDON_TEST_DATABASE_URL`, or on a private cluster
//! the harness starts once per test process when that variable is unset (this needs the
//! server binaries `initdb` and `pg_ctl`). PostgreSQL tests never skip themselves: with
//! neither available they fail, saying what to install or set.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cordon_store::Store;
use cordon_store_postgres::{PostgresOptions, PostgresStore};
use cordon_store_sqlite::{SqliteOptions, SqliteStore};

mod cluster;
pub mod conformance;
pub mod fixtures;
mod postgres;
pub mod s3;

pub use postgres::{DATABASE_URL_VAR, PostgresDatabase, fresh_postgres_database};

/// Connections each test's PostgreSQL store may open. Tests run in parallel against one
/// server, so this stays well below its `max_connections`.
const TEST_POOL_CONNECTIONS: u32 = 8;

/// A storage backend to run tests against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestBackend {
    Sqlite,
    Postgres,
}

impl TestBackend {
    pub const ALL: [TestBackend; 2] = [TestBackend::Sqlite, TestBackend::Postgres];

    pub fn as_str(self) -> &'static str {
        match self {
            TestBackend::Sqlite => "sqlite",
            TestBackend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for TestBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store for one test, and what it lives in. Dropping it deletes everything.
#[derive(Debug)]
pub struct TestStore {
    pub store: Arc<dyn Store>,
    // Declared after `store`, so dropped after it.
    place: Place,
}

#[derive(Debug)]
enum Place {
    Sqlite {
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
    Postgres {
        store: PostgresStore,
        database: PostgresDatabase,
    },
}

impl TestStore {
    pub fn backend(&self) -> TestBackend {
        match self.place {
            Place::Sqlite { .. } => TestBackend::Sqlite,
            Place::Postgres { .. } => TestBackend::Postgres,
        }
    }

    /// The URL of the store's own database, for PostgreSQL stores.
    pub fn database_url(&self) -> Option<String> {
        match &self.place {
            Place::Sqlite { .. } => None,
            Place::Postgres { database, .. } => Some(database.url().to_owned()),
        }
    }

    /// The database file, for SQLite stores.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &self.place {
            Place::Sqlite { path, .. } => Some(path),
            Place::Postgres { .. } => None,
        }
    }

    /// Closes the store and opens the same database again, as a restarted node would
    /// (migrations run again and must find nothing to do). Clones of the old `store`
    /// handle that the test still holds keep working for SQLite and fail for PostgreSQL.
    pub async fn reopen(self) -> TestStore {
        let TestStore { store, place } = self;
        drop(store);
        match place {
            Place::Sqlite { path, _dir } => TestStore {
                store: open_sqlite(&path),
                place: Place::Sqlite { path, _dir },
            },
            Place::Postgres { store, database } => {
                store.close().await;
                drop(store);
                let store = connect_postgres(database.url()).await;
                TestStore {
                    store: Arc::new(store.clone()),
                    place: Place::Postgres { store, database },
                }
            }
        }
    }
}

/// A fresh, empty, migrated store on `backend`. Panics if it cannot be had.
pub async fn test_store(backend: TestBackend) -> TestStore {
    match backend {
        TestBackend::Sqlite => {
            let dir = tempfile::Builder::new()
                .prefix("cordon-test-sqlite-")
                .tempdir()
                .unwrap_or_else(|error| panic!("cannot create a temporary directory: {error}"));
            let path = dir.path().join("cordon.db");
            TestStore {
                store: open_sqlite(&path),
                place: Place::Sqlite { path, _dir: dir },
            }
        }
        TestBackend::Postgres => {
            let database = fresh_postgres_database().await;
            let store = connect_postgres(database.url()).await;
            TestStore {
                store: Arc::new(store.clone()),
                place: Place::Postgres { store, database },
            }
        }
    }
}

fn open_sqlite(path: &Path) -> Arc<dyn Store> {
    match SqliteStore::open(SqliteOptions::new(path)) {
        Ok(store) => Arc::new(store),
        Err(error) => panic!("cannot open a SQLite store at {}: {error}", path.display()),
    }
}

async fn connect_postgres(url: &str) -> PostgresStore {
    let options = PostgresOptions {
        url: url.to_owned(),
        max_connections: TEST_POOL_CONNECTIONS,
    };
    match PostgresStore::connect(options).await {
        Ok(store) => store,
        Err(error) => panic!("cannot open a PostgreSQL store on {url}: {error}"),
    }
}
