//! The embedded SQLite backend.
//!
//! Durability: the database runs in WAL mode with `synchronous = FULL`, so every commit
//! fsyncs the WAL before it returns. Throughput: all writes go through one writer
//! thread that takes every job waiting in its queue, runs each in its own savepoint
//! inside one transaction, commits once (one fsync for the whole batch: group commit)
//! and only then answers each caller. A job that fails rolls back its savepoint alone.
//! Reads run on a small pool of read-only connections on tokio's blocking threads.

mod rows;
mod store;
mod workflow;

pub use store::{SqliteOptions, SqliteStore, WriteStats};
