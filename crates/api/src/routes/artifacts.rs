//! Artifacts: workspace versions (checkpoint, list, diff, download, upload, restore,
//! fork), the tenant's evidence log (entries, proofs, checkpoints, export, public key)
//! and releases (promote, list, get, download). Everything acts inside the caller's
//! tenant: another tenant's session, version or release is 404.
//!
//! Working-state routes need the artifacts runtime (and, to touch a workspace, the
//! session's sandbox on this node): without it they answer 503 `SANDBOX_UNAVAILABLE`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cordon_control::Artifacts;
use cordon_core::{
    EvidenceEntry, EvidenceFilter, ReasonCode, Release, ReleaseId, Session, SessionAction,
    SessionId, VersionId, WorkspaceVersion,
};
use cordon_policy::{Action, Resource};
use cordon_wire::{
    ChangeBody, CheckpointRequest, CheckpointResponse, ConsistencyProofBody, DiffBody, ErrorBody,
    EvidenceCheckpointBody, EvidenceEntryBody, EvidenceList, ForkRequest, ForkResponse,
    InclusionProofBody, PromoteRequest, PublicKeyBody, ReleaseBody, ReleaseList, RestoreBody,
    RestoreRequest, SessionBody, SubjectBody, VersionBody, VersionList, VersionStatsBody,
};
use serde::Deserialize;
use utoipa::IntoParams;

use std::sync::Arc;

use super::sessions::{authorized_session, session_body};
use super::validate;
use crate::AppState;
use crate::auth::{Caller, authorize};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, OptionalJson, Query, parse_id};

fn artifacts(state: &AppState) -> ApiResult<Arc<Artifacts>> {
    state.control().artifacts().cloned().ok_or_else(|| {
        ApiError::new(
            ReasonCode::SandboxUnavailable,
            "artifacts are not enabled on this server",
        )
    })
}

pub(crate) fn version_body(version: WorkspaceVersion) -> VersionBody {
    VersionBody {
        id: version.id.to_string(),
        session_id: version.session_id.to_string(),
        parent: version.parent.map(|p| p.to_string()),
        root: version.root,
        summary: version.summary,
        stats: VersionStatsBody {
            files: version.stats.files,
            dirs: version.stats.dirs,
            symlinks: version.stats.symlinks,
            bytes: version.stats.bytes,
            blobs_written: version.stats.blobs_written,
            bytes_written: version.stats.bytes_written,
        },
        origin: version.origin,
        created_by: version.created_by,
        created_at: version.created_at,
    }
}

/// A version of `session` by id; another session's (or tenant's) is 404.
async fn session_version(
    state: &AppState,
    session: &Session,
    id: &str,
) -> ApiResult<WorkspaceVersion> {
    let id = parse_id::<VersionId>(id, "version")?;
    state
        .store()
        .get_version(session.tenant_id, id)
        .await?
        .filter(|v| v.session_id == session.id)
        .ok_or_else(|| {
            ApiError::new(
                ReasonCode::VersionNotFound,
                format!("version {id} is not a version of session {}", session.id),
            )
        })
}

/// Checkpoint: snapshots the workspace into a new version (the sandbox is frozen for
/// the instant it takes) and moves the session from `active` to `checkpointed`.
#[utoipa::path(post, path = "/v1/sessions/{id}/checkpoint", tag = "artifacts",
    params(
        ("id" = String, Path, description = "Session id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request"),
    ),
    request_body(content = Option<CheckpointRequest>, description = "Optional: `summary` of the version, `reason` for the event log"),
    responses(
        (status = 200, body = CheckpointResponse<SessionBody>),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "SESSION_INVALID_TRANSITION, SESSION_LEASE_HELD, SANDBOX_LOST", body = ErrorBody),
        (status = 422, description = "WORKSPACE_UNSUPPORTED", body = ErrorBody),
    ))]
pub(crate) async fn checkpoint(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    OptionalJson(request): OptionalJson<CheckpointRequest>,
) -> ApiResult<axum::Json<CheckpointResponse<SessionBody>>> {
    let session = authorized_session(
        &state,
        &caller,
        &id,
        Action::Session(SessionAction::Checkpoint),
    )
    .await?;
    validate::text_or_empty("summary", &request.summary, 1024)?;
    if let Some(reason) = &request.reason {
        validate::text("reason", reason, 1024)?;
    }
    let (session, version) = state
        .control()
        .checkpoint(&session, request.summary, &caller.actor(), request.reason)
        .await?;
    metrics::counter!(
        "cordon_session_transitions_total",
        "action" => "checkpoint",
        "to" => session.phase.as_str()
    )
    .increment(1);
    Ok(axum::Json(CheckpointResponse {
        session: session_body(session),
        workspace_version: version.map(version_body),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListVersionsQuery {
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
    /// `next` from the previous page: versions older than this one.
    before: Option<String>,
}

/// The session's versions, newest first.
#[utoipa::path(get, path = "/v1/sessions/{id}/versions", tag = "artifacts",
    params(("id" = String, Path, description = "Session id"), ListVersionsQuery),
    responses((status = 200, body = VersionList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn list_versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<ListVersionsQuery>,
) -> ApiResult<axum::Json<VersionList>> {
    let limit = validate::limit(query.limit)?;
    let before = query
        .before
        .as_deref()
        .map(|b| parse_id::<VersionId>(b, "version"))
        .transpose()?;
    let session = authorized_session(&state, &caller, &id, Action::SessionVersionsRead).await?;
    let versions = state
        .store()
        .list_versions(session.tenant_id, session.id, before, limit)
        .await?;
    let next = (versions.len() == limit as usize)
        .then(|| versions.last().map(|v| v.id.to_string()))
        .flatten();
    Ok(axum::Json(VersionList {
        versions: versions.into_iter().map(version_body).collect(),
        next,
    }))
}

/// One version.
#[utoipa::path(get, path = "/v1/sessions/{id}/versions/{vid}", tag = "artifacts",
    params(("id" = String, Path, description = "Session id"), ("vid" = String, Path, description = "Version id")),
    responses((status = 200, body = VersionBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, description = "NOT_FOUND, VERSION_NOT_FOUND", body = ErrorBody)))]
pub(crate) async fn get_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, vid)): Path<(String, String)>,
) -> ApiResult<axum::Json<VersionBody>> {
    let session = authorized_session(&state, &caller, &id, Action::SessionVersionsRead).await?;
    let version = session_version(&state, &session, &vid).await?;
    Ok(axum::Json(version_body(version)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DiffQuery {
    /// The older version (default: the version's parent; none: everything is added).
    against: Option<String>,
}

/// What changed between two versions of the session.
#[utoipa::path(get, path = "/v1/sessions/{id}/versions/{vid}/diff", tag = "artifacts",
    params(("id" = String, Path, description = "Session id"), ("vid" = String, Path, description = "Version id"), DiffQuery),
    responses((status = 200, body = DiffBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn diff_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, vid)): Path<(String, String)>,
    Query(query): Query<DiffQuery>,
) -> ApiResult<axum::Json<DiffBody>> {
    let artifacts = artifacts(&state)?;
    let session = authorized_session(&state, &caller, &id, Action::SessionVersionsRead).await?;
    let to = session_version(&state, &session, &vid).await?;
    let from = match query.against.as_deref() {
        Some(against) => Some(session_version(&state, &session, against).await?),
        None => match to.parent {
            Some(parent) => state.store().get_version(session.tenant_id, parent).await?,
            None => None,
        },
    };
    let from_root = match &from {
        Some(from) => from.root.clone(),
        None => cordon_artifacts::empty_root().to_hex(),
    };
    let changes = cordon_artifacts::diff(&artifacts.blobs, &from_root, &to.root)
        .await
        .map_err(|e| ApiError::new(e.reason(), e.to_string()))?;
    Ok(axum::Json(DiffBody {
        from: from.map(|f| f.id.to_string()),
        to: to.id.to_string(),
        changes: changes
            .into_iter()
            .map(|change| ChangeBody {
                path: change.path,
                change: change_name(change.kind).to_owned(),
                size_before: change.size_before,
                size_after: change.size_after,
            })
            .collect(),
    }))
}

fn change_name(kind: cordon_artifacts::ChangeKind) -> &'static str {
    use cordon_artifacts::ChangeKind::*;
    match kind {
        Added => "added",
        Removed => "removed",
        Modified => "modified",
        ModeChanged => "mode_changed",
        TypeChanged => "type_changed",
    }
}

/// The version as a tar archive (directories, files with their modes, symlinks).
#[utoipa::path(get, path = "/v1/sessions/{id}/versions/{vid}/archive", tag = "artifacts",
    params(("id" = String, Path, description = "Session id"), ("vid" = String, Path, description = "Version id")),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn download_version(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, vid)): Path<(String, String)>,
) -> ApiResult<Response> {
    let artifacts = artifacts(&state)?;
    let session = authorized_session(&state, &caller, &id, Action::SessionVersionsRead).await?;
    let version = session_version(&state, &session, &vid).await?;
    let bytes = cordon_artifacts::export_tar(&artifacts.blobs, &version.root, Vec::new())
        .await
        .map_err(|e| ApiError::new(e.reason(), e.to_string()))?;
    Ok(tar_response(bytes, &format!("{}.tar", version.id)))
}

fn tar_response(bytes: Vec<u8>, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/x-tar".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UploadQuery {
    /// What the archive holds; up to 1,024 characters.
    summary: Option<String>,
}

/// Store a tar archive as the session's next version (a person's hand-back). `If-Match`
/// names the version it was based on and must be the session's latest (omit it for a
/// session without versions); the workspace itself is not touched (restore it). An
/// archive with entries that escape, device files or absurd sizes stores nothing.
#[utoipa::path(post, path = "/v1/sessions/{id}/versions", tag = "artifacts",
    params(("id" = String, Path, description = "Session id"),
        ("If-Match" = Option<String>, Header, description = "The parent version id"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 201, body = VersionBody),
        (status = 400, description = "ARCHIVE_ENTRY_ESCAPES, ARCHIVE_ENTRY_UNSUPPORTED, ARCHIVE_INVALID", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "VERSION_CONFLICT: a stale parent", body = ErrorBody),
        (status = 413, description = "ARCHIVE_TOO_LARGE", body = ErrorBody)))]
pub(crate) async fn upload_version(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(query): Query<UploadQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<VersionBody>)> {
    let summary = query.summary.unwrap_or_default();
    validate::text_or_empty("summary", &summary, 1024)?;
    let parent = match headers.get(header::IF_MATCH) {
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::validation("If-Match must be a version id"))?
                .trim()
                .trim_matches('"');
            Some(parse_id::<VersionId>(text, "version")?)
        }
    };
    let session = authorized_session(&state, &caller, &id, Action::SessionVersionsWrite).await?;
    let version = state
        .control()
        .upload_version(&session, parent, &body, summary, &caller.actor())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(version_body(version))))
}

/// Make the session's workspace exactly the given version: files (content and mode),
/// directories, symlinks; whatever the version lacks is removed.
#[utoipa::path(post, path = "/v1/sessions/{id}/restore", tag = "artifacts",
    params(("id" = String, Path, description = "Session id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request")),
    request_body = RestoreRequest,
    responses((status = 200, body = RestoreBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "SESSION_NOT_ACTIVE, SANDBOX_LOST", body = ErrorBody)))]
pub(crate) async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(request): Json<RestoreRequest>,
) -> ApiResult<axum::Json<RestoreBody>> {
    let session = authorized_session(&state, &caller, &id, Action::SessionRestore).await?;
    let version = session_version(&state, &session, &request.version).await?;
    let started = std::time::Instant::now();
    let stats = state
        .control()
        .restore(&session, &version, &caller.actor())
        .await?;
    Ok(axum::Json(RestoreBody {
        files_written: stats.files_written,
        files_unchanged: stats.files_unchanged,
        removed: stats.removed,
        dirs_created: stats.dirs_created,
        symlinks_created: stats.symlinks_written,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    }))
}

/// A new, active session (owned by the caller) whose workspace starts as the version.
#[utoipa::path(post, path = "/v1/sessions/{id}/versions/{vid}/fork", tag = "artifacts",
    params(("id" = String, Path, description = "Session id"), ("vid" = String, Path, description = "Version id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request")),
    request_body(content = Option<ForkRequest>),
    responses((status = 201, body = ForkResponse<SessionBody>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn fork(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, vid)): Path<(String, String)>,
    OptionalJson(request): OptionalJson<ForkRequest>,
) -> ApiResult<(StatusCode, axum::Json<ForkResponse<SessionBody>>)> {
    let source = authorized_session(&state, &caller, &id, Action::SessionFork).await?;
    authorize(
        &state,
        &caller,
        Action::SessionCreate,
        Resource::Tenant(caller.tenant_id()),
    )?;
    let version = session_version(&state, &source, &vid).await?;
    let labels = request.labels.unwrap_or_else(|| source.labels.clone());
    validate::labels(&labels)?;
    let spec = cordon_control::SessionSpec {
        tenant_id: source.tenant_id,
        owner: caller.key.id,
        workload_class: source.workload_class.clone(),
        environment: source.environment.clone(),
        labels,
        policy_version: state.policy().version().to_owned(),
    };
    let (session, version) = state
        .control()
        .fork(&source, &version, spec, &caller.actor())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ForkResponse {
            session: session_body(session),
            version: version_body(version),
        }),
    ))
}

fn entry_body(entry: EvidenceEntry) -> EvidenceEntryBody {
    let committed: Vec<String> = serde_json::from_str::<serde_json::Value>(&entry.leaf)
        .ok()
        .and_then(|leaf| {
            leaf.get("fields")
                .and_then(|f| f.as_object())
                .map(|f| f.keys().cloned().collect())
        })
        .unwrap_or_default();
    let mut fields = serde_json::Map::new();
    for field in entry.fields {
        let value = serde_json::from_str(&field.value).unwrap_or(serde_json::Value::Null);
        fields.insert(field.name, value);
    }
    let shredded = committed
        .into_iter()
        .filter(|name| !fields.contains_key(name))
        .collect();
    EvidenceEntryBody {
        index: entry.index,
        session_id: entry.session_id.map(|s| s.to_string()),
        kind: entry.kind,
        at: entry.at,
        leaf: entry.leaf,
        leaf_hash: hex::encode(entry.leaf_hash),
        fields,
        shredded,
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListEvidenceQuery {
    /// Only this session's entries.
    session: Option<String>,
    /// Only entries of this kind (`lifecycle`, `authz`, `egress`, `exec`, ...).
    kind: Option<String>,
    /// Entries from this index on (`next` of the previous page).
    from: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// The tenant's evidence log, in index order.
#[utoipa::path(get, path = "/v1/evidence", tag = "artifacts",
    params(ListEvidenceQuery),
    responses((status = 200, body = EvidenceList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_evidence(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListEvidenceQuery>,
) -> ApiResult<axum::Json<EvidenceList>> {
    let limit = validate::limit(query.limit)?;
    let session_id = query
        .session
        .as_deref()
        .map(|s| parse_id::<SessionId>(s, "session"))
        .transpose()?;
    authorize(
        &state,
        &caller,
        Action::EvidenceRead,
        Resource::Tenant(caller.tenant_id()),
    )?;
    let entries = state
        .store()
        .list_evidence(
            caller.tenant_id(),
            &EvidenceFilter {
                session_id,
                kind: query.kind,
                from_index: query.from.unwrap_or(0),
                limit,
            },
        )
        .await?;
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.index + 1))
        .flatten();
    Ok(axum::Json(EvidenceList {
        entries: entries.into_iter().map(entry_body).collect(),
        next,
    }))
}

fn evidence_error(error: cordon_artifacts::evidence_log::EvidenceError) -> ApiError {
    ApiError::new(error.reason(), error.to_string())
}

/// The latest signed checkpoint of the tenant's log, covering every entry so far.
#[utoipa::path(get, path = "/v1/evidence/checkpoint", tag = "artifacts",
    responses((status = 200, body = EvidenceCheckpointBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, description = "the log is empty", body = ErrorBody)))]
pub(crate) async fn evidence_checkpoint(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<EvidenceCheckpointBody>> {
    let artifacts = artifacts(&state)?;
    authorize(
        &state,
        &caller,
        Action::EvidenceRead,
        Resource::Tenant(caller.tenant_id()),
    )?;
    artifacts.evidence.flush().await.map_err(evidence_error)?;
    let checkpoint = artifacts
        .evidence
        .checkpoint(caller.tenant_id())
        .await
        .map_err(evidence_error)?
        .ok_or_else(|| ApiError::not_found("evidence checkpoint"))?;
    Ok(axum::Json(EvidenceCheckpointBody {
        size: checkpoint.size,
        root: hex::encode(checkpoint.root),
        at: checkpoint.at,
        note: checkpoint.note,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ProofQuery {
    /// The tree size to prove against (default: the whole log).
    size: Option<u64>,
}

/// The inclusion proof of one entry.
#[utoipa::path(get, path = "/v1/evidence/entries/{index}/proof", tag = "artifacts",
    params(("index" = u64, Path, description = "Entry index"), ProofQuery),
    responses((status = 200, body = InclusionProofBody), (status = 400, description = "EVIDENCE_OUT_OF_RANGE", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn inclusion_proof(
    State(state): State<AppState>,
    caller: Caller,
    Path(index): Path<String>,
    Query(query): Query<ProofQuery>,
) -> ApiResult<axum::Json<InclusionProofBody>> {
    let index: u64 = index
        .parse()
        .map_err(|_| ApiError::validation("the entry index must be a non-negative integer"))?;
    let artifacts = artifacts(&state)?;
    authorize(
        &state,
        &caller,
        Action::EvidenceRead,
        Resource::Tenant(caller.tenant_id()),
    )?;
    artifacts.evidence.flush().await.map_err(evidence_error)?;
    let size = match query.size {
        Some(size) => size,
        None => state.store().evidence_size(caller.tenant_id()).await?,
    };
    let (leaf, proof, root) = artifacts
        .evidence
        .inclusion_proof(caller.tenant_id(), index, size)
        .await
        .map_err(evidence_error)?;
    Ok(axum::Json(InclusionProofBody {
        index,
        size,
        leaf_hash: hex::encode(leaf),
        proof: proof.iter().map(hex::encode).collect(),
        root: hex::encode(root),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ConsistencyQuery {
    from: u64,
    to: Option<u64>,
}

/// The consistency proof between two tree sizes of the tenant's log.
#[utoipa::path(get, path = "/v1/evidence/consistency", tag = "artifacts",
    params(ConsistencyQuery),
    responses((status = 200, body = ConsistencyProofBody), (status = 400, description = "EVIDENCE_OUT_OF_RANGE", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn consistency_proof(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ConsistencyQuery>,
) -> ApiResult<axum::Json<ConsistencyProofBody>> {
    let artifacts = artifacts(&state)?;
    authorize(
        &state,
        &caller,
        Action::EvidenceRead,
        Resource::Tenant(caller.tenant_id()),
    )?;
    artifacts.evidence.flush().await.map_err(evidence_error)?;
    let to = match query.to {
        Some(to) => to,
        None => state.store().evidence_size(caller.tenant_id()).await?,
    };
    let (proof, from_root, to_root) = artifacts
        .evidence
        .consistency_proof(caller.tenant_id(), query.from, to)
        .await
        .map_err(evidence_error)?;
    Ok(axum::Json(ConsistencyProofBody {
        from: query.from,
        to,
        proof: proof.iter().map(hex::encode).collect(),
        from_root: hex::encode(from_root),
        to_root: hex::encode(to_root),
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportQuery {
    /// Only this session's entries (the whole tenant log otherwise).
    session: Option<String>,
}

/// An offline-verifiable bundle: entries with inclusion proofs against a fresh signed
/// checkpoint, and earlier checkpoints with consistency proofs. Verify it with
/// `cordon evidence verify BUNDLE --public-key KEY`.
#[utoipa::path(get, path = "/v1/evidence/export", tag = "artifacts",
    params(ExportQuery),
    responses((status = 200, content_type = "application/json", body = Object), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn export_evidence(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ExportQuery>,
) -> ApiResult<Response> {
    let artifacts = artifacts(&state)?;
    let session_id = match query.session.as_deref() {
        Some(id) => {
            // Tenancy first: another tenant's session is not found.
            let id = parse_id::<SessionId>(id, "session")?;
            state
                .store()
                .get_session(caller.tenant_id(), id)
                .await?
                .ok_or_else(|| ApiError::not_found("session"))?;
            Some(id)
        }
        None => None,
    };
    authorize(
        &state,
        &caller,
        Action::EvidenceRead,
        Resource::Tenant(caller.tenant_id()),
    )?;
    let bundle = artifacts
        .evidence
        .export(caller.tenant_id(), session_id)
        .await
        .map_err(|e| match e {
            cordon_artifacts::evidence_log::EvidenceError::OutOfRange { .. } => {
                ApiError::not_found("evidence")
            }
            other => evidence_error(other),
        })?;
    Ok(([(header::CONTENT_TYPE, "application/json")], bundle).into_response())
}

/// The deployment's signing key (signed-note verifier format), for offline checks of
/// evidence checkpoints and release envelopes.
#[utoipa::path(get, path = "/v1/evidence/public-key", tag = "artifacts",
    responses((status = 200, body = PublicKeyBody), (status = 401, body = ErrorBody)))]
pub(crate) async fn public_key(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<axum::Json<PublicKeyBody>> {
    let artifacts = artifacts(&state)?;
    Ok(axum::Json(PublicKeyBody {
        key: artifacts.evidence.verifier_text(),
    }))
}

fn release_body(release: Release) -> ReleaseBody {
    let subjects = cordon_artifacts::release::subjects_of(&release.envelope)
        .into_iter()
        .map(|(name, sha256)| SubjectBody { name, sha256 })
        .collect();
    let envelope = serde_json::from_str(&release.envelope)
        .unwrap_or(serde_json::Value::String(release.envelope));
    ReleaseBody {
        id: release.id.to_string(),
        name: release.name,
        session_id: release.session_id.to_string(),
        version_id: release.version_id.to_string(),
        root: release.root,
        subjects,
        envelope,
        created_by: release.created_by,
        created_at: release.created_at,
    }
}

/// Promote a version of the session (every file, or `paths`) to a named, immutable,
/// signed release: an in-toto Statement v1 in a DSSE envelope (ed25519).
#[utoipa::path(post, path = "/v1/sessions/{id}/releases", tag = "artifacts",
    params(("id" = String, Path, description = "Session id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Replays the first response for the same request")),
    request_body = PromoteRequest,
    responses((status = 201, body = ReleaseBody),
        (status = 400, description = "RELEASE_PATH_NOT_FOUND, VALIDATION_FAILED", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "RELEASE_NAME_TAKEN", body = ErrorBody)))]
pub(crate) async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Json(request): Json<PromoteRequest>,
) -> ApiResult<(StatusCode, axum::Json<ReleaseBody>)> {
    validate::release_name(&request.name)?;
    if request.paths.len() > 10_000 {
        return Err(ApiError::validation("at most 10,000 paths may be promoted"));
    }
    let session = authorized_session(&state, &caller, &id, Action::SessionPromote).await?;
    let version = match request.version.as_deref() {
        Some(vid) => session_version(&state, &session, vid).await?,
        None => state
            .store()
            .head_version(session.tenant_id, session.id)
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    ReasonCode::VersionNotFound,
                    "the session has no version to promote: checkpoint it first",
                )
            })?,
    };
    let release = state
        .control()
        .promote(
            &session,
            &version,
            cordon_control::PromoteSpec {
                name: &request.name,
                paths: &request.paths,
                actor: &caller.actor(),
                policy_version: state.policy().version(),
                workflow_run: None,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, axum::Json(release_body(release))))
}

/// The tenant's releases.
#[utoipa::path(get, path = "/v1/releases", tag = "artifacts",
    responses((status = 200, body = ReleaseList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(crate) async fn list_releases(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<ReleaseList>> {
    authorize(
        &state,
        &caller,
        Action::ReleaseRead,
        Resource::Tenant(caller.tenant_id()),
    )?;
    let releases = state.store().list_releases(caller.tenant_id()).await?;
    Ok(axum::Json(ReleaseList {
        releases: releases.into_iter().map(release_body).collect(),
    }))
}

async fn tenant_release(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Release> {
    let id = parse_id::<ReleaseId>(id, "release")?;
    let release = state
        .store()
        .get_release(caller.tenant_id(), id)
        .await?
        .ok_or_else(|| ApiError::not_found("release"))?;
    authorize(
        state,
        caller,
        Action::ReleaseRead,
        Resource::Tenant(caller.tenant_id()),
    )?;
    Ok(release)
}

/// One release, with its subjects and signed envelope.
#[utoipa::path(get, path = "/v1/releases/{id}", tag = "artifacts",
    params(("id" = String, Path, description = "Release id")),
    responses((status = 200, body = ReleaseBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn get_release(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<ReleaseBody>> {
    let release = tenant_release(&state, &caller, &id).await?;
    Ok(axum::Json(release_body(release)))
}

/// The release as a tar archive: `release.dsse.json` and the files under `files/`.
/// Verify it offline with `cordon release verify FILE --public-key KEY`.
#[utoipa::path(get, path = "/v1/releases/{id}/archive", tag = "artifacts",
    params(("id" = String, Path, description = "Release id")),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub(crate) async fn download_release(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let artifacts = artifacts(&state)?;
    let release = tenant_release(&state, &caller, &id).await?;
    let bytes = cordon_artifacts::release::release_archive(&artifacts.blobs, &release)
        .await
        .map_err(|e| ApiError::new(e.reason(), e.to_string()))?;
    Ok(tar_response(bytes, &format!("{}.tar", release.name)))
}
