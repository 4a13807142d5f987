//! `cordon checkpoint`, `cordon version`, `cordon evidence` and `cordon release`: clients
//! of the artifacts API (workspace versions, the tenant's evidence log, signed
//! releases). Archives and evidence bundles are streamed to a file (or stdout with
//! `-o -`) as the server sent them; `evidence verify` and `release verify` run offline
//! and never contact the server.
//!
//! Wiring into main.rs (this file does not edit it):
//!
//! ```text
//! // with the other modules (`mod verify;` too, unless its author added it):
//! mod artifacts_client;
//! mod verify;
//!
//! // in `enum Command`, after `Process(...)`:
//!     /// Snapshot a session's workspace into a new version and move the session to
//!     /// `checkpointed`: `cordon checkpoint SESSION [--summary S] [--reason R]`.
//!     Checkpoint(artifacts_client::CheckpointArgs),
//!     /// A session's workspace versions: list, show, diff, download, upload, restore, fork.
//!     Version(client::ClientArgs<artifacts_client::VersionCommand>),
//!     /// The tenant's evidence log: entries, signed checkpoints, proofs, export and
//!     /// offline verification.
//!     Evidence(client::ClientArgs<artifacts_client::EvidenceCommand>),
//!     /// Signed releases: promote a version, list, show, download, verify offline.
//!     Release(client::ClientArgs<artifacts_client::ReleaseCommand>),
//!
//! // in the `match cli.command`, after `Command::Process(args) => ...`:
//!             Command::Checkpoint(args) => artifacts_client::run_checkpoint(args).await,
//!             Command::Version(args) => artifacts_client::run_version(args).await,
//!             Command::Evidence(args) => artifacts_client::run_evidence(args).await,
//!             Command::Release(args) => artifacts_client::run_release(args).await,
//! ```
//!
//! `cordon checkpoint SESSION` takes its own connection flags (like `cordon exec`)
//! because `ClientArgs` requires a subcommand. The offline `verify` subcommands live in
//! the `evidence` and `release` enums: `ClientArgs` forces neither a URL (it has a
//! default) nor a token (optional), and they never build a client.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use cordon_wire::{
    ChangeBody, CheckpointRequest, ConsistencyProofBody, DiffBody, EvidenceCheckpointBody,
    EvidenceEntryBody, EvidenceList, ForkRequest, ForkResponse, InclusionProofBody, PromoteRequest,
    PublicKeyBody, ReleaseBody, ReleaseList, RestoreBody, RestoreRequest, SessionBody, VersionBody,
    VersionList,
};
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderValue, IF_MATCH};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::client::{Client, ClientArgs, Failure, Outcome, finish, http_failure, table};
use crate::exit;

/// The widest the FIELDS column of `evidence list` gets; `--json` shows everything.
const FIELDS_WIDTH: usize = 100;

/// `cordon checkpoint SESSION`: a top-level command with its own connection flags.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The server's base URL.
    #[arg(long, env = "CORDON_URL", default_value = "http://127.0.0.1:7700")]
    url: String,
    /// The API key's bearer token.
    #[arg(long, env = "CORDON_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Give up on the request after this many seconds.
    #[arg(long, env = "CORDON_TIMEOUT", default_value_t = 30)]
    timeout: u64,
    /// What the agent was doing: the version's summary (up to 1,024 characters).
    #[arg(long)]
    summary: Option<String>,
    /// Why, for the session's event log.
    #[arg(long)]
    reason: Option<String>,
    /// Sent as `Idempotency-Key`, so a retried checkpoint records one version.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// The session (active).
    session: String,
}

#[derive(Debug, Clone, Subcommand)]
pub enum VersionCommand {
    /// A session's versions, newest first.
    List {
        session: String,
        /// Page size, 1 to 1000 (server default 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Only versions older than this one (`more: --before ...` of the previous page).
        #[arg(long)]
        before: Option<String>,
    },
    /// One version: what it holds and what writing it cost.
    Show { session: String, version: String },
    /// What changed: `+` added, `-` removed, `M` modified, `m` mode, `T` type.
    Diff {
        session: String,
        version: String,
        /// The older side (default: the version's parent).
        #[arg(long)]
        against: Option<String>,
    },
    /// Download a version as a tar archive.
    Download {
        session: String,
        version: String,
        /// Where to write the archive (`-`: stdout).
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Store a tar archive (`-`: stdin) as the session's next version; the workspace is
    /// not touched (restore it).
    Upload {
        session: String,
        file: PathBuf,
        /// The version the archive was based on: must be the session's latest (sent as
        /// `If-Match`); omit it for a session without versions.
        #[arg(long)]
        parent: Option<String>,
        /// What the archive holds (up to 1,024 characters).
        #[arg(long)]
        summary: Option<String>,
    },
    /// Make the session's workspace exactly VERSION: what the version lacks is removed.
    Restore {
        session: String,
        version: String,
        /// Sent as `Idempotency-Key`: a retried restore replays the first answer.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// A new active session whose workspace starts as VERSION.
    Fork {
        session: String,
        version: String,
        /// A label of the new session as key=value; repeatable (default: the source's).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Sent as `Idempotency-Key`, so a retried fork creates one session.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum EvidenceCommand {
    /// The tenant's evidence log, in index order.
    List {
        /// Only this session's entries.
        #[arg(long)]
        session: Option<String>,
        /// Only entries of this kind (`lifecycle`, `authz`, `egress`, `exec`, ...).
        #[arg(long)]
        kind: Option<String>,
        /// Entries from this index on (`more: --from N` of the previous page).
        #[arg(long)]
        from: Option<u64>,
        /// Page size, 1 to 1000 (server default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// The latest signed checkpoint (tree head) of the log.
    Checkpoint,
    /// The inclusion proof of entry INDEX.
    Proof {
        index: u64,
        /// The tree size to prove against (default: the latest checkpoint's).
        #[arg(long)]
        size: Option<u64>,
    },
    /// The consistency proof between two tree sizes.
    Consistency {
        #[arg(long)]
        from: u64,
        /// The larger size (default: the whole log).
        #[arg(long)]
        to: Option<u64>,
    },
    /// Download an offline-verifiable bundle (the whole log, or one session's entries).
    Export {
        #[arg(long)]
        session: Option<String>,
        /// Where to write the bundle (`-`: stdout).
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// The deployment's signing key, for offline verification.
    PublicKey {
        /// Write the key to this file instead of stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Verify an exported bundle offline (no server needed).
    Verify {
        bundle: PathBuf,
        /// The key file written by `cordon evidence public-key -o FILE`.
        #[arg(long)]
        public_key: PathBuf,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum ReleaseCommand {
    /// Promote a version of a session to a named, immutable, signed release.
    Create {
        session: String,
        /// Unique in the tenant; 1 to 128 characters of `[a-zA-Z0-9_.-]`.
        #[arg(long)]
        name: String,
        /// The version to promote (default: the session's latest).
        #[arg(long)]
        version: Option<String>,
        /// A file of the version to release; repeatable (default: every file).
        #[arg(long = "path")]
        paths: Vec<String>,
        /// Sent as `Idempotency-Key`: a retried create replays the first answer.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// The tenant's releases.
    List,
    /// One release and its files.
    Show { id: String },
    /// Download a release as a tar archive (`release.dsse.json` and `files/`).
    Download {
        id: String,
        /// Where to write the archive (`-`: stdout).
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Verify a downloaded release archive offline (no server needed).
    Verify {
        archive: PathBuf,
        /// The key file written by `cordon evidence public-key -o FILE`.
        #[arg(long)]
        public_key: PathBuf,
    },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not key=value"))
}

fn usage(message: String) -> Failure {
    Failure {
        code: exit::USAGE,
        message,
    }
}

fn internal(message: String) -> Failure {
    Failure {
        code: exit::INTERNAL,
        message,
    }
}

fn is_stdio(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// An id as one URL path segment: anything but unreserved characters percent-encoded,
/// so an id cannot add segments or a query to the path.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A successful JSON answer as `T`, whatever `--json` says (for answers a command needs
/// to read, not just print).
fn typed<T: DeserializeOwned>(value: serde_json::Value) -> Outcome<T> {
    serde_json::from_value(value)
        .map_err(|error| internal(format!("unexpected answer from the server: {error}")))
}

fn authorized(client: &Client, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &client.token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

fn broken(client: &Client, error: &reqwest::Error) -> Failure {
    Failure {
        code: exit::UNREACHABLE,
        message: format!("the connection to {} broke: {error}", client.base),
    }
}

/// Sends a request; a non-2xx answer becomes the failure its error body describes.
async fn send_checked(
    client: &Client,
    request: reqwest::RequestBuilder,
) -> Outcome<reqwest::Response> {
    let response = request.send().await.map_err(|error| Failure {
        code: exit::UNREACHABLE,
        message: format!("cannot reach {}: {error}", client.base),
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| broken(client, &error))?;
    Err(http_failure(status, &body))
}

/// GETs `path` and streams the answer's bytes, as sent, to `output` (`-`: stdout). The
/// file is created only once the server has answered with success, and removed again
/// if the transfer breaks.
pub(crate) async fn download(
    client: &Client,
    path: &str,
    query: &[(&str, String)],
    output: &Path,
) -> Outcome<()> {
    let request =
        authorized(client, client.http.get(format!("{}{path}", client.base))).query(query);
    let mut response = send_checked(client, request).await?;
    if is_stdio(output) {
        let mut stdout = std::io::stdout();
        return copy_body(client, &mut response, &mut stdout, "stdout").await;
    }
    let shown = output.display().to_string();
    let mut file = std::fs::File::create(output)
        .map_err(|error| internal(format!("cannot create {shown}: {error}")))?;
    let copied = copy_body(client, &mut response, &mut file, &shown).await;
    if copied.is_err() {
        drop(file);
        let _ = std::fs::remove_file(output);
    }
    copied
}

/// Writes the response's body to `out`, chunk by chunk, then flushes it.
async fn copy_body(
    client: &Client,
    response: &mut reqwest::Response,
    out: &mut dyn Write,
    name: &str,
) -> Outcome<()> {
    let write_failed = |error: std::io::Error| internal(format!("cannot write {name}: {error}"));
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| broken(client, &error))?
    {
        out.write_all(&chunk).map_err(write_failed)?;
    }
    out.flush().map_err(write_failed)
}

/// Reads a local file whole (`-`: stdin).
fn read_input(path: &Path) -> Outcome<Vec<u8>> {
    let read = if is_stdio(path) {
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).map(|_| bytes)
    } else {
        std::fs::read(path)
    };
    read.map_err(|error| usage(format!("cannot read {}: {error}", path.display())))
}

/// Writes `text` to `output` (`-`: stdout).
fn write_text(output: &Path, text: &str) -> Outcome<()> {
    let written = if is_stdio(output) {
        let mut stdout = std::io::stdout();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
    } else {
        std::fs::write(output, text)
    };
    written.map_err(|error| internal(format!("cannot write {}: {error}", output.display())))
}

/// The answer of an offline verification: its summary on stdout, or the failure (exit
/// code 6, as a refused request: the bundle or archive is not what it claims).
fn verified(result: anyhow::Result<String>) -> Outcome<()> {
    match result {
        Ok(summary) => {
            println!("{}", summary.trim_end());
            Ok(())
        }
        Err(error) => Err(Failure {
            code: exit::REFUSED,
            message: format!("verification failed: {error:#}"),
        }),
    }
}

pub async fn run_checkpoint(args: CheckpointArgs) -> ExitCode {
    finish(checkpoint(args).await)
}

async fn checkpoint(args: CheckpointArgs) -> Outcome<()> {
    let client = Client::build(&args.url, args.token.clone(), args.json, args.timeout)?;
    let body = CheckpointRequest {
        summary: args.summary.unwrap_or_default(),
        reason: args.reason,
    };
    let path = format!("/v1/sessions/{}/checkpoint", segment(&args.session));
    let value = client
        .call(
            Method::POST,
            &path,
            &[],
            Some(&body),
            args.idempotency_key.as_deref(),
        )
        .await?;
    if client.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print!("{}", checkpoint_text(value)?);
    }
    Ok(())
}

pub async fn run_version(args: ClientArgs<VersionCommand>) -> ExitCode {
    finish(version(args).await)
}

async fn version(args: ClientArgs<VersionCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    let none = None::<&()>;
    match args.command().clone() {
        VersionCommand::List {
            session,
            limit,
            before,
        } => {
            let mut query = Vec::new();
            query.extend(before.map(|b| ("before", b)));
            query.extend(limit.map(|l| ("limit", l.to_string())));
            let path = format!("/v1/sessions/{}/versions", segment(&session));
            let value = client.call(Method::GET, &path, &query, none, None).await?;
            client.show(value, |list: VersionList| {
                let mut out = version_rows(list.versions);
                if let Some(next) = list.next {
                    out.push_str(&format!("\nmore: --before {next}\n"));
                }
                out
            })
        }
        VersionCommand::Show { session, version } => {
            let path = format!(
                "/v1/sessions/{}/versions/{}",
                segment(&session),
                segment(&version)
            );
            let value = client.call(Method::GET, &path, &[], none, None).await?;
            client.show(value, version_detail)
        }
        VersionCommand::Diff {
            session,
            version,
            against,
        } => {
            let query: Vec<(&str, String)> = against.map(|a| ("against", a)).into_iter().collect();
            let path = format!(
                "/v1/sessions/{}/versions/{}/diff",
                segment(&session),
                segment(&version)
            );
            let value = client.call(Method::GET, &path, &query, none, None).await?;
            client.show(value, |diff: DiffBody| diff_lines(&diff.changes))
        }
        VersionCommand::Download {
            session,
            version,
            output,
        } => {
            let path = format!(
                "/v1/sessions/{}/versions/{}/archive",
                segment(&session),
                segment(&version)
            );
            download(&client, &path, &[], &output).await
        }
        VersionCommand::Upload {
            session,
            file,
            parent,
            summary,
        } => {
            let bytes = read_input(&file)?;
            let url = format!("{}/v1/sessions/{}/versions", client.base, segment(&session));
            let mut request = authorized(&client, client.http.post(url))
                .header(CONTENT_TYPE, "application/x-tar")
                .body(bytes);
            if let Some(parent) = parent {
                let value = HeaderValue::from_str(&parent)
                    .map_err(|_| usage(format!("`{parent}` is not a version id")))?;
                request = request.header(IF_MATCH, value);
            }
            if let Some(summary) = summary {
                request = request.query(&[("summary", summary)]);
            }
            let response = send_checked(&client, request).await?;
            let body = response
                .bytes()
                .await
                .map_err(|error| broken(&client, &error))?;
            let value: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|error| internal(format!("the server sent invalid JSON: {error}")))?;
            client.show(value, |v: VersionBody| version_rows(vec![v]))
        }
        VersionCommand::Restore {
            session,
            version,
            idempotency_key,
        } => {
            let body = RestoreRequest { version };
            let path = format!("/v1/sessions/{}/restore", segment(&session));
            let value = client
                .call(
                    Method::POST,
                    &path,
                    &[],
                    Some(&body),
                    idempotency_key.as_deref(),
                )
                .await?;
            client.show(value, restore_rows)
        }
        VersionCommand::Fork {
            session,
            version,
            labels,
            idempotency_key,
        } => {
            let body = ForkRequest {
                labels: (!labels.is_empty())
                    .then(|| labels.into_iter().collect::<BTreeMap<_, _>>()),
            };
            let path = format!(
                "/v1/sessions/{}/versions/{}/fork",
                segment(&session),
                segment(&version)
            );
            let value = client
                .call(
                    Method::POST,
                    &path,
                    &[],
                    Some(&body),
                    idempotency_key.as_deref(),
                )
                .await?;
            client.show(value, |fork: ForkResponse<SessionBody>| {
                format!(
                    "{}\n{}",
                    session_rows(vec![fork.session]),
                    version_rows(vec![fork.version])
                )
            })
        }
    }
}

pub async fn run_evidence(args: ClientArgs<EvidenceCommand>) -> ExitCode {
    finish(evidence(args).await)
}

async fn evidence(args: ClientArgs<EvidenceCommand>) -> Outcome<()> {
    // Offline: no client, no server.
    if let EvidenceCommand::Verify { bundle, public_key } = args.command() {
        return verified(crate::verify::evidence_verify(bundle, public_key));
    }
    let client = Client::new(&args)?;
    let none = None::<&()>;
    match args.command().clone() {
        EvidenceCommand::List {
            session,
            kind,
            from,
            limit,
        } => {
            let mut query = Vec::new();
            query.extend(session.map(|s| ("session", s)));
            query.extend(kind.map(|k| ("kind", k)));
            query.extend(from.map(|f| ("from", f.to_string())));
            query.extend(limit.map(|l| ("limit", l.to_string())));
            let value = client
                .call(Method::GET, "/v1/evidence", &query, none, None)
                .await?;
            client.show(value, |list: EvidenceList| {
                let mut out = evidence_rows(list.entries);
                if let Some(next) = list.next {
                    out.push_str(&format!("\nmore: --from {next}\n"));
                }
                out
            })
        }
        EvidenceCommand::Checkpoint => {
            let value = client
                .call(Method::GET, "/v1/evidence/checkpoint", &[], none, None)
                .await?;
            client.show(value, checkpoint_note)
        }
        EvidenceCommand::Proof { index, size } => {
            let size = match size {
                Some(size) => size,
                None => {
                    let value = client
                        .call(Method::GET, "/v1/evidence/checkpoint", &[], none, None)
                        .await?;
                    typed::<EvidenceCheckpointBody>(value)?.size
                }
            };
            let path = format!("/v1/evidence/entries/{index}/proof");
            let query = [("size", size.to_string())];
            let value = client.call(Method::GET, &path, &query, none, None).await?;
            client.show(value, inclusion_text)
        }
        EvidenceCommand::Consistency { from, to } => {
            let mut query = vec![("from", from.to_string())];
            query.extend(to.map(|t| ("to", t.to_string())));
            let value = client
                .call(Method::GET, "/v1/evidence/consistency", &query, none, None)
                .await?;
            client.show(value, consistency_text)
        }
        EvidenceCommand::Export { session, output } => {
            let query: Vec<(&str, String)> = session.map(|s| ("session", s)).into_iter().collect();
            download(&client, "/v1/evidence/export", &query, &output).await
        }
        EvidenceCommand::PublicKey { output } => {
            let value = client
                .call(Method::GET, "/v1/evidence/public-key", &[], none, None)
                .await?;
            match output {
                Some(output) => {
                    let body: PublicKeyBody = typed(value)?;
                    write_text(&output, &format!("{}\n", body.key.trim_end()))
                }
                None => client.show(value, |body: PublicKeyBody| {
                    format!("{}\n", body.key.trim_end())
                }),
            }
        }
        // Answered above, before a client was built.
        EvidenceCommand::Verify { bundle, public_key } => {
            verified(crate::verify::evidence_verify(&bundle, &public_key))
        }
    }
}

pub async fn run_release(args: ClientArgs<ReleaseCommand>) -> ExitCode {
    finish(release(args).await)
}

async fn release(args: ClientArgs<ReleaseCommand>) -> Outcome<()> {
    // Offline: no client, no server.
    if let ReleaseCommand::Verify {
        archive,
        public_key,
    } = args.command()
    {
        return verified(crate::verify::release_verify(archive, public_key));
    }
    let client = Client::new(&args)?;
    let none = None::<&()>;
    match args.command().clone() {
        ReleaseCommand::Create {
            session,
            name,
            version,
            paths,
            idempotency_key,
        } => {
            let body = PromoteRequest {
                name,
                version,
                paths,
            };
            let path = format!("/v1/sessions/{}/releases", segment(&session));
            let value = client
                .call(
                    Method::POST,
                    &path,
                    &[],
                    Some(&body),
                    idempotency_key.as_deref(),
                )
                .await?;
            client.show(value, |r: ReleaseBody| release_rows(vec![r]))
        }
        ReleaseCommand::List => {
            let value = client
                .call(Method::GET, "/v1/releases", &[], none, None)
                .await?;
            client.show(value, |list: ReleaseList| release_rows(list.releases))
        }
        ReleaseCommand::Show { id } => {
            let path = format!("/v1/releases/{}", segment(&id));
            let value = client.call(Method::GET, &path, &[], none, None).await?;
            client.show(value, release_detail)
        }
        ReleaseCommand::Download { id, output } => {
            let path = format!("/v1/releases/{}/archive", segment(&id));
            download(&client, &path, &[], &output).await
        }
        // Answered above, before a client was built.
        ReleaseCommand::Verify {
            archive,
            public_key,
        } => verified(crate::verify::release_verify(&archive, &public_key)),
    }
}

/// `key  value` lines, the keys padded to one width.
fn details(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(key, value)| format!("{key:<width$}  {value}").trim_end().to_owned() + "\n")
        .collect()
}

/// The first line of a free-text summary, for a table cell.
fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

fn session_rows(sessions: Vec<SessionBody>) -> String {
    let rows = sessions
        .into_iter()
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                s.id,
                s.phase.to_string(),
                s.workload_class,
                s.environment,
                labels.join(","),
                s.updated_at.to_string(),
            ]
        })
        .collect();
    table(&["ID", "PHASE", "CLASS", "ENV", "LABELS", "UPDATED"], rows)
}

fn version_rows(versions: Vec<VersionBody>) -> String {
    let rows = versions
        .into_iter()
        .map(|v| {
            vec![
                v.id,
                v.parent.unwrap_or_else(|| "-".into()),
                v.origin,
                v.stats.files.to_string(),
                v.stats.bytes.to_string(),
                v.created_at.to_string(),
                first_line(&v.summary),
            ]
        })
        .collect();
    table(
        &[
            "ID", "PARENT", "ORIGIN", "FILES", "BYTES", "CREATED", "SUMMARY",
        ],
        rows,
    )
}

fn version_detail(v: VersionBody) -> String {
    details(&[
        ("id", v.id),
        ("session", v.session_id),
        ("parent", v.parent.unwrap_or_else(|| "-".into())),
        ("origin", v.origin),
        ("root", v.root),
        ("files", v.stats.files.to_string()),
        ("dirs", v.stats.dirs.to_string()),
        ("symlinks", v.stats.symlinks.to_string()),
        ("bytes", v.stats.bytes.to_string()),
        ("blobs written", v.stats.blobs_written.to_string()),
        ("bytes written", v.stats.bytes_written.to_string()),
        ("created by", v.created_by),
        ("created", v.created_at.to_string()),
        ("summary", v.summary),
    ])
}

/// The session fields the answer of a checkpoint shows. Not `SessionBody`: the answer
/// (`CheckpointResponse<SessionBody>`) flattens the session beside its own `version`,
/// and the session's `version` (its event count) has the same key, so the server's
/// JSON holds `version` twice and neither type reads it back.
#[derive(Debug, Deserialize)]
struct CheckpointSession {
    id: String,
    phase: String,
    workload_class: String,
    environment: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    updated_at: String,
}

/// The session after a checkpoint and the version it recorded (`workspace_version`).
fn checkpoint_text(value: serde_json::Value) -> Outcome<String> {
    let version = value
        .get("workspace_version")
        .and_then(|member| serde_json::from_value::<VersionBody>(member.clone()).ok());
    let s: CheckpointSession = typed(value)?;
    let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = table(
        &["ID", "PHASE", "CLASS", "ENV", "LABELS", "UPDATED"],
        vec![vec![
            s.id,
            s.phase,
            s.workload_class,
            s.environment,
            labels.join(","),
            s.updated_at,
        ]],
    );
    out.push('\n');
    match version {
        Some(version) => out.push_str(&version_rows(vec![version])),
        None => out.push_str("no version recorded (artifacts are off on this node)\n"),
    }
    Ok(out)
}

/// The mark of a change in `version diff`: `+`, `-`, `M`, `m` (mode) or `T` (type).
fn change_mark(change: &str) -> &'static str {
    match change {
        "added" => "+",
        "removed" => "-",
        "modified" => "M",
        "mode_changed" => "m",
        "type_changed" => "T",
        _ => "?",
    }
}

fn diff_lines(changes: &[ChangeBody]) -> String {
    changes
        .iter()
        .map(|c| format!("{} {}\n", change_mark(&c.change), c.path))
        .collect()
}

fn restore_rows(r: RestoreBody) -> String {
    table(
        &["WRITTEN", "UNCHANGED", "REMOVED", "DIRS", "SYMLINKS", "MS"],
        vec![vec![
            r.files_written.to_string(),
            r.files_unchanged.to_string(),
            r.removed.to_string(),
            r.dirs_created.to_string(),
            r.symlinks_created.to_string(),
            format!("{:.1}", r.duration_ms),
        ]],
    )
}

/// An entry's payload as `name=value` pairs (strings unquoted, shredded fields marked),
/// cut to [`FIELDS_WIDTH`] characters.
fn entry_fields(entry: &EvidenceEntryBody) -> String {
    let mut pairs: Vec<String> = entry
        .fields
        .iter()
        .map(|(name, value)| match value {
            serde_json::Value::String(text) => format!("{name}={text}"),
            other => format!("{name}={other}"),
        })
        .collect();
    pairs.extend(
        entry
            .shredded
            .iter()
            .map(|name| format!("{name}=<shredded>")),
    );
    let text = pairs.join(" ").replace(['\n', '\r', '\t'], " ");
    if text.chars().count() <= FIELDS_WIDTH {
        return text;
    }
    let cut: String = text.chars().take(FIELDS_WIDTH - 3).collect();
    format!("{cut}...")
}

fn evidence_rows(entries: Vec<EvidenceEntryBody>) -> String {
    let rows = entries
        .into_iter()
        .map(|e| {
            let fields = entry_fields(&e);
            vec![
                e.index.to_string(),
                e.at.to_string(),
                e.kind,
                e.session_id.unwrap_or_else(|| "-".into()),
                fields,
            ]
        })
        .collect();
    table(&["INDEX", "AT", "KIND", "SESSION", "FIELDS"], rows)
}

fn checkpoint_note(c: EvidenceCheckpointBody) -> String {
    let mut out = details(&[
        ("size", c.size.to_string()),
        ("root", c.root),
        ("at", c.at.to_string()),
    ]);
    out.push('\n');
    out.push_str(&c.note);
    if !c.note.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Proof hashes, one a line, indented under their label.
fn hash_lines(label: &str, hashes: &[String]) -> String {
    let mut out = format!("{label} ({} hashes)\n", hashes.len());
    for hash in hashes {
        out.push_str(&format!("  {hash}\n"));
    }
    out
}

fn inclusion_text(p: InclusionProofBody) -> String {
    let mut out = details(&[
        ("index", p.index.to_string()),
        ("size", p.size.to_string()),
        ("leaf hash", p.leaf_hash),
        ("root", p.root),
    ]);
    out.push_str(&hash_lines("proof", &p.proof));
    out
}

fn consistency_text(p: ConsistencyProofBody) -> String {
    let mut out = details(&[
        ("from", p.from.to_string()),
        ("to", p.to.to_string()),
        ("from root", p.from_root),
        ("to root", p.to_root),
    ]);
    out.push_str(&hash_lines("proof", &p.proof));
    out
}

fn release_rows(releases: Vec<ReleaseBody>) -> String {
    let rows = releases
        .into_iter()
        .map(|r| {
            vec![
                r.id,
                r.name,
                r.session_id,
                r.version_id,
                r.subjects.len().to_string(),
                r.created_at.to_string(),
            ]
        })
        .collect();
    table(
        &["ID", "NAME", "SESSION", "VERSION", "FILES", "CREATED"],
        rows,
    )
}

fn release_detail(r: ReleaseBody) -> String {
    let mut out = details(&[
        ("id", r.id),
        ("name", r.name),
        ("session", r.session_id),
        ("version", r.version_id),
        ("root", r.root),
        ("created by", r.created_by),
        ("created", r.created_at.to_string()),
    ]);
    out.push('\n');
    let rows = r
        .subjects
        .into_iter()
        .map(|s| vec![s.sha256, s.name])
        .collect();
    out.push_str(&table(&["SHA256", "FILE"], rows));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    fn change(path: &str, change: &str) -> ChangeBody {
        ChangeBody {
            path: path.to_owned(),
            change: change.to_owned(),
            size_before: None,
            size_after: None,
        }
    }

    #[test]
    fn diff_lines_are_marked() {
        let changes = [
            change("new.txt", "added"),
            change("gone.txt", "removed"),
            change("edit.txt", "modified"),
            change("run.sh", "mode_changed"),
            change("link", "type_changed"),
            change("odd", "renamed"),
        ];
        assert_eq!(
            diff_lines(&changes),
            "+ new.txt\n- gone.txt\nM edit.txt\nm run.sh\nT link\n? odd\n"
        );
        assert_eq!(diff_lines(&[]), "");
    }

    #[test]
    fn ids_stay_one_segment() {
        assert_eq!(segment("ver_0192abc"), "ver_0192abc");
        assert_eq!(segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }

    #[test]
    fn labels_need_an_equals_sign() {
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("ab").is_err());
    }

    #[test]
    fn details_align_their_keys() {
        assert_eq!(
            details(&[("id", "x".into()), ("summary", String::new())]),
            "id       x\nsummary\n"
        );
    }

    #[test]
    fn entry_fields_are_compact_and_cut() {
        let mut entry: EvidenceEntryBody = serde_json::from_value(serde_json::json!({
            "index": 3, "session_id": null, "kind": "exec", "at": "2026-01-02T03:04:05Z",
            "leaf": "{}", "leaf_hash": "00",
            "fields": {"argv": ["ls", "-l"], "cwd": "/workspace\nx"},
            "shredded": ["stdin"],
        }))
        .unwrap();
        assert_eq!(
            entry_fields(&entry),
            r#"argv=["ls","-l"] cwd=/workspace x stdin=<shredded>"#
        );
        entry
            .fields
            .insert("big".into(), serde_json::Value::String("y".repeat(500)));
        let cut = entry_fields(&entry);
        assert_eq!(cut.chars().count(), FIELDS_WIDTH);
        assert!(cut.ends_with("..."));
    }

    /// What the server sends: the session (with its own `version` counter) and the
    /// recorded workspace version beside it under `workspace_version`.
    #[test]
    fn checkpoint_answers_show_the_session_and_its_version() {
        let session = r#""id":"ses_1","tenant_id":"ten_1","owner":"key_1","workload_class":"c","environment":"e","labels":{"a":"b"},"policy_version":"p","phase":"checkpointed","version":4,"created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:06Z""#;
        let version = r#""workspace_version":{"id":"ver_2","session_id":"ses_1","parent":null,"root":"ab","summary":"s","stats":{"files":1,"dirs":0,"symlinks":0,"bytes":5,"blobs_written":1,"bytes_written":5},"origin":"checkpoint","created_by":"key_1","created_at":"2026-01-02T03:04:06Z"}"#;
        let with: serde_json::Value =
            serde_json::from_str(&format!("{{{session},{version}}}")).unwrap();
        let text = checkpoint_text(with).ok().unwrap();
        assert!(
            text.contains("ses_1  checkpointed  c      e    a=b"),
            "{text}"
        );
        assert!(text.contains("ver_2  -       checkpoint  1"), "{text}");
        let without: serde_json::Value = serde_json::from_str(&format!("{{{session}}}")).unwrap();
        let text = checkpoint_text(without).ok().unwrap();
        assert!(text.ends_with("no version recorded (artifacts are off on this node)\n"));
    }

    #[test]
    fn verification_failures_are_refusals() {
        assert!(verified(Ok("ok\n".into())).is_ok());
        let failure = verified(Err(anyhow::anyhow!("bad signature")))
            .err()
            .unwrap();
        assert_eq!(failure.code, exit::REFUSED);
        assert!(failure.message.contains("bad signature"));
    }
}
