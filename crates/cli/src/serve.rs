//! `cordon serve`: opens the store (SQLite under the data dir, or PostgreSQL), creates
//! the bootstrap tenant and system admin key on first start, and serves the API until
//! SIGINT or SIGTERM.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cordon_api::{ApiOptions, AppState, BootstrapOutcome};
use cordon_control::{Control, ControlOptions};
use cordon_policy::PolicyEngine;
use cordon_sandbox::{ClassesFile, SandboxConfig, SandboxManager};
use cordon_store::Store;
use cordon_store_postgres::{PostgresOptions, PostgresStore};
use cordon_store_sqlite::{SqliteOptions, SqliteStore};
use tokio::net::TcpListener;

use crate::artifacts::{ArtifactSettings, BlobLocation};
use crate::exit;
use cordon_artifacts::S3Config;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CORDON_LISTEN", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Directory for the embedded database, the node id and the bootstrap token.
    #[arg(long, env = "CORDON_DATA_DIR", default_value = "./.cordon")]
    data_dir: PathBuf,
    /// Use PostgreSQL instead of the embedded SQLite file, e.g. postgres://user@host/db.
    #[arg(long, env = "CORDON_DATABASE_URL")]
    database_url: Option<String>,
    /// Log lines as human text or one JSON object per line (to stderr).
    #[arg(long, env = "CORDON_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Sandboxes for sessions: `auto` runs them when this host can (root, cgroups),
    /// `on` refuses to start without them, `off` runs sessions without sandboxes.
    #[arg(long, env = "CORDON_SANDBOX", value_enum, default_value = "auto")]
    sandbox: SandboxMode,
    /// JSON file with the workload classes' limits: {"classes": {"default": {...}}}.
    #[arg(long, env = "CORDON_SANDBOX_CLASSES")]
    sandbox_classes: Option<PathBuf>,
    /// Directory the sandboxes' read-only /usr, /bin, /lib* and certificates come from.
    #[arg(long, env = "CORDON_SANDBOX_ROOT", default_value = "/")]
    sandbox_root: PathBuf,
    /// Host-wide directory of sandbox uid claims, shared by every server on the host.
    #[arg(
        long,
        env = "CORDON_SANDBOX_UID_DIR",
        default_value = "/run/cordon/uids"
    )]
    sandbox_uid_dir: PathBuf,
    /// The cgroup under which every sandbox gets a group of its own.
    #[arg(long, env = "CORDON_SANDBOX_CGROUP", default_value = "cordon")]
    sandbox_cgroup_parent: String,
    /// Sandboxes of the default class kept started and unclaimed, so that activating a
    /// session takes one instead of launching one (0: none).
    #[arg(long, env = "CORDON_SANDBOX_SPARES", default_value_t = 2)]
    sandbox_spares: usize,
    /// The egress gateway, sandboxes' only way out: `on` gives every sandbox the
    /// gateway (default deny until a policy allows), `off` leaves sandboxes with no
    /// network at all.
    #[arg(long, env = "CORDON_EGRESS", value_enum, default_value = "on")]
    egress: EgressMode,
    /// JSON egress policy for tenants that have not stored one through the API.
    #[arg(long, env = "CORDON_EGRESS_POLICY")]
    egress_policy: Option<PathBuf>,
    /// PEM file of extra roots trusted for upstream TLS, besides the Mozilla roots.
    #[arg(long, env = "CORDON_EGRESS_UPSTREAM_CA")]
    egress_upstream_ca: Option<PathBuf>,
    /// Fixed address for a host name, like curl's --resolve: `HOST=IP` (repeatable).
    #[arg(long = "egress-resolve", value_name = "HOST=IP")]
    egress_resolve: Vec<String>,
    /// The longest a credential lease may last, renewals included, in seconds.
    #[arg(long, env = "CORDON_LEASE_MAX_TTL", default_value_t = 3600)]
    lease_max_ttl: u64,
    /// Directory of the content-addressed blob store (default `<data-dir>/blobs`).
    #[arg(long, env = "CORDON_BLOB_DIR", conflicts_with = "s3_bucket")]
    blob_dir: Option<PathBuf>,
    /// Keep blobs in this bucket of an S3-compatible service instead of local files;
    /// credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "CORDON_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// The S3 endpoint, e.g. http://127.0.0.1:9000 (default: AWS for the region).
    #[arg(long, env = "CORDON_S3_ENDPOINT", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    /// The S3 region.
    #[arg(long, env = "CORDON_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Where a closed session's evidence bundle is written (default `<data-dir>/exports`).
    #[arg(long, env = "CORDON_EVIDENCE_EXPORT_DIR")]
    evidence_export_dir: Option<PathBuf>,
    /// The signing key's name, which also prefixes every evidence log's origin.
    #[arg(
        long,
        env = "CORDON_EVIDENCE_KEY_NAME",
        default_value = "cordon.local/evidence"
    )]
    evidence_key_name: String,
    /// JSON retention rules: {"rules": [{"workload_class", "working_state_days",
    /// "keep_last_versions", "evidence_days", "releases_days"}]}.
    #[arg(long, env = "CORDON_RETENTION")]
    retention: Option<PathBuf>,
    /// Seconds between retention sweeps (0: never).
    #[arg(long, env = "CORDON_RETENTION_INTERVAL", default_value_t = 3600)]
    retention_interval: u64,
    /// JSON telemetry settings: {"prices", "slos", "session_idle_timeout_seconds",
    /// "timeout_outcome", "meter_interval_seconds"} (docs/metrics.md).
    #[arg(long, env = "CORDON_TELEMETRY_CONFIG")]
    telemetry_config: Option<PathBuf>,
    /// Where each tenant's weekly report is written when a week ends (default
    /// `<data-dir>/reports`).
    #[arg(long, env = "CORDON_REPORT_DIR")]
    report_dir: Option<PathBuf>,
    /// Export traces over OTLP/HTTP (JSON) to this collector, e.g. http://127.0.0.1:4318
    /// (spans go to `/v1/traces`); also read from OTEL_EXPORTER_OTLP_ENDPOINT.
    #[arg(long, env = "CORDON_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// Telemetry: prices, objectives, metering, idle timeouts and the weekly export.
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    pub config: cordon_telemetry::TelemetryConfig,
    /// Default `<data-dir>/reports`.
    pub report_dir: Option<PathBuf>,
}

fn telemetry_settings(args: &ServeArgs) -> anyhow::Result<TelemetrySettings> {
    let config = match &args.telemetry_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            cordon_telemetry::TelemetryConfig::parse(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        None => cordon_telemetry::TelemetryConfig::default(),
    };
    Ok(TelemetrySettings {
        config,
        report_dir: args.report_dir.clone(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EgressMode {
    On,
    Off,
}

/// How a server runs the egress gateway.
#[derive(Debug, Clone)]
pub struct EgressSettings {
    pub mode: EgressMode,
    pub policy_file: Option<PathBuf>,
    pub upstream_ca: Option<PathBuf>,
    pub resolve: Vec<(String, std::net::IpAddr)>,
    pub lease_max_ttl: Duration,
}

impl Default for EgressSettings {
    fn default() -> Self {
        Self {
            mode: EgressMode::On,
            policy_file: None,
            upstream_ca: None,
            resolve: Vec::new(),
            lease_max_ttl: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    Auto,
    On,
    Off,
}

/// How a server runs sandboxes.
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    pub mode: SandboxMode,
    pub classes: Option<PathBuf>,
    pub system_root: PathBuf,
    pub uid_dir: PathBuf,
    pub cgroup_parent: String,
    pub spares: usize,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Auto,
            classes: None,
            system_root: PathBuf::from("/"),
            uid_dir: PathBuf::from("/run/cordon/uids"),
            cgroup_parent: "cordon".to_owned(),
            spares: 2,
        }
    }
}

/// Where a server keeps its state and how it is reached.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// The system admin token to bootstrap an empty store with; generated and written
    /// to `<data-dir>/bootstrap-admin.token` if absent.
    pub bootstrap_token: Option<String>,
    pub sandbox: SandboxSettings,
    pub egress: EgressSettings,
    pub artifacts: ArtifactSettings,
    pub telemetry: TelemetrySettings,
}

/// A server running in this process.
#[derive(Debug)]
pub struct RunningServer {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    pub control: Control,
    /// The concrete embedded store, when that is the backend (for the benchmark).
    pub sqlite: Option<SqliteStore>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    housekeeping: tokio::task::JoinHandle<()>,
    _lock: std::fs::File,
}

impl RunningServer {
    /// Stops accepting, finishes in-flight requests and returns.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(());
        self.housekeeping.abort();
        self.task
            .await
            .context("server task failed")?
            .context("server failed")
    }
}

pub const TOKEN_FILE: &str = "bootstrap-admin.token";
const LEASE_TTL: Duration = Duration::from_secs(30);

pub(crate) fn init_logging(format: LogFormat) {
    init_logging_with(format, None);
}

/// Logging to stderr per `RUST_LOG`, and, with `otlp_endpoint`, traces over OTLP (their
/// own filter: `RUST_LOG` quieting the log does not stop the traces).
pub(crate) fn init_logging_with(format: LogFormat, otlp_endpoint: Option<&str>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a terminal: a log file or journald would get raw escape codes.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> = match format {
        LogFormat::Text => fmt.with_filter(filter).boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
    };
    let otlp = otlp_endpoint.map(|endpoint| {
        let node = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "cordon".to_owned());
        crate::otlp::layer(endpoint, &node).with_filter(tracing_subscriber::filter::filter_fn(
            |m| m.is_span() && crate::otlp::EXPORTED.contains(&m.name()),
        ))
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otlp)
        .try_init();
}

pub async fn run(args: ServeArgs) -> ExitCode {
    let otlp = args
        .otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty());
    init_logging_with(args.log_format, otlp.as_deref());
    if let Some(endpoint) = &otlp {
        tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
    }
    let artifacts = match artifact_settings(&args) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!("{error:#}");
            return exit::code(exit::USAGE);
        }
    };
    let telemetry = match telemetry_settings(&args) {
        Ok(settings) => settings,
        Err(error) => {
            tracing::error!("{error:#}");
            return exit::code(exit::USAGE);
        }
    };
    let config = ServerConfig {
        telemetry,
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url,
        bootstrap_token: std::env::var("CORDON_BOOTSTRAP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        sandbox: SandboxSettings {
            mode: args.sandbox,
            classes: args.sandbox_classes,
            system_root: args.sandbox_root,
            uid_dir: args.sandbox_uid_dir,
            cgroup_parent: args.sandbox_cgroup_parent,
            spares: args.sandbox_spares,
        },
        egress: EgressSettings {
            mode: args.egress,
            policy_file: args.egress_policy,
            upstream_ca: args.egress_upstream_ca,
            resolve: match parse_resolve(&args.egress_resolve) {
                Ok(resolve) => resolve,
                Err(error) => {
                    tracing::error!("{error:#}");
                    return exit::code(exit::USAGE);
                }
            },
            lease_max_ttl: Duration::from_secs(args.lease_max_ttl.max(1)),
        },
        artifacts,
    };
    let server = match start(config).await {
        Ok(server) => server,
        Err(error) => {
            tracing::error!("cannot start: {error:#}");
            return exit::code(exit::INTERNAL);
        }
    };
    shutdown_signal().await;
    tracing::info!("shutting down");
    match server.stop().await {
        Ok(()) => exit::code(exit::OK),
        Err(error) => {
            tracing::error!("{error:#}");
            exit::code(exit::INTERNAL)
        }
    }
}

fn artifact_settings(args: &ServeArgs) -> anyhow::Result<ArtifactSettings> {
    let blobs = match (&args.s3_bucket, &args.blob_dir) {
        (Some(bucket), _) => {
            let variable = |name: &str| {
                std::env::var(name)
                    .with_context(|| format!("--s3-bucket needs {name} in the environment"))
            };
            BlobLocation::S3(S3Config {
                endpoint: args
                    .s3_endpoint
                    .clone()
                    .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", args.s3_region)),
                bucket: bucket.clone(),
                region: args.s3_region.clone(),
                access_key_id: variable("AWS_ACCESS_KEY_ID")?,
                secret_access_key: variable("AWS_SECRET_ACCESS_KEY")?,
                allow_http: args
                    .s3_endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://")),
            })
        }
        (None, Some(dir)) => BlobLocation::Dir(dir.clone()),
        (None, None) => BlobLocation::DataDir,
    };
    let retention = match &args.retention {
        Some(path) => crate::artifacts::load_retention(path)?,
        None => Vec::new(),
    };
    Ok(ArtifactSettings {
        blobs,
        export_dir: args.evidence_export_dir.clone(),
        key_name: args.evidence_key_name.clone(),
        retention,
        retention_every: (args.retention_interval > 0)
            .then(|| Duration::from_secs(args.retention_interval)),
    })
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        Err(_) => {
            let _ = interrupt.await;
        }
    }
}

/// Opens everything and starts serving in a background task.
pub async fn start(config: ServerConfig) -> anyhow::Result<RunningServer> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let lock = lock_data_dir(&config.data_dir)?;
    let (store, sqlite): (Arc<dyn Store>, _) = match &config.database_url {
        Some(url) => {
            let store = PostgresStore::connect(PostgresOptions::new(url.clone()))
                .await
                .context("cannot open the PostgreSQL store")?;
            (Arc::new(store), None)
        }
        None => {
            let path = config.data_dir.join("cordon.db");
            let store = SqliteStore::open(SqliteOptions::new(&path))
                .with_context(|| format!("cannot open the SQLite store at {}", path.display()))?;
            (Arc::new(store.clone()), Some(store))
        }
    };
    tracing::info!(backend = store.backend().as_str(), "store open");
    bootstrap(store.as_ref(), &config).await?;

    let policy = Arc::new(PolicyEngine::with_default_policies().context("default policies")?);
    let node_id = node_id(&config.data_dir)?;
    // Bound first: the gateway must know the control plane's address to refuse it.
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let egress = crate::egress::start(&store, &config, addr).await?;
    let ca_pem = egress.as_ref().map(|e| e.gateway.ca_cert_pem().to_owned());
    let sandboxes = sandbox_manager(&config, ca_pem).await?;
    let artifacts = crate::artifacts::start(&store, &config.data_dir, &config.artifacts).await?;
    if let Some(egress) = &egress {
        egress.env.set_evidence(artifacts.evidence.clone());
    }
    let control = Control::with_runtimes(
        Arc::clone(&store),
        ControlOptions {
            node_id: node_id.clone(),
            lease_ttl: LEASE_TTL,
        },
        sandboxes,
        egress,
    )
    .with_artifacts(artifacts)
    .with_telemetry(config.telemetry.config.clone());
    if let Some(egress) = control.egress() {
        egress.env.set_telemetry(control.telemetry().clone());
    }
    let removed = control.reconcile_sandboxes().await;
    if removed > 0 {
        tracing::info!(
            removed,
            "removed sandboxes of sessions closed while this node was away"
        );
    }
    let attached = control.attach_egress_all().await;
    if attached > 0 {
        tracing::info!(attached, "egress reattached to running sandboxes");
    }
    let api_options = ApiOptions {
        lease_max_ttl: config.egress.lease_max_ttl,
        lease_default_ttl: ApiOptions::default()
            .lease_default_ttl
            .min(config.egress.lease_max_ttl),
        ..ApiOptions::default()
    };
    let state = AppState::new(control.clone(), policy, api_options);
    let runner = cordon_control::ControlRunner::new(control.clone(), state.step_authorizer());
    let engine = cordon_workflow::Engine::new(
        Arc::clone(&store),
        Arc::new(runner),
        cordon_workflow::EngineOptions::new(node_id.clone()),
    );
    state.set_engine(engine.clone());
    let router = cordon_api::router(state);
    let (shutdown, shutdown_requested) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown_requested.await;
            })
            .await
    });
    let telemetry_chores = crate::report::chores(
        control.clone(),
        config
            .telemetry
            .report_dir
            .clone()
            .unwrap_or_else(|| config.data_dir.join("reports")),
    );
    // One task for the periodic chores, so stopping the server stops them all.
    let purge = purge_idempotency_records(Arc::clone(&store));
    let sweep_control = control.clone();
    let sweep_every = config.artifacts.retention_every;
    let housekeeping = tokio::spawn(async move {
        let sweep = async move {
            match sweep_every {
                Some(every) => crate::artifacts::sweep_forever(sweep_control, every).await,
                None => std::future::pending().await,
            }
        };
        let workflows = async move {
            engine.run().await;
        };
        tokio::join!(purge, sweep, workflows, telemetry_chores);
    });
    tracing::info!(%node_id, "listening on http://{addr}");
    Ok(RunningServer {
        addr,
        store,
        control,
        sqlite,
        shutdown,
        task,
        housekeeping,
        _lock: lock,
    })
}

/// Starts the sandbox runtime per the settings and reattaches to the sandboxes a
/// previous run left behind.
async fn sandbox_manager(
    config: &ServerConfig,
    egress_ca_pem: Option<String>,
) -> anyhow::Result<Option<SandboxManager>> {
    let settings = &config.sandbox;
    if settings.mode == SandboxMode::Off {
        tracing::info!("sandboxes are off: sessions run without them");
        return Ok(None);
    }
    let cordon = std::env::current_exe().context("cannot find the cordon executable")?;
    // The small launcher next to this binary if installed, else this binary itself.
    let small = cordon.with_file_name("cordon-sandbox");
    let launcher = if small.is_file() { small } else { cordon };
    let mut sandbox_config = SandboxConfig::under(&config.data_dir, launcher);
    sandbox_config.system_root = settings.system_root.clone();
    sandbox_config.uid_dir = settings.uid_dir.clone();
    sandbox_config.cgroup_parent = settings.cgroup_parent.clone();
    sandbox_config.spare_sandboxes = settings.spares;
    sandbox_config.egress = egress_ca_pem.map(|ca_pem| cordon_sandbox::EgressSetup { ca_pem });
    if let Some(path) = &settings.classes {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: ClassesFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("bad workload classes in {}", path.display()))?;
        sandbox_config.classes = file.classes;
    }
    let manager = match SandboxManager::new(sandbox_config) {
        Ok(manager) => manager,
        Err(error) if settings.mode == SandboxMode::Auto => {
            tracing::warn!(%error, "sandboxes are off: this host cannot run them (use --sandbox on to make this fatal)");
            return Ok(None);
        }
        Err(error) => return Err(error).context("cannot run sandboxes"),
    };
    let recovery = manager.recover().await;
    tracing::info!(
        cgroups = ?manager.cgroup_version(),
        reattached = recovery.reattached.len(),
        lost = recovery.lost.len(),
        "sandboxes on"
    );
    for id in &recovery.lost {
        tracing::warn!(sandbox = %id, "sandbox lost: its init was gone; cleaned up");
    }
    Ok(Some(manager))
}

/// Parses `--egress-resolve HOST=IP` values.
fn parse_resolve(values: &[String]) -> anyhow::Result<Vec<(String, std::net::IpAddr)>> {
    values
        .iter()
        .map(|value| {
            let (host, ip) = value
                .split_once('=')
                .with_context(|| format!("--egress-resolve `{value}`: expected HOST=IP"))?;
            let ip = ip.parse().with_context(|| {
                format!("--egress-resolve `{value}`: `{ip}` is not an IP address")
            })?;
            Ok((host.to_ascii_lowercase(), ip))
        })
        .collect()
}

/// How long an idempotency key is remembered.
const IDEMPOTENCY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// How often expired idempotency records are looked for.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10 * 60);
/// Records deleted per statement, so a backlog never holds the writer long.
const PURGE_CHUNK: u32 = 5_000;

/// Deletes idempotency records past their retention, every few minutes, in chunks.
/// Every node may run it; deleting an already deleted record is a no-op.
async fn purge_idempotency_records(store: Arc<dyn Store>) {
    let mut ticks = tokio::time::interval(HOUSEKEEPING_EVERY);
    loop {
        ticks.tick().await;
        let cutoff = cordon_core::Timestamp::now()
            .saturating_add_micros(-cordon_store::duration_micros(IDEMPOTENCY_RETENTION));
        let mut purged = 0;
        loop {
            match store.purge_idempotency(cutoff, PURGE_CHUNK).await {
                Ok(deleted) => {
                    purged += deleted;
                    if deleted < u64::from(PURGE_CHUNK) {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "purging expired idempotency records failed");
                    break;
                }
            }
        }
        if purged > 0 {
            tracing::info!(purged, "expired idempotency records purged");
        }
    }
}

/// One server per data dir: a second one would share the node id and its leases.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            bail!(
                "another cordon server is using the data dir {}",
                data_dir.display()
            )
        }
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// This node's stable name, kept in the data dir so a restarted node keeps its leases.
fn node_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let existing = existing.trim();
        if !existing.is_empty() {
            return Ok(existing.to_owned());
        }
    }
    let id = format!("node_{}", uuid::Uuid::now_v7().simple());
    write_durably(&path, id.as_bytes(), 0o644)?;
    Ok(id)
}

/// Creates `path` with `mode`, writes `contents`, and fsyncs the file and its directory.
fn write_durably(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// On an empty store: creates tenant `default` and the system admin key. The token
/// comes from CORDON_BOOTSTRAP_TOKEN or is generated and written (mode 0600) before the
/// store commits, so a crash in between never leaves a key whose token is lost.
async fn bootstrap(store: &dyn Store, config: &ServerConfig) -> anyhow::Result<()> {
    if !cordon_api::needs_bootstrap(store).await? {
        if config.bootstrap_token.is_some() {
            tracing::warn!("CORDON_BOOTSTRAP_TOKEN is ignored: the store is already initialized");
        }
        return Ok(());
    }
    let token_path = config.data_dir.join(TOKEN_FILE);
    let (token, written) = match &config.bootstrap_token {
        Some(token) => (token.clone(), false),
        None => {
            let token = cordon_api::generate_token();
            if token_path.exists() {
                std::fs::remove_file(&token_path)
                    .with_context(|| format!("cannot replace stale {}", token_path.display()))?;
            }
            write_durably(&token_path, format!("{token}\n").as_bytes(), 0o600)?;
            (token, true)
        }
    };
    match cordon_api::bootstrap(store, &token).await? {
        BootstrapOutcome::Created { key_id } => {
            if written {
                tracing::info!(key = %key_id, path = %token_path.display(),
                    "created tenant `default` and the system admin key; its token is in the file");
            } else {
                tracing::info!(key = %key_id,
                    "created tenant `default` and the system admin key from CORDON_BOOTSTRAP_TOKEN");
            }
        }
        BootstrapOutcome::AlreadyInitialized => {
            // Another node won the race; our token was never stored.
            if written {
                let _ = std::fs::remove_file(&token_path);
            }
        }
    }
    Ok(())
}
