//! The evidence log's verifiable structure, with no I/O, so that the server and an
//! offline verifier share one implementation:
//!
//! - [`merkle`]: RFC 6962 (RFC 9162 section 2.1) leaf and node hashes, the tree head,
//!   inclusion and consistency proofs, and their verification.
//! - [`checkpoint`]: signed checkpoints in the C2SP `tlog-checkpoint` body inside a C2SP
//!   `signed-note`, signed with ed25519.
//! - [`tree`]: an append-only tree that keeps its complete subtrees' roots, for
//!   O(log² n) heads and proofs of any prefix.
//! - [`canonical`]: canonical JSON (RFC 8785), the bytes that get hashed and signed.
//! - [`entry`]: an evidence entry's leaf, with salted commitments to its payload fields
//!   so that a field can be shredded while the leaf and its proofs stay valid.
//! - [`bundle`]: the offline export of a tenant's or session's evidence and its
//!   verification.
//! - [`dsse`]: in-toto statements in DSSE envelopes, for signed releases.
//!
//! The artifacts runtime (the evidence log's writer, releases) and the CLI's offline
//! verifiers build on these functions.

pub mod bundle;
pub mod canonical;
pub mod checkpoint;
pub mod dsse;
pub mod entry;
pub mod merkle;
pub mod tree;

pub use bundle::{Bundle, BundleError, Report};
pub use canonical::to_canonical;
pub use checkpoint::{Checkpoint, CheckpointError, Signer, Verifier};
pub use dsse::{DsseError, ReleaseReport, Subject};
pub use entry::{Draft, EntryError, ParsedLeaf, Sealed, SealedField};
pub use merkle::{Hash, ProofError};
pub use tree::MerkleTree;
