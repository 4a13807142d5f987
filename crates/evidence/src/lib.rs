//! The evidence log's verifiable structure, with no I/O, so that the server and an
//! offline verifier share one implementation:
//!
//! - [`merkle`]: RFC 6962 (RFC 9162 section 2.1) leaf and node hashes, the tree head,
//!   inclusion and consistency proofs, and their verification.
//! - [`checkpoint`]: signed checkpoints in the C2SP `tlog-checkpoint` body inside a C2SP
//!   `signed-note`, signed with ed25519.
//!
//! Groundwork for the artifacts issue: the store, the API and the export bundle build on
//! these functions.

pub mod checkpoint;
pub mod merkle;

pub use checkpoint::{Checkpoint, CheckpointError, Signer, Verifier};
pub use merkle::{Hash, ProofError};
