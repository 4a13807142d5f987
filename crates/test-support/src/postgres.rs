//! Throwaway PostgreSQL databases.
//!
//! Every test gets a database of its own, `cordon_test_<32 hex digits>`, created through
//! an administrative connection and dropped (`WITH (FORCE)`) when its guard is dropped.
//! The server is the one named by `CORDON_TEST_DATABASE_URL` if that is set, otherwise a
//! private cluster started once per test process (see [`crate::cluster`]).

use sqlx::{AssertSqlSafe, Connection, PgConnection};

use crate::cluster;

/// The environment variable naming the server to create test databases on.
pub const DATABASE_URL_VAR: &str = "CORDON_TEST_DATABASE_URL";

/// Why a PostgreSQL test cannot run, printed before the specific cause.
pub(crate) const NO_SERVER: &str = "PostgreSQL tests need CORDON_TEST_DATABASE_URL \
     (e.g. postgres://postgres@127.0.0.1:5432/postgres) or the PostgreSQL server binaries \
     initdb and pg_ctl (Debian: apt-get install postgresql)";

/// A database created for one test, dropped with everything in it when this is dropped.
#[derive(Debug)]
pub struct PostgresDatabase {
    name: String,
    url: String,
    admin_url: String,
}

impl PostgresDatabase {
    /// A URL that connects to this database (pass it as `--database-url`).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Creates an empty database on the test server. Panics, with the reason, if there is no
/// server to use or it refuses.
pub async fn fresh_postgres_database() -> PostgresDatabase {
    let admin_url = admin_url();
    let name = format!("cordon_test_{}", crate::fixtures::unique_hex());
    let created = async {
        let mut connection = PgConnection::connect(&admin_url).await?;
        // The name is ours (fixed prefix, hex digits): nothing to escape.
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut connection)
            .await?;
        connection.close().await
    };
    if let Err(error) = created.await {
        panic!("cannot create test database {name} through {admin_url}: {error}");
    }
    let url = with_database(&admin_url, &name);
    PostgresDatabase {
        name,
        url,
        admin_url,
    }
}

impl Drop for PostgresDatabase {
    /// Drops the database from a thread of its own with its own runtime, so that the guard
    /// can be dropped anywhere: in async code, in sync code, during a panic.
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        let dropped = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| error.to_string())?;
            runtime
                .block_on(async {
                    let mut connection = PgConnection::connect(&admin_url).await?;
                    let statement = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    sqlx::raw_sql(AssertSqlSafe(statement))
                        .execute(&mut connection)
                        .await?;
                    connection.close().await
                })
                .map_err(|error| error.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!("warning: cannot drop test database {}: {error}", self.name)
            }
            Err(_) => eprintln!("warning: dropping test database {} panicked", self.name),
        }
    }
}

/// The administrative URL of the test server, starting the private cluster if needed.
pub(crate) fn admin_url() -> String {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => {
            if !url.contains("://") {
                panic!(
                    "{DATABASE_URL_VAR} must be a URL such as \
                     postgres://user@host:5432/postgres, not `{url}`"
                );
            }
            url
        }
        _ => match cluster::shared() {
            Ok(url) => url.to_owned(),
            Err(why) => panic!("{NO_SERVER}.\n{why}"),
        },
    }
}

/// `url` with its database (the path) replaced by `database`, keeping everything else.
pub(crate) fn with_database(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[authority_start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority_start + i);
    let rest = &url[authority_end..];
    let suffix = match rest.strip_prefix('/') {
        Some(path_and_more) => {
            &path_and_more[path_and_more
                .find(['?', '#'])
                .unwrap_or(path_and_more.len())..]
        }
        None => rest,
    };
    format!("{}/{database}{suffix}", &url[..authority_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_the_database() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgres://u:p@h:1/db?sslmode=disable",
                "postgres://u:p@h:1/x?sslmode=disable",
            ),
            ("postgres://u@h", "postgres://u@h/x"),
            (
                "postgres://u@h?sslmode=disable",
                "postgres://u@h/x?sslmode=disable",
            ),
            (
                "postgresql:///db?host=/run/postgresql",
                "postgresql:///x?host=/run/postgresql",
            ),
            ("postgres://h/", "postgres://h/x"),
        ];
        for (url, expected) in cases {
            assert_eq!(with_database(url, "x"), expected, "{url}");
        }
    }
}
