//! The registry of stable reason codes. Every API error, and later every policy
//! decision, metric label and dead-letter entry, carries exactly one of these.
//! A published code keeps its meaning forever: add new codes, never repurpose old ones.
//! `docs/reason-codes.md` is rendered from this table and checked by a test.

use std::fmt;

use serde::{Serialize, Serializer};

macro_rules! reason_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident = $code:literal,)+) => {
        /// A stable, documented reason code.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ReasonCode {
            $($(#[doc = $doc])+ $variant,)+
        }

        impl ReasonCode {
            /// Every code, in registry order.
            pub const ALL: &'static [ReasonCode] = &[$(ReasonCode::$variant,)+];

            /// The code as it appears on the wire: SCREAMING_SNAKE_CASE.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ReasonCode::$variant => $code,)+
                }
            }

            /// What the code means, for the documentation.
            pub fn description(self) -> &'static str {
                match self {
                    $(ReasonCode::$variant => concat!($($doc),+).trim_ascii(),)+
                }
            }

            pub fn from_code(code: &str) -> Option<ReasonCode> {
                match code {
                    $($code => Some(ReasonCode::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

reason_codes! {
    /// The request carried no credentials: send `Authorization: Bearer <token>`.
    AuthnMissingCredentials = "AUTHN_MISSING_CREDENTIALS",
    /// The bearer token is malformed, unknown or revoked.
    AuthnInvalidCredentials = "AUTHN_INVALID_CREDENTIALS",
    /// The authorization policies refused the action; the message names the
    /// determining policy ids in sorted order.
    AuthzDenied = "AUTHZ_DENIED",
    /// The resource does not exist, or belongs to another tenant (existence never leaks
    /// across tenants), or the route is unknown.
    NotFound = "NOT_FOUND",
    /// The route exists but not for this HTTP method.
    MethodNotAllowed = "METHOD_NOT_ALLOWED",
    /// The request body is not valid JSON for this endpoint: syntax error, wrong type,
    /// missing or unknown field.
    RequestBodyInvalid = "REQUEST_BODY_INVALID",
    /// The request body is larger than the server accepts (1 MiB by default).
    RequestBodyTooLarge = "REQUEST_BODY_TOO_LARGE",
    /// The request body must be `application/json`.
    UnsupportedMediaType = "UNSUPPORTED_MEDIA_TYPE",
    /// A query parameter is unknown or has an invalid value.
    RequestQueryInvalid = "REQUEST_QUERY_INVALID",
    /// A field parsed but its value is not acceptable (empty name, unknown role, label
    /// too long, ...); the message names the field.
    ValidationFailed = "VALIDATION_FAILED",
    /// The pagination cursor is not one this server issued.
    CursorInvalid = "CURSOR_INVALID",
    /// A tenant with this name already exists.
    TenantNameTaken = "TENANT_NAME_TAKEN",
    /// The lifecycle does not allow this action from the session's current phase;
    /// nothing was changed.
    SessionInvalidTransition = "SESSION_INVALID_TRANSITION",
    /// Another node holds the session's write lease; retry after it expires.
    SessionLeaseHeld = "SESSION_LEASE_HELD",
    /// A write carried a fencing token older than the session's current lease: the
    /// writer lost its lease and its write was refused.
    SessionLeaseFenced = "SESSION_LEASE_FENCED",
    /// The session changed concurrently between read and write; retry the request.
    SessionConflict = "SESSION_CONFLICT",
    /// The `Idempotency-Key` was already used with a different request (method, path
    /// or body).
    IdempotencyKeyReused = "IDEMPOTENCY_KEY_REUSED",
    /// A request with this `Idempotency-Key` is still being processed.
    IdempotencyKeyInFlight = "IDEMPOTENCY_KEY_IN_FLIGHT",
    /// The `Idempotency-Key` header is empty, longer than 255 bytes or not visible ASCII.
    IdempotencyKeyInvalid = "IDEMPOTENCY_KEY_INVALID",
    /// The store cannot be reached or refused the operation for a transient reason.
    StoreUnavailable = "STORE_UNAVAILABLE",
    /// The operation needs the session to be `active` (exec, processes, files).
    SessionNotActive = "SESSION_NOT_ACTIVE",
    /// This server runs without sandboxes (not root, no cgroups, or `--sandbox off`),
    /// or the session's sandbox runs on another node.
    SandboxUnavailable = "SANDBOX_UNAVAILABLE",
    /// The sandbox could not be started; the message says which step failed.
    SandboxStartFailed = "SANDBOX_START_FAILED",
    /// The session's sandbox is gone (its init process died, or the host rebooted);
    /// suspend and resume the session to get a fresh one.
    SandboxLost = "SANDBOX_LOST",
    /// The sandbox hit its memory limit and the kernel killed a process.
    SandboxOomKilled = "SANDBOX_OOM_KILLED",
    /// The sandbox hit its process limit: a fork or thread creation failed.
    SandboxPidsLimit = "SANDBOX_PIDS_LIMIT",
    /// The sandbox's /workspace or /tmp is full, or a file upload would not fit.
    SandboxDiskQuota = "SANDBOX_DISK_QUOTA",
    /// The path leaves /workspace (by `..`, an absolute path or a symlink); nothing was
    /// touched.
    SandboxPathOutsideWorkspace = "SANDBOX_PATH_OUTSIDE_WORKSPACE",
    /// The exec ran past its timeout; its process group was killed.
    ExecTimeout = "EXEC_TIMEOUT",
    /// The command was not found or is not executable in the sandbox (exit code 127).
    ExecCommandNotFound = "EXEC_COMMAND_NOT_FOUND",
    /// The process could not be started (bad working directory, confinement step
    /// failed); the message names the step. Exit code 127.
    ExecStartFailed = "EXEC_START_FAILED",
    /// The process was ended by a signal that was not a limit's doing.
    ExecKilledBySignal = "EXEC_KILLED_BY_SIGNAL",
    /// Egress: the gateway forwarded the request (or, for a rule in report mode, would
    /// have refused it and forwarded it anyway; the decision records both).
    EgressAllowed = "EGRESS_ALLOWED",
    /// Egress: no service class allowed for the session's environment and workload class
    /// lists the destination host (the default is to deny).
    EgressDestinationNotAllowed = "EGRESS_DESTINATION_NOT_ALLOWED",
    /// Egress: the destination host is allowed, but not on this port.
    EgressPortNotAllowed = "EGRESS_PORT_NOT_ALLOWED",
    /// Egress: the destination host and port are allowed, but not with this scheme
    /// (`http` or `https`).
    EgressSchemeNotAllowed = "EGRESS_SCHEME_NOT_ALLOWED",
    /// Egress: the destination is allowed, but not with this HTTP method.
    EgressMethodNotAllowed = "EGRESS_METHOD_NOT_ALLOWED",
    /// Egress: the destination resolved to (or is written as) a non-public address:
    /// private, loopback, link-local, shared (CGNAT), multicast, unspecified, reserved,
    /// documentation, cloud metadata, or an IPv6 form embedding one of those, and no
    /// policy range allows it.
    EgressNonPublicAddress = "EGRESS_NON_PUBLIC_ADDRESS",
    /// Egress: the destination host name does not resolve.
    EgressDnsFailed = "EGRESS_DNS_FAILED",
    /// Egress: the server name in the TLS ClientHello is missing or differs from the
    /// host the tunnel was opened for.
    EgressSniMismatch = "EGRESS_SNI_MISMATCH",
    /// Egress: the session is not `active`, so nothing it sends may leave.
    EgressSessionNotActive = "EGRESS_SESSION_NOT_ACTIVE",
    /// Egress: the credential lease has expired or was revoked. As a request decision:
    /// the destination needs a credential and the session's lease for it is no longer
    /// valid, so the request is refused rather than sent without it.
    EgressCredentialLeaseExpired = "EGRESS_CREDENTIAL_LEASE_EXPIRED",
    /// Egress: the request is not well-formed HTTP/1.1 for a proxy: bad request line or
    /// headers, conflicting `Content-Length`/`Transfer-Encoding` (smuggling), a `Host`
    /// header that differs from the absolute URI, or a TLS tunnel that does not start
    /// with a ClientHello.
    EgressMalformedRequest = "EGRESS_MALFORMED_REQUEST",
    /// Egress: the upstream could not be reached (refused, reset, timed out) or sent a
    /// malformed response.
    EgressUpstreamFailed = "EGRESS_UPSTREAM_FAILED",
    /// Egress: the upstream's TLS certificate did not verify against the trusted roots.
    EgressUpstreamTlsFailed = "EGRESS_UPSTREAM_TLS_FAILED",
    /// The egress policy document is invalid: the message says where.
    EgressPolicyInvalid = "EGRESS_POLICY_INVALID",
    /// A secret with this name already exists in the tenant.
    SecretNameTaken = "SECRET_NAME_TAKEN",
    /// The credential lease was revoked or has expired: it cannot be renewed.
    LeaseNotRenewable = "LEASE_NOT_RENEWABLE",
    /// The requested lease TTL is zero or above the deployment's maximum.
    LeaseTtlInvalid = "LEASE_TTL_INVALID",
    /// Artifacts: no such workspace version in the caller's tenant (or it was removed
    /// by retention).
    VersionNotFound = "VERSION_NOT_FOUND",
    /// Artifacts: the new version's parent is not the session's latest version
    /// (`If-Match` names a stale parent); nothing was stored.
    VersionConflict = "VERSION_CONFLICT",
    /// Artifacts: an uploaded archive has an entry that escapes the workspace (absolute
    /// path, `..`, a symlink pointing outside); nothing was stored.
    ArchiveEntryEscapes = "ARCHIVE_ENTRY_ESCAPES",
    /// Artifacts: an uploaded archive has an entry of a kind a workspace cannot hold
    /// (device, fifo, hard link to a missing entry); nothing was stored.
    ArchiveEntryUnsupported = "ARCHIVE_ENTRY_UNSUPPORTED",
    /// Artifacts: an uploaded archive (or an entry of it, or the workspace it describes)
    /// exceeds the size or entry-count limits; nothing was stored.
    ArchiveTooLarge = "ARCHIVE_TOO_LARGE",
    /// Artifacts: the upload is not a readable tar archive.
    ArchiveInvalid = "ARCHIVE_INVALID",
    /// Artifacts: the workspace holds something a version cannot record faithfully (a
    /// symlink pointing outside the workspace, a device file, more than the limits).
    WorkspaceUnsupported = "WORKSPACE_UNSUPPORTED",
    /// Artifacts: a blob that a version refers to is missing or corrupt in the blob
    /// store; the workspace was not changed.
    BlobMissing = "BLOB_MISSING",
    /// Artifacts: the blob store (local directory or S3-compatible service) failed.
    BlobStoreUnavailable = "BLOB_STORE_UNAVAILABLE",
    /// Evidence: the requested entry index or tree size is beyond the log.
    EvidenceOutOfRange = "EVIDENCE_OUT_OF_RANGE",
    /// Releases: a release with this name already exists in the tenant.
    ReleaseNameTaken = "RELEASE_NAME_TAKEN",
    /// Releases: a path asked for in a promotion is not a file of the version.
    ReleasePathNotFound = "RELEASE_PATH_NOT_FOUND",
    /// A workflow definition failed validation (syntax, unknown step kind, a `needs` or
    /// `compensate` that names no step, a cycle, a bad duration or cron expression);
    /// the message names the field.
    WorkflowInvalid = "WORKFLOW_INVALID",
    /// The run's status does not allow this operation (cancel a finished run, unpause a
    /// run that is not paused, approve a step that is not waiting, ...); nothing changed.
    RunInvalidState = "RUN_INVALID_STATE",
    /// The durable step has an attempt in flight that is still heartbeating within its
    /// window; try again later or heartbeat it.
    RunStepInFlight = "RUN_STEP_IN_FLIGHT",
    /// A step's attempt ran longer than its start-to-close timeout (class timeout).
    StepTimeout = "STEP_TIMEOUT",
    /// A step did not finish within its schedule-to-close timeout, over all its attempts
    /// (class timeout, not retried).
    StepScheduleTimeout = "STEP_SCHEDULE_TIMEOUT",
    /// A running step missed its heartbeat window (class timeout).
    StepHeartbeatTimeout = "STEP_HEARTBEAT_TIMEOUT",
    /// An exec step's command exited non-zero (class error).
    StepExitNonzero = "STEP_EXIT_NONZERO",
    /// An http step's answer was an error status: 429 and 503 are class capacity, any
    /// other 4xx or 5xx class error.
    StepHttpStatus = "STEP_HTTP_STATUS",
    /// A step failed for a reason of its own (the agent's report through the durable-step
    /// API, a missing session, a failed restore, ...); the message says which.
    StepFailed = "STEP_FAILED",
    /// A `wait_for_event` step's timeout passed before the event arrived (class timeout).
    StepEventTimeout = "STEP_EVENT_TIMEOUT",
    /// An `approval` step was rejected by the person deciding.
    StepApprovalRejected = "STEP_APPROVAL_REJECTED",
    /// An `approval` step's timeout passed without a decision (class timeout).
    StepApprovalTimeout = "STEP_APPROVAL_TIMEOUT",
    /// The run passed its deadline; it fails and compensates.
    RunDeadlineExceeded = "RUN_DEADLINE_EXCEEDED",
    /// The run was cancelled by an operator; its compensations ran.
    RunCancelled = "RUN_CANCELLED",
    /// An operator discarded the run's dead-letter entry; the run fails and compensates.
    RunDeadLetterDiscarded = "RUN_DEAD_LETTER_DISCARDED",
    /// An unexpected server error; details are in the server log under the request id.
    Internal = "INTERNAL",
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ReasonCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Renders the registry as the Markdown page `docs/reason-codes.md`.
pub fn render_markdown() -> String {
    let mut page = String::from(
        "# Reason codes\n\n\
         Generated from `crates/core/src/reason.rs`; a test keeps the two in sync\n\
         (refresh with `CORDON_UPDATE_DOCS=1 cargo test -p cordon-core`).\n\
         A published code keeps its meaning: codes are added, never repurposed.\n\n\
         | code | meaning |\n|---|---|\n",
    );
    for code in ReasonCode::ALL {
        let meaning = code
            .description()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        page.push_str(&format!("| `{code}` | {meaning} |\n"));
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_screaming_snake_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &code in ReasonCode::ALL {
            let text = code.as_str();
            assert!(seen.insert(text), "duplicate {text}");
            assert!(
                text.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
                "{text}"
            );
            assert_eq!(ReasonCode::from_code(text), Some(code));
            assert!(!code.description().is_empty(), "{text} has no description");
        }
    }

    #[test]
    fn docs_page_is_in_sync_with_the_registry() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/reason-codes.md");
        let rendered = render_markdown();
        if std::env::var_os("CORDON_UPDATE_DOCS").is_some() {
            std::fs::write(path, &rendered).unwrap();
        }
        let on_disk = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            on_disk == rendered,
            "docs/reason-codes.md is out of date: run CORDON_UPDATE_DOCS=1 cargo test -p cordon-core"
        );
    }
}
