//! The API client commands: `cordon tenant|key|session ...`. They read CORDON_URL and
//! CORDON_TOKEN, print tables (or the server's JSON with `--json`) to stdout, and
//! errors with their reason code to stderr.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use cordon_core::{Labels, Phase, Role};
use cordon_wire::{
    CreateKeyRequest, CreateSessionRequest, CreateTenantRequest, CreatedKeyBody, ErrorBody,
    EventList, KeyBody, KeyList, SessionBody, SessionList, TenantBody, TenantList,
    TransitionRequest,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::exit;

#[derive(Debug, Args)]
pub struct ClientArgs<C: Subcommand> {
    /// The server's base URL.
    #[arg(
        long,
        env = "CORDON_URL",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    url: String,
    /// The API key's bearer token.
    #[arg(long, env = "CORDON_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the server's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// Give up on a request after this many seconds.
    #[arg(long, env = "CORDON_TIMEOUT", default_value_t = 30, global = true)]
    timeout: u64,
    #[command(subcommand)]
    command: C,
}

impl<C: Subcommand> ClientArgs<C> {
    pub(crate) fn command(&self) -> &C {
        &self.command
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create { name: String },
    /// List all tenants.
    List,
    /// Show one tenant.
    Get { id: String },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; its token is printed once.
    Create {
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        name: String,
        /// Tenant id (system admin only); defaults to the caller's tenant.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the keys of a tenant.
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key.
    Delete {
        id: String,
        #[arg(long)]
        tenant: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// Create a session.
    Create {
        #[arg(long = "class")]
        workload_class: String,
        #[arg(long = "env")]
        environment: String,
        /// A label as key=value; repeatable.
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// Sent as `Idempotency-Key`, so a retried create creates one session.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// List sessions.
    List {
        #[arg(long, value_parser = parse_phase)]
        phase: Option<Phase>,
        #[arg(long = "class")]
        workload_class: Option<String>,
        #[arg(long = "env")]
        environment: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one session.
    Get { id: String },
    /// created -> active.
    Activate(TransitionArgs),
    /// active -> checkpointed.
    Checkpoint(TransitionArgs),
    /// active or checkpointed -> suspended.
    Suspend(TransitionArgs),
    /// suspended or checkpointed -> active.
    Resume(TransitionArgs),
    /// Any phase but closed -> closed. Final: asks for confirmation unless --yes.
    Close {
        #[command(flatten)]
        transition: TransitionArgs,
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Show a session's event log.
    Events {
        id: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct TransitionArgs {
    id: String,
    /// Why; recorded in the event log.
    #[arg(long)]
    reason: Option<String>,
    /// Only for `close`: succeeded (the default), failed or abandoned.
    #[arg(long)]
    outcome: Option<String>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|error: cordon_core::model::UnknownRole| error.to_string())
}

fn parse_phase(text: &str) -> Result<Phase, String> {
    text.parse()
        .map_err(|error: cordon_core::lifecycle::UnknownPhase| error.to_string())
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .ok_or_else(|| format!("`{text}` is not key=value"))
}

/// A failed command: what to print and which code to exit with.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

pub(crate) type Outcome<T> = Result<T, Failure>;

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) token: Option<String>,
    pub(crate) json: bool,
}

impl Client {
    pub(crate) fn new<C: Subcommand>(args: &ClientArgs<C>) -> Outcome<Self> {
        Self::build(&args.url, args.token.clone(), args.json, args.timeout)
    }

    /// A client for `url`; `timeout` (seconds) bounds connecting and each whole request.
    /// A request may set a longer timeout of its own; connecting stays bounded.
    pub(crate) fn build(
        url: &str,
        token: Option<String>,
        json: bool,
        timeout: u64,
    ) -> Outcome<Self> {
        let timeout = std::time::Duration::from_secs(timeout.max(1));
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|error| Failure {
                code: exit::INTERNAL,
                message: format!("cannot build the HTTP client: {error}"),
            })?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
            token,
            json,
        })
    }

    /// Sends a request and returns the raw JSON of a successful answer.
    pub(crate) async fn call<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        idempotency_key: Option<&str>,
    ) -> Outcome<serde_json::Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.map_err(|error| Failure {
            code: exit::UNREACHABLE,
            message: format!("cannot reach {}: {error}", self.base),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|error| Failure {
            code: exit::UNREACHABLE,
            message: format!("the connection to {} broke: {error}", self.base),
        })?;
        if status.is_success() {
            // 204 No Content (a delete): nothing to parse.
            if bytes.is_empty() {
                return Ok(serde_json::Value::Null);
            }
            return serde_json::from_slice(&bytes).map_err(|error| Failure {
                code: exit::INTERNAL,
                message: format!("the server sent invalid JSON: {error}"),
            });
        }
        Err(http_failure(status, &bytes))
    }

    /// Prints the answer: the server's JSON with `--json`, else `table` of it.
    pub(crate) fn show<T: DeserializeOwned>(
        &self,
        value: serde_json::Value,
        table: fn(T) -> String,
    ) -> Outcome<()> {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            return Ok(());
        }
        let typed: T = serde_json::from_value(value).map_err(|error| Failure {
            code: exit::INTERNAL,
            message: format!("unexpected answer from the server: {error}"),
        })?;
        print!("{}", table(typed));
        Ok(())
    }
}

pub(crate) fn http_failure(status: StatusCode, body: &[u8]) -> Failure {
    let message = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(error) => format!(
            "{}: {} (HTTP {}, request {})",
            error.error.code,
            error.error.message,
            status.as_u16(),
            error.error.request_id
        ),
        Err(_) => format!(
            "HTTP {}: {}",
            status.as_u16(),
            String::from_utf8_lossy(body).trim()
        ),
    };
    Failure {
        code: exit::for_status(status.as_u16()),
        message,
    }
}

pub(crate) fn finish(outcome: Outcome<()>) -> ExitCode {
    match outcome {
        Ok(()) => exit::code(exit::OK),
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            exit::code(failure.code)
        }
    }
}

/// Asks on the terminal; refuses without one (pass --yes in scripts).
fn confirm(question: &str) -> Outcome<()> {
    let refused = |message: &str| Failure {
        code: exit::REFUSED,
        message: message.to_owned(),
    };
    if !std::io::stdin().is_terminal() {
        return Err(refused("refusing without confirmation: pass --yes"));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|error| refused(&format!("cannot read the answer: {error}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(refused("not confirmed"))
    }
}

/// Renders rows as left-aligned columns under a header.
pub(crate) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(header.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row);
    }
    out
}

fn tenant_rows(tenants: Vec<TenantBody>) -> String {
    let rows = tenants
        .into_iter()
        .map(|t| vec![t.id, t.name, t.created_at.to_string()])
        .collect();
    table(&["ID", "NAME", "CREATED"], rows)
}

fn key_rows(keys: Vec<KeyBody>) -> String {
    let rows = keys
        .into_iter()
        .map(|k| {
            let state = match k.revoked_at {
                Some(at) => format!("revoked {at}"),
                None => "active".to_owned(),
            };
            vec![
                k.id,
                k.role.to_string(),
                k.name,
                if k.system { "yes".into() } else { "".into() },
                state,
            ]
        })
        .collect();
    table(&["ID", "ROLE", "NAME", "SYSTEM", "STATE"], rows)
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

pub async fn run_tenant(args: ClientArgs<TenantCommand>) -> ExitCode {
    finish(tenant(args).await)
}

async fn tenant(args: ClientArgs<TenantCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    let none = None::<&()>;
    match args.command {
        TenantCommand::Create { name } => {
            let body = CreateTenantRequest { name };
            let value = client
                .call(Method::POST, "/v1/tenants", &[], Some(&body), None)
                .await?;
            client.show(value, |t: TenantBody| tenant_rows(vec![t]))
        }
        TenantCommand::List => {
            let value = client
                .call(Method::GET, "/v1/tenants", &[], none, None)
                .await?;
            client.show(value, |list: TenantList| tenant_rows(list.items))
        }
        TenantCommand::Get { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/tenants/{id}"), &[], none, None)
                .await?;
            client.show(value, |t: TenantBody| tenant_rows(vec![t]))
        }
    }
}

pub async fn run_key(args: ClientArgs<KeyCommand>) -> ExitCode {
    finish(key(args).await)
}

fn tenant_query(tenant: Option<String>) -> Vec<(&'static str, String)> {
    tenant.map(|id| ("tenant_id", id)).into_iter().collect()
}

async fn key(args: ClientArgs<KeyCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    let none = None::<&()>;
    match args.command {
        KeyCommand::Create { role, name, tenant } => {
            let body = CreateKeyRequest {
                tenant_id: tenant,
                role,
                name,
            };
            let value = client
                .call(Method::POST, "/v1/keys", &[], Some(&body), None)
                .await?;
            client.show(value, |created: CreatedKeyBody| {
                let mut out = key_rows(vec![created.key]);
                out.push_str(&format!(
                    "\ntoken (shown once, store it now):\n{}\n",
                    created.token
                ));
                out
            })
        }
        KeyCommand::List { tenant } => {
            let value = client
                .call(Method::GET, "/v1/keys", &tenant_query(tenant), none, None)
                .await?;
            client.show(value, |list: KeyList| key_rows(list.items))
        }
        KeyCommand::Delete { id, tenant, yes } => {
            if !yes {
                confirm(&format!("Revoke key {id}? It stops working at once."))?;
            }
            let path = format!("/v1/keys/{id}");
            let value = client
                .call(Method::DELETE, &path, &tenant_query(tenant), none, None)
                .await?;
            client.show(value, |k: KeyBody| key_rows(vec![k]))
        }
    }
}

pub async fn run_session(args: ClientArgs<SessionCommand>) -> ExitCode {
    finish(session(args).await)
}

async fn session(args: ClientArgs<SessionCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    let none = None::<&()>;
    let client = &client;
    let transition = |action: &'static str, args: TransitionArgs| async move {
        let body = TransitionRequest {
            reason: args.reason,
            outcome: args.outcome,
        };
        let path = format!("/v1/sessions/{}/{action}", args.id);
        client
            .call(Method::POST, &path, &[], Some(&body), None)
            .await
    };
    let one = |s: SessionBody| session_rows(vec![s]);
    match args.command {
        SessionCommand::Create {
            workload_class,
            environment,
            labels,
            idempotency_key,
        } => {
            let body = CreateSessionRequest {
                workload_class,
                environment,
                labels: labels.into_iter().collect::<Labels>(),
            };
            let value = client
                .call(
                    Method::POST,
                    "/v1/sessions",
                    &[],
                    Some(&body),
                    idempotency_key.as_deref(),
                )
                .await?;
            client.show(value, one)
        }
        SessionCommand::List {
            phase,
            workload_class,
            environment,
            limit,
            cursor,
        } => {
            let mut query = Vec::new();
            query.extend(phase.map(|p| ("phase", p.to_string())));
            query.extend(workload_class.map(|c| ("workload_class", c)));
            query.extend(environment.map(|e| ("environment", e)));
            query.extend(limit.map(|l| ("limit", l.to_string())));
            query.extend(cursor.map(|c| ("cursor", c)));
            let value = client
                .call(Method::GET, "/v1/sessions", &query, none, None)
                .await?;
            client.show(value, |list: SessionList| {
                let mut out = session_rows(list.items);
                if let Some(cursor) = list.next_cursor {
                    out.push_str(&format!("\nmore: --cursor {cursor}\n"));
                }
                out
            })
        }
        SessionCommand::Get { id } => {
            let value = client
                .call(Method::GET, &format!("/v1/sessions/{id}"), &[], none, None)
                .await?;
            client.show(value, one)
        }
        SessionCommand::Activate(args) => client.show(transition("activate", args).await?, one),
        SessionCommand::Checkpoint(args) => client.show(transition("checkpoint", args).await?, one),
        SessionCommand::Suspend(args) => client.show(transition("suspend", args).await?, one),
        SessionCommand::Resume(args) => client.show(transition("resume", args).await?, one),
        SessionCommand::Close {
            transition: args,
            yes,
        } => {
            if !yes {
                confirm(&format!("Close session {}? Closing is final.", args.id))?;
            }
            client.show(transition("close", args).await?, one)
        }
        SessionCommand::Events { id, limit, cursor } => {
            let mut query = Vec::new();
            query.extend(limit.map(|l| ("limit", l.to_string())));
            query.extend(cursor.map(|c| ("cursor", c)));
            let path = format!("/v1/sessions/{id}/events");
            let value = client.call(Method::GET, &path, &query, none, None).await?;
            client.show(value, |list: EventList| {
                let rows = list
                    .items
                    .into_iter()
                    .map(|e| {
                        vec![
                            e.seq.to_string(),
                            e.at.to_string(),
                            e.actor,
                            e.from.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                            e.to.to_string(),
                            e.reason.unwrap_or_default(),
                        ]
                    })
                    .collect();
                let mut out = table(&["SEQ", "AT", "ACTOR", "FROM", "TO", "REASON"], rows);
                if let Some(cursor) = list.next_cursor {
                    out.push_str(&format!("\nmore: --cursor {cursor}\n"));
                }
                out
            })
        }
    }
}
