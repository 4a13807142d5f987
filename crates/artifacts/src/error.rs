//! The crate's one error type. Every variant maps to a stable reason code, and every
//! message names the path, entry or blob it is about.

use cordon_core::ReasonCode;

/// `Result` with [`ArtifactError`].
pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;

/// What went wrong while storing, reading or checking working state.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The workspace holds something a version cannot record faithfully.
    #[error("the workspace cannot be recorded: {0}")]
    WorkspaceUnsupported(String),
    /// A blob a version refers to is absent or does not hash to its name.
    #[error("blob {hash} is missing or corrupt in the blob store: {detail}")]
    BlobMissing { hash: String, detail: String },
    /// The blob store failed (I/O, network, credentials).
    #[error("the blob store failed: {0}")]
    BlobStore(String),
    /// The root a caller named is not a well-formed hash.
    #[error("`{0}` is not a version root (64 lowercase hex digits)")]
    VersionNotFound(String),
    /// An archive entry would land outside the workspace.
    #[error("archive entry `{path}` escapes the workspace: {detail}")]
    ArchiveEntryEscapes { path: String, detail: String },
    /// An archive entry is of a kind a workspace cannot hold.
    #[error("archive entry `{path}` is not supported: {detail}")]
    ArchiveEntryUnsupported { path: String, detail: String },
    /// An archive (or one of its entries) is over a limit.
    #[error("the archive is too large: {0}")]
    ArchiveTooLarge(String),
    /// The input is not a readable tar archive.
    #[error("the upload is not a valid tar archive: {0}")]
    ArchiveInvalid(String),
    /// A path asked for is not in the version.
    #[error("`{0}` is not in the version")]
    PathNotFound(String),
    /// A path asked for in a promotion is not a file of the version.
    #[error("`{0}` is not a file of the version")]
    ReleasePathNotFound(String),
    /// A local file-system operation failed.
    #[error("{op} `{path}`: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ArtifactError {
    /// The stable reason code of this error.
    pub fn reason(&self) -> ReasonCode {
        match self {
            ArtifactError::WorkspaceUnsupported(_) => ReasonCode::WorkspaceUnsupported,
            ArtifactError::BlobMissing { .. } => ReasonCode::BlobMissing,
            ArtifactError::BlobStore(_) => ReasonCode::BlobStoreUnavailable,
            ArtifactError::VersionNotFound(_) => ReasonCode::VersionNotFound,
            ArtifactError::ArchiveEntryEscapes { .. } => ReasonCode::ArchiveEntryEscapes,
            ArtifactError::ArchiveEntryUnsupported { .. } => ReasonCode::ArchiveEntryUnsupported,
            ArtifactError::ArchiveTooLarge(_) => ReasonCode::ArchiveTooLarge,
            ArtifactError::ArchiveInvalid(_) => ReasonCode::ArchiveInvalid,
            ArtifactError::PathNotFound(_) => ReasonCode::NotFound,
            ArtifactError::ReleasePathNotFound(_) => ReasonCode::ReleasePathNotFound,
            ArtifactError::Io { .. } => ReasonCode::Internal,
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl std::fmt::Display,
        source: std::io::Error,
    ) -> Self {
        ArtifactError::Io {
            op,
            path: path.to_string(),
            source,
        }
    }

    pub(crate) fn missing(hash: impl std::fmt::Display, detail: impl Into<String>) -> Self {
        ArtifactError::BlobMissing {
            hash: hash.to_string(),
            detail: detail.into(),
        }
    }
}
