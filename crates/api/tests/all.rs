//! The HTTP API v1 end to end: a real server per test on a loopback port, driven with
//! reqwest, every scenario on both SQLite and PostgreSQL.
//!
//! PostgreSQL tests need `CORDON_TEST_DATABASE_URL` (or local server binaries); see
//! `cordon-test-support`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod suite;
