//! The artifacts runtime: three classes of artifact with different write rules.
//!
//! - Working state: content-addressed snapshots of a session's workspace (`blob`,
//!   `chunk`, `manifest`, `snapshot`, `restore`, `archive`, `gc`).
//! - Decision evidence: the per-tenant append-only log (`evidence_log`), built on
//!   `cordon-evidence`'s tree math and signed checkpoints.
//! - Release outputs: promoted, immutable, signed in-toto statements (`release`).
//!
//! Knows neither HTTP nor the sandbox runtime: `control` hands it a directory (quiesced)
//! and the store.
