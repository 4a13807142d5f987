//! The gateway: serves each session's listeners (forward proxy, transparent ports 80 and
//! 443, DNS), decides every request by the session's policy, refuses non-public
//! addresses, injects leased credentials, and records every decision.
//!
//! The session is known from the listener that accepted the connection, never from
//! anything the sandbox sends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cordon_core::{EgressDecision, ReasonCode, SessionId, TenantId, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::addr::{classify, parse_ip_literal};
use crate::http::{self, BoxIo, Framing, Header, HttpError, RequestHead};
use crate::policy::{Destination, EgressPolicy, Mode, Scheme, ServiceClass, Subject, Verdict};
use crate::sni::{self, ClientHelloError};
use crate::tls::EgressCa;

/// The port of the forward proxy inside a sandbox (127.0.0.1).
pub const PROXY_PORT: u16 = 3128;
/// Header naming the reason code of every answer the gateway itself gives.
pub const REASON_HEADER: &str = "x-cordon-reason";
/// Connections one session may have open through the gateway at once.
pub const MAX_CONNECTIONS_PER_SESSION: usize = 512;
/// Buffer per direction of a blind tunnel.
const TUNNEL_BUFFER: usize = 256 << 10;
/// Decisions written per transaction, at most.
const RECORD_BATCH: usize = 4096;
/// TTL of the in-sandbox resolver's answers.
const DNS_TTL: u32 = 5;

/// Who a connection belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub tenant_id: TenantId,
    pub session_id: SessionId,
}

/// A policy document with the version decisions record.
#[derive(Debug, Clone, Default)]
pub struct PolicySnapshot {
    pub policy: EgressPolicy,
    /// `tenant/<n>` for a stored version, `file/<digest>` for the policy file, `none`.
    pub version: String,
}

/// A credential the session holds (or held) for a service class.
#[derive(Clone)]
pub struct Credential {
    pub secret_name: String,
    pub service_class: String,
    /// Lower case.
    pub header_name: String,
    /// The rendered header value; `None` when the lease is revoked.
    pub header_value: Option<String>,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("secret_name", &self.secret_name)
            .field("service_class", &self.service_class)
            .field("header_name", &self.header_name)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Credential {
    fn live_value(&self, now: Timestamp) -> Option<&str> {
        self.header_value
            .as_deref()
            .filter(|_| now < self.expires_at)
    }
}

/// What the gateway needs to know about a session for one decision.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub active: bool,
    pub environment: String,
    pub workload_class: String,
    pub policy: Arc<PolicySnapshot>,
    pub credentials: Vec<Credential>,
}

impl SessionView {
    fn subject(&self) -> Subject<'_> {
        Subject {
            environment: &self.environment,
            workload_class: &self.workload_class,
        }
    }
}

/// The gateway's window on the rest of the server: session state (phase, policy,
/// leases) and the decision log. Implemented by `control` over the store.
#[async_trait]
pub trait EgressEnv: Send + Sync + std::fmt::Debug + 'static {
    async fn session_view(&self, key: &SessionKey) -> Result<Arc<SessionView>, String>;
    /// Stores decisions durably.
    async fn record(&self, decisions: Vec<EgressDecision>) -> Result<(), String>;
}

/// Deployment settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Extra roots (PEM) trusted for upstream TLS besides the Mozilla roots.
    pub upstream_roots_pem: Option<String>,
    /// Fixed answers for host names (like curl's `--resolve`), checked before DNS.
    pub resolve: HashMap<String, Vec<IpAddr>>,
    /// Addresses of the control plane itself: never dialled, whatever the policy says.
    pub protected: Vec<SocketAddr>,
    pub connect_timeout: Duration,
    /// How long a connection may sit idle between messages, or a head may take.
    pub idle_timeout: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            upstream_roots_pem: None,
            resolve: HashMap::new(),
            protected: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// The listening sockets of one session, created inside its sandbox's network
/// namespace. Any may be absent (tests and the benchmark use only a proxy).
#[derive(Debug, Default)]
pub struct SessionListeners {
    pub proxy: Option<std::net::TcpListener>,
    pub http: Option<std::net::TcpListener>,
    pub https: Option<std::net::TcpListener>,
    pub dns: Option<std::net::UdpSocket>,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// The egress gateway. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    env: Arc<dyn EgressEnv>,
    config: GatewayConfig,
    ca: Arc<EgressCa>,
    upstream_tls: tokio_rustls::TlsConnector,
    recorder: mpsc::Sender<Recorded>,
    denials: broadcast::Sender<EgressDecision>,
    sessions: Mutex<HashMap<SessionId, Attached>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").finish_non_exhaustive()
    }
}

struct Attached {
    tasks: Vec<JoinHandle<()>>,
    closed: watch::Sender<bool>,
}

type Recorded = (EgressDecision, Option<oneshot::Sender<()>>);

impl Gateway {
    /// Starts the gateway's decision recorder. Must run inside a tokio runtime.
    pub fn new(
        env: Arc<dyn EgressEnv>,
        config: GatewayConfig,
        ca: Arc<EgressCa>,
    ) -> Result<Self, GatewayError> {
        let client = crate::tls::upstream_client_config(config.upstream_roots_pem.as_deref())?;
        let (recorder, queue) = mpsc::channel(65_536);
        tokio::spawn(record_loop(Arc::clone(&env), queue));
        let (denials, _) = broadcast::channel(1024);
        Ok(Self {
            inner: Arc::new(Inner {
                env,
                config,
                ca,
                upstream_tls: tokio_rustls::TlsConnector::from(client),
                recorder,
                denials,
                sessions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The CA certificate (PEM) sandboxes must trust for intercepted destinations.
    pub fn ca_cert_pem(&self) -> &str {
        self.inner.ca.cert_pem()
    }

    /// Every denial, as it is recorded: the dead-letter feed for workflows.
    pub fn subscribe_denials(&self) -> broadcast::Receiver<EgressDecision> {
        self.inner.denials.subscribe()
    }

    /// Serves a session's listeners until [`Gateway::detach`]; replaces an earlier
    /// attachment of the same session.
    pub fn attach(&self, key: SessionKey, listeners: SessionListeners) -> Result<(), GatewayError> {
        let (closed, closed_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let entries = [
            (listeners.proxy, Entry::Proxy),
            (listeners.http, Entry::TransparentHttp),
            (listeners.https, Entry::TransparentTls),
        ];
        let open = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS_PER_SESSION));
        for (listener, entry) in entries {
            if let Some(listener) = listener {
                listener.set_nonblocking(true)?;
                let listener = TcpListener::from_std(listener)?;
                let gateway = self.clone();
                let closed = closed_rx.clone();
                let open = Arc::clone(&open);
                tasks.push(tokio::spawn(async move {
                    gateway
                        .accept_loop(key, listener, entry, closed, open)
                        .await;
                }));
            }
        }
        if let Some(dns) = listeners.dns {
            dns.set_nonblocking(true)?;
            let socket = UdpSocket::from_std(dns)?;
            tasks.push(tokio::spawn(dns_loop(socket)));
        }
        let previous = self
            .lock_sessions()
            .insert(key.session_id, Attached { tasks, closed });
        if let Some(previous) = previous {
            previous.stop();
        }
        Ok(())
    }

    /// Stops serving a session and cuts its open connections.
    pub fn detach(&self, session_id: SessionId) {
        if let Some(attached) = self.lock_sessions().remove(&session_id) {
            attached.stop();
        }
    }

    pub fn is_attached(&self, session_id: SessionId) -> bool {
        self.lock_sessions().contains_key(&session_id)
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Attached>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn accept_loop(
        &self,
        key: SessionKey,
        listener: TcpListener,
        entry: Entry,
        closed: watch::Receiver<bool>,
        open: Arc<tokio::sync::Semaphore>,
    ) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(session = %key.session_id, error = %e, "egress accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // A sandbox cannot make the server hold unbounded sockets for it.
            let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                tracing::warn!(session = %key.session_id, limit = MAX_CONNECTIONS_PER_SESSION, "egress: connection limit reached; connection dropped");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let gateway = self.clone();
            let mut closed = closed.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = gateway.serve_connection(key, Box::new(stream), entry) => {}
                    _ = closed.wait_for(|c| *c) => {}
                }
                drop(permit);
            });
        }
    }

    /// Serves one connection that arrived on `entry` for `key`.
    pub async fn serve_connection(&self, key: SessionKey, stream: BoxIo, entry: Entry) {
        let conn = Conn {
            gateway: &self.inner,
            key,
        };
        let client = BufReader::with_capacity(16 << 10, stream);
        match entry {
            Entry::Proxy => conn.serve_http(client, Target::Proxy).await,
            Entry::TransparentHttp => conn.serve_http(client, Target::Transparent).await,
            Entry::TransparentTls => conn.serve_transparent_tls(client).await,
        }
    }
}

impl Attached {
    fn stop(self) {
        let _ = self.closed.send(true);
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Where a connection came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The forward proxy (`HTTP_PROXY`): absolute-form requests and CONNECT.
    Proxy,
    /// Port 80 of the sandbox's loopback: origin-form requests, destination from `Host`.
    TransparentHttp,
    /// Port 443 of the sandbox's loopback: TLS, destination from the SNI.
    TransparentTls,
}

/// How requests on an HTTP conversation name their destination.
#[derive(Debug, Clone)]
enum Target {
    /// Absolute-form (`GET http://host/path`), or CONNECT.
    Proxy,
    /// Origin-form with `Host`, plain HTTP on port 80.
    Transparent,
    /// Origin-form inside an intercepted TLS tunnel to `host:port`.
    Intercepted { host: String, port: u16 },
}

/// A decision being made: filled in as the request is understood, recorded once.
struct Pending {
    key: SessionKey,
    started: Instant,
    at: Timestamp,
    kind: &'static str,
    host: String,
    port: u16,
    address: Option<String>,
    method: Option<String>,
    path: Option<String>,
    mode: Mode,
    /// For a report-mode pass: the reason the request would have been refused.
    would_deny: Option<ReasonCode>,
    service_class: Option<String>,
    rule: Option<String>,
    policy_version: String,
    credential: Option<String>,
}

impl Pending {
    fn new(key: SessionKey, kind: &'static str) -> Self {
        Self {
            key,
            started: Instant::now(),
            at: Timestamp::now(),
            kind,
            host: String::new(),
            port: 0,
            address: None,
            method: None,
            path: None,
            mode: Mode::Enforce,
            would_deny: None,
            service_class: None,
            rule: None,
            policy_version: "none".into(),
            credential: None,
        }
    }

    fn finish(
        self,
        reason: ReasonCode,
        status: Option<u16>,
        sent: u64,
        received: u64,
    ) -> EgressDecision {
        // `report` only for a request a report-mode rule forwarded, recorded with the
        // reason it would have been refused; every refusal is enforced.
        let mode = if self.mode == Mode::Report && self.would_deny == Some(reason) {
            Mode::Report
        } else {
            Mode::Enforce
        };
        EgressDecision {
            seq: 0,
            tenant_id: self.key.tenant_id,
            session_id: self.key.session_id,
            at: self.at,
            kind: self.kind.to_owned(),
            host: self.host,
            port: self.port,
            address: self.address,
            method: self.method,
            path: self.path,
            reason,
            mode: mode.as_str().to_owned(),
            service_class: self.service_class,
            rule: self.rule,
            policy_version: self.policy_version,
            credential: self.credential,
            status,
            bytes_sent: sent,
            bytes_received: received,
            duration_micros: i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX),
        }
    }
}

/// A refusal: its code and a message for the client.
#[derive(Debug)]
struct Denial {
    reason: ReasonCode,
    message: String,
}

fn deny(reason: ReasonCode, message: impl Into<String>) -> Denial {
    Denial {
        reason,
        message: message.into(),
    }
}

/// What an allowed destination resolved to, and what to do there.
struct Plan {
    /// The address to dial; `None` when the caller reuses a connection (its address was
    /// checked when it was made).
    address: Option<SocketAddr>,
    /// The credential header to set, if a live lease covers the destination.
    inject: Option<(String, String, String)>,
    /// Whether a tunnel must be intercepted (credentials or method rules apply).
    intercept: bool,
}

/// An upstream connection kept for the next request of the same conversation.
struct Upstream {
    host: String,
    port: u16,
    address: SocketAddr,
    io: BufReader<BoxIo>,
}

struct Conn<'g> {
    gateway: &'g Inner,
    key: SessionKey,
}

impl Conn<'_> {
    async fn view(&self) -> Result<Arc<SessionView>, Denial> {
        let view = self
            .gateway
            .env
            .session_view(&self.key)
            .await
            .map_err(|e| {
                deny(
                    ReasonCode::EgressSessionNotActive,
                    format!("session state unavailable: {e}"),
                )
            })?;
        if !view.active {
            return Err(deny(
                ReasonCode::EgressSessionNotActive,
                "the session is not active: nothing it sends may leave",
            ));
        }
        Ok(view)
    }

    /// Records a decision; a denial is durable before the caller answers the client.
    async fn record(&self, decision: EgressDecision) {
        let reason = decision.reason.as_str();
        // A span of the decision, under whatever runs the request (a workflow step's
        // http call), from the decision's instant.
        drop(tracing::info_span!(
            "egress.decision",
            otel.start_unix_nanos = decision.at.unix_nanos(),
            otel.error = decision.reason != ReasonCode::EgressAllowed,
            session = %decision.session_id,
            host = %decision.host,
            port = decision.port,
            reason,
            mode = %decision.mode,
            status = decision.status.unwrap_or(0),
            bytes_sent = decision.bytes_sent,
            bytes_received = decision.bytes_received,
        ));
        metrics::counter!("cordon_egress_decisions_total", "reason" => reason, "mode" => decision.mode.clone())
            .increment(1);
        metrics::counter!("cordon_egress_bytes_total", "direction" => "sent")
            .increment(decision.bytes_sent);
        metrics::counter!("cordon_egress_bytes_total", "direction" => "received")
            .increment(decision.bytes_received);
        let denied = decision.reason != ReasonCode::EgressAllowed && decision.mode == "enforce";
        if denied {
            metrics::counter!("cordon_egress_denials_total", "reason" => reason).increment(1);
            let _ = self.gateway.denials.send(decision.clone());
            let (ack, acked) = oneshot::channel();
            if self
                .gateway
                .recorder
                .send((decision, Some(ack)))
                .await
                .is_ok()
            {
                let _ = acked.await;
            }
        } else {
            let _ = self.gateway.recorder.send((decision, None)).await;
        }
    }

    /// Decides a destination for `view`: policy, credentials, and (with `resolve`) the
    /// address to dial. `pending` gets what was learnt either way.
    async fn plan(
        &self,
        view: &SessionView,
        destination: Destination<'_>,
        pending: &mut Pending,
        resolve: bool,
    ) -> Result<Plan, Denial> {
        pending.policy_version.clone_from(&view.policy.version);
        let policy = &view.policy.policy;
        let literal = parse_ip_literal(destination.host);
        // Non-public ranges a class opens belong to its hosts, whatever else it says.
        let host_classes = policy.classes_for_host(view.subject(), destination.host);
        if let Some(ip) = literal {
            // An address written in any encoding is checked as the address it is.
            pending.address = Some(ip.to_string());
            self.check_address(ip, destination.port, &host_classes)?;
        }
        match policy.decide(view.subject(), destination) {
            Verdict::Allow {
                rule,
                service_class,
            } => {
                pending.rule = Some(rule);
                pending.service_class = Some(service_class);
            }
            Verdict::Report { rule, reason } => {
                pending.rule = Some(rule);
                // Forwarded without credentials; recorded with the refusal's reason.
                pending.mode = Mode::Report;
                pending.would_deny = Some(reason);
            }
            Verdict::Deny { reason } => {
                return Err(deny(reason, denial_message(reason, destination)));
            }
        }
        let classes: Vec<&ServiceClass> = policy.classes_for(view.subject(), destination).collect();
        let inject = credential_for(view, &classes);
        let held = view
            .credentials
            .iter()
            .any(|c| classes.iter().any(|class| class.name == c.service_class));
        if held && inject.is_none() && destination.method.is_some() {
            return Err(deny(
                ReasonCode::EgressCredentialLeaseExpired,
                format!(
                    "the session's credential lease for `{}` has expired or was revoked",
                    destination.host
                ),
            ));
        }
        let address = if resolve {
            let address = match literal {
                Some(ip) => SocketAddr::new(ip, destination.port),
                None => {
                    self.resolve(destination.host, destination.port, &host_classes, pending)
                        .await?
                }
            };
            pending.address = Some(address.ip().to_string());
            Some(address)
        } else {
            None
        };
        Ok(Plan {
            address,
            intercept: held || classes.iter().any(|c| c.restricts_methods()),
            inject,
        })
    }

    fn check_address(
        &self,
        ip: IpAddr,
        port: u16,
        classes: &[&ServiceClass],
    ) -> Result<(), Denial> {
        let target = SocketAddr::new(ip, port);
        let protected = self
            .gateway
            .config
            .protected
            .iter()
            .any(|p| p.port() == port && (p.ip() == ip || p.ip().is_unspecified()));
        if protected {
            return Err(deny(
                ReasonCode::EgressNonPublicAddress,
                format!("{target} is the control plane itself"),
            ));
        }
        let class = classify(ip);
        if !class.is_public() && !classes.iter().any(|c| c.allows_address(ip)) {
            return Err(deny(
                ReasonCode::EgressNonPublicAddress,
                format!("{ip} is a non-public address ({})", class.as_str()),
            ));
        }
        Ok(())
    }

    /// Resolves once and returns the first address that passes the address check: the
    /// address dialled is the address checked.
    async fn resolve(
        &self,
        host: &str,
        port: u16,
        classes: &[&ServiceClass],
        pending: &mut Pending,
    ) -> Result<SocketAddr, Denial> {
        let addresses: Vec<IpAddr> = match self.gateway.config.resolve.get(host) {
            Some(fixed) => fixed.clone(),
            // Bounded like a connect: a resolver that never answers must not hold the
            // request (or a blocking thread's worth of it) forever.
            None => match tokio::time::timeout(
                self.gateway.config.connect_timeout,
                tokio::net::lookup_host((host, port)),
            )
            .await
            {
                Ok(Ok(found)) => found.map(|a| a.ip()).collect(),
                Ok(Err(e)) => {
                    return Err(deny(
                        ReasonCode::EgressDnsFailed,
                        format!("{host} does not resolve: {e}"),
                    ));
                }
                Err(_) => {
                    return Err(deny(
                        ReasonCode::EgressDnsFailed,
                        format!("{host}: no answer from the resolver in time"),
                    ));
                }
            },
        };
        let mut refusal = None;
        for ip in addresses {
            match self.check_address(ip, port, classes) {
                Ok(()) => return Ok(SocketAddr::new(ip, port)),
                Err(denial) => {
                    pending.address = Some(ip.to_string());
                    refusal.get_or_insert(denial);
                }
            }
        }
        Err(refusal.unwrap_or_else(|| {
            deny(
                ReasonCode::EgressDnsFailed,
                format!("{host} has no address"),
            )
        }))
    }

    async fn dial(&self, address: SocketAddr) -> Result<TcpStream, Denial> {
        match tokio::time::timeout(
            self.gateway.config.connect_timeout,
            TcpStream::connect(address),
        )
        .await
        {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(deny(
                ReasonCode::EgressUpstreamFailed,
                format!("connect {address}: {e}"),
            )),
            Err(_) => Err(deny(
                ReasonCode::EgressUpstreamFailed,
                format!("connect {address}: timed out"),
            )),
        }
    }

    async fn dial_tls(&self, address: SocketAddr, host: &str) -> Result<BoxIo, Denial> {
        let tcp = self.dial(address).await?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| {
            deny(
                ReasonCode::EgressMalformedRequest,
                format!("`{host}` is not a TLS server name"),
            )
        })?;
        match tokio::time::timeout(
            self.gateway.config.connect_timeout,
            self.gateway.upstream_tls.connect(name, tcp),
        )
        .await
        {
            Ok(Ok(tls)) => Ok(Box::new(tls)),
            Ok(Err(e)) => Err(deny(
                ReasonCode::EgressUpstreamTlsFailed,
                format!("TLS with {host}: {e}"),
            )),
            Err(_) => Err(deny(
                ReasonCode::EgressUpstreamFailed,
                format!("TLS with {host}: timed out"),
            )),
        }
    }

    /// Answers a refusal on an HTTP conversation and records it.
    async fn refuse<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        client: &mut W,
        pending: Pending,
        denial: Denial,
    ) {
        let status = if http_status_is_bad_gateway(denial.reason) {
            502
        } else {
            403
        };
        tracing::debug!(session = %self.key.session_id, reason = denial.reason.as_str(), message = %denial.message, "egress refused");
        let decision = pending.finish(denial.reason, Some(status), 0, 0);
        self.record(decision).await;
        let _ = client.write_all(&refusal_response(status, &denial)).await;
        let _ = client.flush().await;
        // The conversation ends here; over TLS this sends close_notify.
        let _ = client.shutdown().await;
    }

    async fn serve_http(&self, mut client: BufReader<BoxIo>, target: Target) {
        let mut upstream: Option<Upstream> = None;
        loop {
            let head = match tokio::time::timeout(
                self.gateway.config.idle_timeout,
                http::read_request(&mut client),
            )
            .await
            {
                Err(_) | Ok(Ok(None)) => return,
                Ok(Ok(Some(head))) => head,
                Ok(Err(HttpError::Io(_))) => return,
                Ok(Err(HttpError::Malformed(message))) => {
                    let pending = Pending::new(self.key, kind_of(&target));
                    self.refuse(
                        client.get_mut(),
                        pending,
                        deny(ReasonCode::EgressMalformedRequest, message),
                    )
                    .await;
                    return;
                }
            };
            if head.method == "CONNECT" {
                if matches!(target, Target::Proxy) {
                    self.connect(client, head).await;
                } else {
                    let pending = Pending::new(self.key, kind_of(&target));
                    self.refuse(
                        client.get_mut(),
                        pending,
                        deny(
                            ReasonCode::EgressMalformedRequest,
                            "CONNECT is only for the proxy port",
                        ),
                    )
                    .await;
                }
                return;
            }
            match self
                .forward(&mut client, head, &target, &mut upstream)
                .await
            {
                Next::Continue => {}
                Next::Close => return,
            }
        }
    }

    /// One request: decide, dial or reuse, send, relay the response, record.
    async fn forward(
        &self,
        client: &mut BufReader<BoxIo>,
        head: RequestHead,
        target: &Target,
        upstream: &mut Option<Upstream>,
    ) -> Next {
        let mut pending = Pending::new(self.key, kind_of(target));
        pending.method = Some(head.method.clone());
        let parsed = parse_target(&head, target);
        let (scheme, host, port, path) = match parsed {
            Ok(parts) => parts,
            Err(message) => {
                self.refuse(
                    client.get_mut(),
                    pending,
                    deny(ReasonCode::EgressMalformedRequest, message),
                )
                .await;
                return Next::Close;
            }
        };
        pending.host.clone_from(&host);
        pending.port = port;
        pending.path = Some(path.split('?').next().unwrap_or("/").to_owned());
        let framing = match http::request_framing(&head) {
            Ok(framing) => framing,
            Err(e) => {
                self.refuse(
                    client.get_mut(),
                    pending,
                    deny(ReasonCode::EgressMalformedRequest, e.to_string()),
                )
                .await;
                return Next::Close;
            }
        };
        let view = match self.view().await {
            Ok(view) => view,
            Err(denial) => {
                self.refuse(client.get_mut(), pending, denial).await;
                return Next::Close;
            }
        };
        let destination = Destination {
            scheme,
            host: &host,
            port,
            method: Some(&head.method),
        };
        // An idle upstream connection the server closed (or that sent something
        // unasked) is dropped here, before it could turn this request into a 502.
        if upstream.as_mut().is_some_and(|u| !idle_and_open(u)) {
            *upstream = None;
        }
        let reuse = upstream
            .as_ref()
            .is_some_and(|u| u.host == host && u.port == port);
        let plan = match self.plan(&view, destination, &mut pending, !reuse).await {
            Ok(plan) => plan,
            Err(denial) => {
                self.refuse(client.get_mut(), pending, denial).await;
                return Next::Close;
            }
        };
        if let Some(address) = plan.address {
            let io: BoxIo = match target {
                Target::Intercepted { .. } => match self.dial_tls(address, &host).await {
                    Ok(io) => io,
                    Err(denial) => {
                        self.refuse(client.get_mut(), pending, denial).await;
                        return Next::Close;
                    }
                },
                _ => match self.dial(address).await {
                    Ok(tcp) => Box::new(tcp),
                    Err(denial) => {
                        self.refuse(client.get_mut(), pending, denial).await;
                        return Next::Close;
                    }
                },
            };
            *upstream = Some(Upstream {
                host: host.clone(),
                port,
                address,
                io: BufReader::with_capacity(16 << 10, io),
            });
        }
        let Some(conn) = upstream.as_mut() else {
            return Next::Close;
        };
        pending.address = Some(conn.address.ip().to_string());
        let inject = plan.inject;

        let client_close = http::wants_close(head.minor_version, &head.headers);
        let mut headers = head.headers;
        http::strip_hop_by_hop(&mut headers);
        if let Some((name, value, secret)) = inject {
            headers.retain(|h| h.name != name);
            headers.push(Header {
                name,
                value: value.into_bytes(),
            });
            pending.credential = Some(secret);
        }
        // A client waiting for `100 Continue` gets it from the gateway, which then
        // sends the body on at once: the upstream never sees the expectation.
        let expects = headers.iter().any(|h| {
            h.name == "expect" && h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue")
        });
        if expects {
            headers.retain(|h| h.name != "expect");
            if framing != Framing::None
                && client
                    .get_mut()
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
            {
                return Next::Close;
            }
        }
        let request = http::encode_request(&head.method, &path, &headers);
        let sent = match http::send_message(request, framing, client, &mut conn.io).await {
            Ok(n) => n,
            Err(e) => {
                *upstream = None;
                self.refuse(
                    client.get_mut(),
                    pending,
                    deny(
                        ReasonCode::EgressUpstreamFailed,
                        format!("sending the request: {e}"),
                    ),
                )
                .await;
                return Next::Close;
            }
        };
        let response = loop {
            match tokio::time::timeout(
                self.gateway.config.idle_timeout,
                http::read_response(&mut conn.io),
            )
            .await
            {
                Ok(Ok(response))
                    if response.status >= 100
                        && response.status < 200
                        && response.status != 101 =>
                {
                    // Interim responses go to the client, filtered like final ones.
                    let mut headers = response.headers;
                    http::strip_hop_by_hop(&mut headers);
                    headers.retain(|h| !h.name.starts_with("x-cordon-"));
                    let interim =
                        http::encode_response(response.status, &response.reason, &headers);
                    if client.get_mut().write_all(&interim).await.is_err() {
                        return Next::Close;
                    }
                }
                Ok(Ok(response)) => break response,
                Ok(Err(e)) => {
                    *upstream = None;
                    self.refuse(
                        client.get_mut(),
                        pending,
                        deny(
                            ReasonCode::EgressUpstreamFailed,
                            format!("reading the response: {e}"),
                        ),
                    )
                    .await;
                    return Next::Close;
                }
                Err(_) => {
                    *upstream = None;
                    self.refuse(
                        client.get_mut(),
                        pending,
                        deny(
                            ReasonCode::EgressUpstreamFailed,
                            "the upstream did not answer in time",
                        ),
                    )
                    .await;
                    return Next::Close;
                }
            }
        };
        if response.status == 101 {
            *upstream = None;
            self.refuse(
                client.get_mut(),
                pending,
                deny(
                    ReasonCode::EgressMalformedRequest,
                    "protocol upgrades are not proxied",
                ),
            )
            .await;
            return Next::Close;
        }
        let framing = match http::response_framing(&head.method, &response) {
            Ok(framing) => framing,
            Err(e) => {
                *upstream = None;
                self.refuse(
                    client.get_mut(),
                    pending,
                    deny(ReasonCode::EgressUpstreamFailed, e.to_string()),
                )
                .await;
                return Next::Close;
            }
        };
        let upstream_close = framing == Framing::UntilClose
            || http::wants_close(response.minor_version, &response.headers);
        let mut headers = response.headers;
        http::strip_hop_by_hop(&mut headers);
        // The upstream cannot speak for the gateway.
        headers.retain(|h| !h.name.starts_with("x-cordon-"));
        let close = client_close || upstream_close;
        if close {
            headers.push(Header {
                name: "connection".into(),
                value: b"close".to_vec(),
            });
        }
        let status = response.status;
        let out = http::encode_response(status, &response.reason, &headers);
        let received = http::send_message(out, framing, &mut conn.io, client.get_mut()).await;
        if upstream_close {
            *upstream = None;
        }
        let (received, ok) = match received {
            Ok(n) => (n, true),
            Err(_) => (0, false),
        };
        let reason = pending.would_deny.unwrap_or(ReasonCode::EgressAllowed);
        self.record(pending.finish(reason, Some(status), sent, received))
            .await;
        if !ok {
            *upstream = None;
            return Next::Close;
        }
        if close { Next::Close } else { Next::Continue }
    }

    /// CONNECT host:port: decide, answer 200, check the ClientHello's SNI, then tunnel
    /// (or intercept when credentials or method rules apply).
    async fn connect(&self, mut client: BufReader<BoxIo>, head: RequestHead) {
        let mut pending = Pending::new(self.key, "connect");
        let Some((host, port)) = parse_authority(&head.target, None) else {
            self.refuse(
                client.get_mut(),
                pending,
                deny(
                    ReasonCode::EgressMalformedRequest,
                    "CONNECT needs host:port",
                ),
            )
            .await;
            return;
        };
        pending.host.clone_from(&host);
        pending.port = port;
        if http::request_framing(&head)
            .map(|f| f != Framing::None)
            .unwrap_or(true)
        {
            self.refuse(
                client.get_mut(),
                pending,
                deny(ReasonCode::EgressMalformedRequest, "CONNECT with a body"),
            )
            .await;
            return;
        }
        let view = match self.view().await {
            Ok(view) => view,
            Err(denial) => return self.refuse(client.get_mut(), pending, denial).await,
        };
        let destination = Destination {
            scheme: Scheme::Https,
            host: &host,
            port,
            method: None,
        };
        let plan = match self.plan(&view, destination, &mut pending, true).await {
            Ok(plan) => plan,
            Err(denial) => return self.refuse(client.get_mut(), pending, denial).await,
        };
        if client
            .get_mut()
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
            .is_err()
        {
            return;
        }
        let hello = match self.read_client_hello(&mut client).await {
            Ok(hello) => hello,
            Err(denial) => {
                self.record(pending.finish(denial.reason, None, 0, 0)).await;
                return;
            }
        };
        if let Err(denial) = check_sni(&host, &hello.1) {
            self.record(pending.finish(denial.reason, None, 0, 0)).await;
            return;
        }
        self.tunnel(client, host, port, plan, pending, hello.0)
            .await;
    }

    /// Port 443 inside the sandbox: the destination is the ClientHello's SNI.
    async fn serve_transparent_tls(&self, mut client: BufReader<BoxIo>) {
        let mut pending = Pending::new(self.key, "tls");
        pending.port = 443;
        let (bytes, sni) = match self.read_client_hello(&mut client).await {
            Ok(hello) => hello,
            Err(denial) => {
                self.record(pending.finish(denial.reason, None, 0, 0)).await;
                return;
            }
        };
        let Some(host) = sni else {
            let denial = deny(
                ReasonCode::EgressSniMismatch,
                "no server name in the ClientHello",
            );
            self.record(pending.finish(denial.reason, None, 0, 0)).await;
            return;
        };
        pending.host.clone_from(&host);
        let view = match self.view().await {
            Ok(view) => view,
            Err(denial) => {
                self.record(pending.finish(denial.reason, None, 0, 0)).await;
                return;
            }
        };
        let destination = Destination {
            scheme: Scheme::Https,
            host: &host,
            port: 443,
            method: None,
        };
        match self.plan(&view, destination, &mut pending, true).await {
            Ok(plan) => self.tunnel(client, host, 443, plan, pending, bytes).await,
            Err(denial) => self.record(pending.finish(denial.reason, None, 0, 0)).await,
        }
    }

    /// Reads the first TLS handshake message; returns its bytes and SNI.
    async fn read_client_hello(
        &self,
        client: &mut BufReader<BoxIo>,
    ) -> Result<(Vec<u8>, Option<String>), Denial> {
        let mut buf = Vec::with_capacity(1024);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match sni::server_name(&buf) {
                Ok(name) => return Ok((buf, name)),
                Err(ClientHelloError::Incomplete) => {}
                Err(e) => {
                    return Err(deny(
                        ReasonCode::EgressMalformedRequest,
                        format!("the tunnel does not start with a TLS ClientHello: {e:?}"),
                    ));
                }
            }
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, client.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return Err(deny(
                        ReasonCode::EgressMalformedRequest,
                        "the tunnel closed before a ClientHello",
                    ));
                }
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => {
                    return Err(deny(
                        ReasonCode::EgressMalformedRequest,
                        "no ClientHello within 10 s",
                    ));
                }
            }
        }
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one call site per entry; the parts are all distinct"
    )]
    async fn tunnel(
        &self,
        client: BufReader<BoxIo>,
        host: String,
        port: u16,
        plan: Plan,
        pending: Pending,
        hello: Vec<u8>,
    ) {
        if plan.intercept {
            // Each request inside is decided and recorded on its own.
            return self.intercept(client, host, port, hello).await;
        }
        let Some(address) = plan.address else {
            return;
        };
        let mut upstream = match self.dial(address).await {
            Ok(stream) => stream,
            Err(denial) => {
                self.record(pending.finish(denial.reason, None, 0, 0)).await;
                return;
            }
        };
        // Whatever the client sent after the ClientHello is still in the reader's buffer.
        let mut first = hello;
        first.extend_from_slice(client.buffer());
        let mut client = client.into_inner();
        if upstream.write_all(&first).await.is_err() {
            self.record(pending.finish(ReasonCode::EgressUpstreamFailed, None, 0, 0))
                .await;
            return;
        }
        // Large buffers: measured faster here than splice(2) for TLS through the tunnel
        // (docs/benchmarks.md).
        let copied = tokio::io::copy_bidirectional_with_sizes(
            &mut client,
            &mut upstream,
            TUNNEL_BUFFER,
            TUNNEL_BUFFER,
        )
        .await;
        let (sent, received) = copied.unwrap_or((0, 0));
        let reason = pending.would_deny.unwrap_or(ReasonCode::EgressAllowed);
        self.record(pending.finish(reason, None, sent + first.len() as u64, received))
            .await;
    }

    /// Terminates the sandbox's TLS with a certificate for `host` from the egress CA,
    /// then serves its requests one by one (each decided, credentials injected) over a
    /// verified TLS connection to the upstream.
    async fn intercept(&self, client: BufReader<BoxIo>, host: String, port: u16, hello: Vec<u8>) {
        let config = match self.gateway.ca.server_config(&host) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "egress: cannot mint a certificate");
                return;
            }
        };
        let mut first = hello;
        first.extend_from_slice(client.buffer());
        let replay = Prefixed {
            prefix: first,
            offset: 0,
            inner: client.into_inner(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(replay)).await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let mut pending = Pending::new(self.key, "https");
                pending.host.clone_from(&host);
                pending.port = port;
                tracing::debug!(error = %e, "egress: the sandbox's TLS handshake failed");
                self.record(pending.finish(ReasonCode::EgressMalformedRequest, None, 0, 0))
                    .await;
                return;
            }
            Err(_) => return,
        };
        let client = BufReader::with_capacity(16 << 10, Box::new(tls) as BoxIo);
        // Boxed: serving HTTP can lead back here through CONNECT.
        Box::pin(self.serve_http(client, Target::Intercepted { host, port })).await;
    }
}

enum Next {
    Continue,
    Close,
}

/// Whether an idle upstream connection can take another request: nothing to read yet
/// (a closed connection reads as end of stream at once).
fn idle_and_open(upstream: &mut Upstream) -> bool {
    use tokio::io::AsyncBufRead;
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(
        std::pin::Pin::new(&mut upstream.io).poll_fill_buf(&mut context),
        std::task::Poll::Pending
    )
}

fn kind_of(target: &Target) -> &'static str {
    match target {
        Target::Proxy | Target::Transparent => "http",
        Target::Intercepted { .. } => "https",
    }
}

fn credential_for(
    view: &SessionView,
    classes: &[&ServiceClass],
) -> Option<(String, String, String)> {
    let now = Timestamp::now();
    view.credentials
        .iter()
        .filter(|c| classes.iter().any(|class| class.name == c.service_class))
        .find_map(|c| {
            c.live_value(now)
                .map(|v| (c.header_name.clone(), v.to_owned(), c.secret_name.clone()))
        })
}

fn http_status_is_bad_gateway(reason: ReasonCode) -> bool {
    matches!(
        reason,
        ReasonCode::EgressDnsFailed
            | ReasonCode::EgressUpstreamFailed
            | ReasonCode::EgressUpstreamTlsFailed
    )
}

fn denial_message(reason: ReasonCode, destination: Destination<'_>) -> String {
    let Destination {
        scheme,
        host,
        port,
        method,
    } = destination;
    match reason {
        ReasonCode::EgressPortNotAllowed => format!("port {port} of {host} is not allowed"),
        ReasonCode::EgressSchemeNotAllowed => {
            format!("{} to {host}:{port} is not allowed", scheme.as_str())
        }
        ReasonCode::EgressMethodNotAllowed => {
            format!(
                "{} to {host} is not allowed",
                method.unwrap_or("this method")
            )
        }
        _ => format!("no egress rule for this session allows {host}:{port}"),
    }
}

fn refusal_response(status: u16, denial: &Denial) -> Vec<u8> {
    let body = serde_json::json!({
        "error": { "code": denial.reason.as_str(), "message": denial.message }
    })
    .to_string();
    let reason = if status == 502 {
        "Bad Gateway"
    } else {
        "Forbidden"
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\n{REASON_HEADER}: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        denial.reason.as_str(),
        body.len()
    )
    .into_bytes()
}

fn check_sni(host: &str, sni: &Option<String>) -> Result<(), Denial> {
    match (parse_ip_literal(host), sni) {
        (Some(_), None) => Ok(()),
        (_, Some(name)) if name == host => Ok(()),
        (_, Some(name)) => Err(deny(
            ReasonCode::EgressSniMismatch,
            format!("the ClientHello names `{name}`, the tunnel is for `{host}`"),
        )),
        (None, None) => Err(deny(
            ReasonCode::EgressSniMismatch,
            "no server name in the ClientHello",
        )),
    }
}

/// Splits `host[:port]` (IPv6 in brackets); lower-cases the host and drops a trailing dot.
fn parse_authority(authority: &str, default_port: Option<u16>) -> Option<(String, u16)> {
    if authority.is_empty() || authority.contains('@') || authority.contains('/') {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return None,
        };
        (host.to_owned(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host.to_owned(), Some(port)),
            Some(_) => return None,
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse::<u16>().ok().filter(|&p| p != 0)?
        }
        None => default_port?,
    };
    let host = host.to_ascii_lowercase();
    let host = host.strip_suffix('.').unwrap_or(&host).to_owned();
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b == b':');
    valid.then_some((host, port))
}

type TargetParts = (Scheme, String, u16, String);

/// The destination of a request and the origin-form path to send upstream.
fn parse_target(head: &RequestHead, target: &Target) -> Result<TargetParts, String> {
    let hosts: Vec<&[u8]> = http::header(&head.headers, "host").collect();
    if hosts.len() > 1 {
        return Err("more than one Host header".into());
    }
    let host_header = match hosts.first() {
        Some(value) => Some(
            std::str::from_utf8(value)
                .map_err(|_| "the Host header is not ASCII".to_owned())?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    match target {
        Target::Proxy => {
            let rest = if let Some(rest) = head.target.strip_prefix("http://") {
                rest
            } else if head.target.len() >= 7 && head.target[..7].eq_ignore_ascii_case("http://") {
                &head.target[7..]
            } else if head.target.starts_with('/') {
                return Err(
                    "the proxy needs an absolute URI (http://host/path); use CONNECT for TLS"
                        .into(),
                );
            } else {
                return Err("only http:// URIs are proxied; use CONNECT for TLS".into());
            };
            let (authority, path) = match rest.find(['/', '?']) {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let path = if path.starts_with('?') {
                format!("/{path}")
            } else {
                path.to_owned()
            };
            let (host, port) = parse_authority(authority, Some(80))
                .ok_or_else(|| format!("`{authority}` is not a valid host[:port]"))?;
            if let Some(value) = host_header {
                let (h, p) = parse_authority(&value, Some(80)).ok_or_else(|| {
                    format!("the Host header `{value}` is not a valid host[:port]")
                })?;
                if h != host || p != port {
                    return Err(format!(
                        "the Host header `{value}` differs from the URI's host `{authority}`"
                    ));
                }
            }
            Ok((Scheme::Http, host, port, path))
        }
        Target::Transparent => {
            let value = host_header.ok_or_else(|| "a Host header is required".to_owned())?;
            let (host, port) = parse_authority(&value, Some(80))
                .ok_or_else(|| format!("the Host header `{value}` is not a valid host[:port]"))?;
            if port != 80 || !head.target.starts_with('/') {
                return Err("port 80 takes origin-form requests for port 80".into());
            }
            Ok((Scheme::Http, host, port, head.target.clone()))
        }
        Target::Intercepted { host, port } => {
            if !head.target.starts_with('/') {
                return Err("requests inside a TLS tunnel must be origin-form".into());
            }
            if let Some(value) = host_header {
                let matches = parse_authority(&value, Some(*port))
                    .is_some_and(|(h, p)| &h == host && p == *port);
                if !matches {
                    return Err(format!(
                        "the Host header `{value}` differs from the tunnel's host `{host}`"
                    ));
                }
            }
            Ok((Scheme::Https, host.clone(), *port, head.target.clone()))
        }
    }
}

/// A stream that first replays bytes already read from it.
struct Prefixed {
    prefix: Vec<u8>,
    offset: usize,
    inner: BoxIo,
}

impl tokio::io::AsyncRead for Prefixed {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.offset < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.offset);
            let start = self.offset;
            buf.put_slice(&self.prefix[start..start + n]);
            self.offset += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Prefixed {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Writes decisions in batches; acknowledges each once its batch is stored.
async fn record_loop(env: Arc<dyn EgressEnv>, mut queue: mpsc::Receiver<Recorded>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while queue.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let (decisions, acks): (Vec<EgressDecision>, Vec<Option<oneshot::Sender<()>>>) =
            batch.drain(..).unzip();
        let count = decisions.len();
        if let Err(e) = env.record(decisions).await {
            metrics::counter!("cordon_egress_record_failures_total").increment(count as u64);
            tracing::error!(error = %e, count, "egress: decisions could not be recorded");
        }
        for ack in acks.into_iter().flatten() {
            let _ = ack.send(());
        }
    }
}

/// The in-sandbox resolver: every valid name resolves to the sandbox's own loopback,
/// where ports 80 and 443 hand connections to the gateway by name. No query ever leaves.
async fn dns_loop(socket: UdpSocket) {
    let mut packet = [0u8; 1500];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut packet).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let query = &packet[..n];
        let answer = match crate::dns::parse_query(query) {
            Ok(q) => Some(crate::dns::response(
                &q,
                Some(Ipv4Addr::LOCALHOST),
                DNS_TTL,
                crate::dns::RCODE_NOERROR,
            )),
            Err(_) => crate::dns::error_response(query, crate::dns::RCODE_FORMERR),
        };
        if let Some(answer) = answer {
            let _ = socket.send_to(&answer, from).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_parse_strictly() {
        assert_eq!(
            parse_authority("Example.COM.:443", None),
            Some(("example.com".into(), 443))
        );
        assert_eq!(
            parse_authority("[::1]:8080", None),
            Some(("::1".into(), 8080))
        );
        assert_eq!(
            parse_authority("a.com", Some(80)),
            Some(("a.com".into(), 80))
        );
        for bad in [
            "a.com",
            "a.com:0",
            "a.com:99999",
            "user@a.com:80",
            "a.com:80/x",
            "::1:80",
            "a b:80",
            ":80",
        ] {
            assert_eq!(parse_authority(bad, None), None, "{bad}");
        }
    }

    #[test]
    fn sni_must_match_the_tunnel() {
        assert!(check_sni("a.com", &Some("a.com".into())).is_ok());
        assert!(check_sni("a.com", &Some("b.com".into())).is_err());
        assert!(check_sni("a.com", &None).is_err());
        assert!(check_sni("1.2.3.4", &None).is_ok());
    }
}
