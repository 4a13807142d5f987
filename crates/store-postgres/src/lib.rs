//! The PostgreSQL backend, for several Cordon nodes sharing one database.
//!
//! It keeps exactly the semantics of the embedded SQLite backend (the conformance suite
//! in `cordon-test-support` runs against both); only the means differ:
//!
//! - Durability: a write returns once its transaction has committed, which the server
//!   makes durable as long as `synchronous_commit` is left on (its default).
//! - Concurrency: where SQLite's single writer serialises everything, this backend relies
//!   on row locks taken by the writing statements themselves. A transition checks the
//!   session's phase and share-locks the lease row carrying its fencing token in the very
//!   `UPDATE` that writes, so a lease takeover waits for in-flight writes under the old
//!   token, and every write under it after that is refused. `bootstrap` locks the
//!   `tenants` table against concurrent inserts, and `idempotency_begin` claims its key
//!   with an `INSERT ... ON CONFLICT DO NOTHING` before inspecting it under `FOR UPDATE`.
//!   `create_version` locks the session's row before it reads the head, so versions of a
//!   session are made one at a time (a partial unique index backs this up), and
//!   `append_evidence` takes its indexes from each tenant's `evidence_heads` row, whose
//!   lock it holds until commit: appends of a tenant number and commit in turn.
//! - Migrations: several nodes may start at once; each migration runs in its own
//!   transaction under a transaction-scoped advisory lock, so exactly one applies it.
//!
//! Ids are compared and ordered as text under the database's collation, so that the
//! default indexes serve cursor pagination. Ids are a fixed prefix and fixed-length
//! lowercase hex, which `C`, `C.UTF-8` and the usual language collations all sort like
//! SQLite does (bytewise); a collation with numeric ordering of digits would not.

#[allow(
    unsafe_code,
    reason = "borrows a socket descriptor sqlx owns to set TCP_NODELAY; see the module"
)]
mod nodelay;
mod rows;
mod store;
mod workflow;

pub use store::{PostgresOptions, PostgresStore};
