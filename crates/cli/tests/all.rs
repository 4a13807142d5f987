//! End-to-end tests of the real `cordon` binary: `cordon serve` as a child process and
//! the client commands as subprocesses, on SQLite and on PostgreSQL.
//!
//! PostgreSQL tests create a throwaway database on the server named by
//! `CORDON_TEST_DATABASE_URL` (see cordon-test-support).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod suite;
