//! The one error type every handler and middleware returns. It carries a stable reason
//! code, renders as `{"error":{"code","message","request_id"}}` with the HTTP status that
//! belongs to the code, and logs internal detail server-side without sending it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cordon_control::ControlError;
use cordon_core::ReasonCode;
use cordon_store::StoreError;
use cordon_wire::{ErrorBody, ErrorDetail};

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub(crate) static REQUEST_ID: String;
}

pub(crate) fn current_request_id() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// An API error: a reason code and a message safe to show the caller.
#[derive(Debug)]
pub struct ApiError {
    pub code: ReasonCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ReasonCode::NotFound, format!("{what} not found"))
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ReasonCode::ValidationFailed, message)
    }

    /// An unexpected failure: the detail goes to the log, the caller gets the request id.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            ReasonCode::Internal,
            "internal error; see the server log for this request id",
        )
    }

    pub fn status(&self) -> StatusCode {
        status_for(self.code)
    }
}

/// The HTTP status each reason code is answered with.
pub fn status_for(code: ReasonCode) -> StatusCode {
    use ReasonCode::*;
    match code {
        AuthnMissingCredentials | AuthnInvalidCredentials => StatusCode::UNAUTHORIZED,
        AuthzDenied => StatusCode::FORBIDDEN,
        NotFound => StatusCode::NOT_FOUND,
        MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        RequestBodyInvalid
        | RequestQueryInvalid
        | ValidationFailed
        | CursorInvalid
        | IdempotencyKeyInvalid => StatusCode::BAD_REQUEST,
        RequestBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        TenantNameTaken
        | SessionInvalidTransition
        | SessionLeaseHeld
        | SessionLeaseFenced
        | SessionConflict
        | IdempotencyKeyInFlight
        | SessionNotActive
        | SandboxLost => StatusCode::CONFLICT,
        SandboxPathOutsideWorkspace => StatusCode::BAD_REQUEST,
        SandboxDiskQuota => StatusCode::INSUFFICIENT_STORAGE,
        SandboxUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        SandboxStartFailed => StatusCode::INTERNAL_SERVER_ERROR,
        // Outcomes of a command: reported inside a 200 exec result, never as an error
        // response (one would be a bug, hence 500).
        SandboxOomKilled | SandboxPidsLimit | ExecTimeout | ExecCommandNotFound
        | ExecStartFailed | ExecKilledBySignal => StatusCode::INTERNAL_SERVER_ERROR,
        IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        EgressPolicyInvalid | LeaseTtlInvalid => StatusCode::BAD_REQUEST,
        VersionNotFound => StatusCode::NOT_FOUND,
        VersionConflict | ReleaseNameTaken => StatusCode::CONFLICT,
        ArchiveEntryEscapes
        | ArchiveEntryUnsupported
        | ArchiveInvalid
        | ReleasePathNotFound
        | EvidenceOutOfRange => StatusCode::BAD_REQUEST,
        ArchiveTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        WorkspaceUnsupported => StatusCode::UNPROCESSABLE_ENTITY,
        BlobMissing => StatusCode::INTERNAL_SERVER_ERROR,
        BlobStoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        SecretNameTaken | LeaseNotRenewable => StatusCode::CONFLICT,
        // Decisions of the egress gateway: answered to sandbox code by the gateway (403,
        // or 502 for upstream failures), never by the API.
        EgressAllowed
        | EgressDestinationNotAllowed
        | EgressPortNotAllowed
        | EgressSchemeNotAllowed
        | EgressMethodNotAllowed
        | EgressNonPublicAddress
        | EgressSniMismatch
        | EgressSessionNotActive
        | EgressCredentialLeaseExpired
        | EgressMalformedRequest => StatusCode::FORBIDDEN,
        EgressDnsFailed | EgressUpstreamFailed | EgressUpstreamTlsFailed => StatusCode::BAD_GATEWAY,
        StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        WorkflowInvalid => StatusCode::BAD_REQUEST,
        RunInvalidState | RunStepInFlight => StatusCode::CONFLICT,
        // Outcomes of a run's steps: recorded in its journal and dead-letter queue, never
        // an error response of the API (one would be a bug, hence 500).
        StepTimeout
        | StepScheduleTimeout
        | StepHeartbeatTimeout
        | StepExitNonzero
        | StepHttpStatus
        | StepFailed
        | StepEventTimeout
        | StepApprovalRejected
        | StepApprovalTimeout
        | RunDeadlineExceeded
        | RunCancelled
        | RunDeadLetterDiscarded => StatusCode::INTERNAL_SERVER_ERROR,
        Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = %self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.as_str().to_owned(),
                message: self.message,
                request_id: current_request_id(),
            },
        };
        (status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => ApiError::not_found("resource"),
            StoreError::Backend(detail) => ApiError::internal(detail),
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "store unavailable");
                ApiError::new(
                    ReasonCode::StoreUnavailable,
                    "the store is unavailable; retry later",
                )
            }
            other => ApiError::new(other.reason(), other.to_string()),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        match error {
            ControlError::NotFound => ApiError::not_found("session"),
            ControlError::Store(store) => store.into(),
            other => ApiError::new(other.reason(), other.to_string()),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
