//! Release outputs: a version (or chosen files of it) promoted under a name, recorded as
//! its own manifest and signed as an in-toto Statement v1 in a DSSE envelope with the
//! deployment's ed25519 key. The predicate records where the files came from.

use cordon_core::{Release, ReleaseId, SessionId, TenantId, Timestamp, WorkspaceVersion};
use cordon_evidence::Signer;
use cordon_evidence::dsse::{self, Subject};

use crate::{ArtifactError, BlobStore};

/// The predicate type of Cordon's provenance.
pub const PREDICATE_TYPE: &str = "https://cordon.dev/provenance/workspace-release/v1";
/// Inside a downloaded release archive: the envelope, and the files under `files/`.
pub const ENVELOPE_NAME: &str = "release.dsse.json";
pub const FILES_DIR: &str = "files";

/// What to promote.
#[derive(Debug)]
pub struct Promotion<'a> {
    pub tenant_id: TenantId,
    pub session_id: SessionId,
    pub version: &'a WorkspaceVersion,
    pub name: &'a str,
    /// Files of the version; every file when empty.
    pub paths: &'a [String],
    pub actor: &'a str,
    /// The authorization policy version that allowed the promotion.
    pub policy_version: &'a str,
    /// The workflow run that promoted it, if any.
    pub workflow_run: Option<String>,
}

/// Builds the release's manifest and signs its statement. The caller stores it.
pub async fn promote(
    blobs: &BlobStore,
    signer: &Signer,
    promotion: Promotion<'_>,
) -> Result<Release, ArtifactError> {
    let (root, files) = crate::subset(blobs, &promotion.version.root, promotion.paths).await?;
    let subjects: Vec<Subject> = files
        .iter()
        .map(|file| Subject {
            name: file.path.clone(),
            sha256: file.sha256_hex.clone(),
        })
        .collect();
    let id = ReleaseId::generate();
    let at = Timestamp::now();
    let predicate = serde_json::json!({
        "release": {"id": id.to_string(), "name": promotion.name},
        "tenant": promotion.tenant_id.to_string(),
        "session": promotion.session_id.to_string(),
        "workflow_run": promotion.workflow_run,
        "source_version": {
            "id": promotion.version.id.to_string(),
            "root": promotion.version.root,
            "algorithm": "blake3-manifest-v1",
        },
        "release_root": root,
        "policy_version": promotion.policy_version,
        "promoted_by": promotion.actor,
        "promoted_at": at.to_string(),
    });
    let statement = dsse::statement(&subjects, PREDICATE_TYPE, predicate);
    let envelope = dsse::sign_envelope(&statement, signer)
        .map_err(|e| ArtifactError::BlobStore(format!("cannot sign the release: {e}")))?;
    Ok(Release {
        id,
        tenant_id: promotion.tenant_id,
        name: promotion.name.to_owned(),
        session_id: promotion.session_id,
        version_id: promotion.version.id,
        root,
        envelope,
        created_by: promotion.actor.to_owned(),
        created_at: at,
        deleted_at: None,
    })
}

/// The subjects of a stored release's envelope (name, sha256), read back from its
/// payload without verifying (the server signed it; clients verify offline).
pub fn subjects_of(envelope: &str) -> Vec<(String, String)> {
    let parsed: serde_json::Value = match serde_json::from_str(envelope) {
        Ok(v) => v,
        Err(_) => return Vec::new(),
    };
    let Some(payload) = parsed.get("payload").and_then(|p| p.as_str()) else {
        return Vec::new();
    };
    let Ok(bytes) = base64_decode(payload) else {
        return Vec::new();
    };
    let Ok(statement) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    statement
        .get("subject")
        .and_then(|s| s.as_array())
        .map(|subjects| {
            subjects
                .iter()
                .filter_map(|s| {
                    Some((
                        s.get("name")?.as_str()?.to_owned(),
                        s.get("digest")?.get("sha256")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn base64_decode(text: &str) -> Result<Vec<u8>, ()> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| ())
}

/// A release as a person downloads it: a tar archive holding the envelope as
/// `release.dsse.json` and the released files under `files/`.
pub async fn release_archive(
    blobs: &BlobStore,
    release: &Release,
) -> Result<Vec<u8>, ArtifactError> {
    let inner = crate::export_tar(blobs, &release.root, Vec::new()).await?;
    let envelope = release.envelope.clone();
    let bad = |e: std::io::Error| {
        ArtifactError::BlobStore(format!("cannot build the release archive: {e}"))
    };
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(envelope.len() as u64);
    header.set_mode(0o644);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, ENVELOPE_NAME, envelope.as_bytes())
        .map_err(bad)?;
    let mut archive = tar::Archive::new(inner.as_slice());
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let mut header = entry.header().clone();
        let name = format!("{FILES_DIR}/{}", path.trim_start_matches("./"));
        if header.entry_type() == tar::EntryType::Symlink {
            let target = entry
                .link_name()
                .map_err(bad)?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            builder
                .append_link(&mut header, &name, target)
                .map_err(bad)?;
        } else {
            builder
                .append_data(&mut header, &name, &mut entry)
                .map_err(bad)?;
        }
    }
    builder.into_inner().map_err(bad)
}
