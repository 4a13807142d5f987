//! `cordon secret`, `cordon lease` and `cordon egress`: clients of the egress API. A
//! secret's value is read from stdin, never from an argument (arguments show in `ps` and
//! shell history).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use cordon_wire::egress::{
    CreateLeaseRequest, CreateSecretRequest, EgressDecisionBody, EgressDecisionList,
    EgressPolicyBody, LeaseBody, LeaseList, RenewLeaseRequest, SecretBody, SecretList,
};
use reqwest::Method;

use crate::client::{Client, ClientArgs, Failure, Outcome, finish, table};
use crate::exit;

#[derive(Debug, Clone, Subcommand)]
pub enum SecretCommand {
    /// Store a secret; its value is read from stdin (one trailing newline is dropped).
    Create {
        #[arg(long)]
        name: String,
        /// The service class whose requests may carry it.
        #[arg(long)]
        service_class: String,
        /// The header the gateway sets, e.g. Authorization.
        #[arg(long)]
        header: String,
        /// The header's value with `{secret}` where the value goes.
        #[arg(long, default_value = "{secret}")]
        format: String,
    },
    /// The tenant's secrets (metadata only).
    List,
    /// Delete a secret and revoke its leases.
    Delete { id: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum LeaseCommand {
    /// Lend a secret (id or name) to a session.
    Create {
        session: String,
        #[arg(long)]
        secret: String,
        /// Seconds until it expires (default: the server's, 15 minutes).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// A session's leases.
    List { session: String },
    /// Extend a live lease (never past its cap).
    Renew {
        session: String,
        lease: String,
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Revoke a lease.
    Revoke { session: String, lease: String },
}

#[derive(Debug, Clone, Subcommand)]
pub enum EgressCommand {
    /// Show the egress policy in force for the tenant (as JSON).
    Policy,
    /// Store a new version of the tenant's egress policy from a JSON file (`-`: stdin).
    SetPolicy { file: PathBuf },
    /// The gateway's decisions, oldest first.
    Decisions {
        #[arg(long)]
        session: Option<String>,
        /// Only this reason code, e.g. EGRESS_NON_PUBLIC_ADDRESS.
        #[arg(long)]
        reason: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only decisions after this sequence number.
        #[arg(long)]
        after: Option<i64>,
    },
}

fn usage(message: String) -> Failure {
    Failure {
        code: exit::USAGE,
        message,
    }
}

pub async fn run_secret(args: ClientArgs<SecretCommand>) -> ExitCode {
    finish(secret(args).await)
}

async fn secret(args: ClientArgs<SecretCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    let none = None::<&()>;
    match args.command().clone() {
        SecretCommand::Create {
            name,
            service_class,
            header,
            format,
        } => {
            let mut value = String::new();
            std::io::stdin()
                .read_to_string(&mut value)
                .map_err(|e| usage(format!("cannot read the secret's value from stdin: {e}")))?;
            let value = value.strip_suffix('\n').unwrap_or(&value).to_owned();
            let body = CreateSecretRequest {
                name,
                service_class,
                header,
                format,
                value,
            };
            let value = client
                .call(Method::POST, "/v1/secrets", &[], Some(&body), None)
                .await?;
            client.show(value, |s: SecretBody| secret_rows(vec![s]))
        }
        SecretCommand::List => {
            let value = client
                .call(Method::GET, "/v1/secrets", &[], none, None)
                .await?;
            client.show(value, |list: SecretList| secret_rows(list.items))
        }
        SecretCommand::Delete { id } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/secrets/{id}"),
                    &[],
                    none,
                    None,
                )
                .await?;
            Ok(())
        }
    }
}

pub async fn run_lease(args: ClientArgs<LeaseCommand>) -> ExitCode {
    finish(lease(args).await)
}

async fn lease(args: ClientArgs<LeaseCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    let none = None::<&()>;
    match args.command().clone() {
        LeaseCommand::Create {
            session,
            secret,
            ttl,
        } => {
            let body = CreateLeaseRequest {
                secret,
                ttl_seconds: ttl,
            };
            let path = format!("/v1/sessions/{session}/leases");
            let value = client
                .call(Method::POST, &path, &[], Some(&body), None)
                .await?;
            client.show(value, |l: LeaseBody| lease_rows(vec![l]))
        }
        LeaseCommand::List { session } => {
            let path = format!("/v1/sessions/{session}/leases");
            let value = client.call(Method::GET, &path, &[], none, None).await?;
            client.show(value, |list: LeaseList| lease_rows(list.items))
        }
        LeaseCommand::Renew {
            session,
            lease,
            ttl,
        } => {
            let body = RenewLeaseRequest { ttl_seconds: ttl };
            let path = format!("/v1/sessions/{session}/leases/{lease}/renew");
            let value = client
                .call(Method::POST, &path, &[], Some(&body), None)
                .await?;
            client.show(value, |l: LeaseBody| lease_rows(vec![l]))
        }
        LeaseCommand::Revoke { session, lease } => {
            let path = format!("/v1/sessions/{session}/leases/{lease}");
            let value = client.call(Method::DELETE, &path, &[], none, None).await?;
            client.show(value, |l: LeaseBody| lease_rows(vec![l]))
        }
    }
}

pub async fn run_egress(args: ClientArgs<EgressCommand>) -> ExitCode {
    finish(egress(args).await)
}

async fn egress(args: ClientArgs<EgressCommand>) -> Outcome<()> {
    let client = Client::new(&args)?;
    let none = None::<&()>;
    match args.command().clone() {
        EgressCommand::Policy => {
            let value = client
                .call(Method::GET, "/v1/egress/policy", &[], none, None)
                .await?;
            client.show(value, policy_text)
        }
        EgressCommand::SetPolicy { file } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| usage(format!("cannot read the policy from stdin: {e}")))?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?
            };
            let document: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| usage(format!("the policy is not JSON: {e}")))?;
            let value = client
                .call(Method::PUT, "/v1/egress/policy", &[], Some(&document), None)
                .await?;
            client.show(value, policy_text)
        }
        EgressCommand::Decisions {
            session,
            reason,
            limit,
            after,
        } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(session) = session {
                query.push(("session", session));
            }
            if let Some(reason) = reason {
                query.push(("reason", reason));
            }
            if let Some(after) = after {
                query.push(("after", after.to_string()));
            }
            let value = client
                .call(Method::GET, "/v1/egress/decisions", &query, none, None)
                .await?;
            client.show(value, |list: EgressDecisionList| {
                decision_rows(list.decisions)
            })
        }
    }
}

fn policy_text(body: EgressPolicyBody<serde_json::Value>) -> String {
    let document = serde_json::to_string_pretty(&body.policy).unwrap_or_default();
    format!("version {} ({})\n{document}\n", body.version, body.source)
}

fn secret_rows(secrets: Vec<SecretBody>) -> String {
    let rows = secrets
        .into_iter()
        .map(|s| {
            vec![
                s.id,
                s.name,
                s.service_class,
                s.header,
                s.created_at.to_string(),
            ]
        })
        .collect();
    table(&["ID", "NAME", "CLASS", "HEADER", "CREATED"], rows)
}

fn lease_rows(leases: Vec<LeaseBody>) -> String {
    let rows = leases
        .into_iter()
        .map(|l| {
            let state = match (&l.revoked_at, l.live) {
                (Some(at), _) => format!("revoked {at}"),
                (None, true) => "live".to_owned(),
                (None, false) => "expired".to_owned(),
            };
            vec![l.id, l.secret_name, l.expires_at.to_string(), state]
        })
        .collect();
    table(&["ID", "SECRET", "EXPIRES", "STATE"], rows)
}

fn decision_rows(decisions: Vec<EgressDecisionBody>) -> String {
    let rows = decisions
        .into_iter()
        .map(|d| {
            vec![
                d.seq.to_string(),
                d.at.to_string(),
                d.kind,
                format!("{}:{}", d.host, d.port),
                d.method.unwrap_or_default(),
                d.path.unwrap_or_default(),
                d.reason,
                d.mode,
            ]
        })
        .collect();
    table(
        &[
            "SEQ",
            "AT",
            "KIND",
            "DESTINATION",
            "METHOD",
            "PATH",
            "REASON",
            "MODE",
        ],
        rows,
    )
}
