//! End-to-end tests of the egress gateway: a session's listeners on 127.0.0.1, an
//! in-memory `EgressEnv`, and test upstreams (plain HTTP, TLS, raw echo) that record
//! what reaches them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cordon_core::{EgressDecision, ReasonCode, SessionId, TenantId, Timestamp};
use cordon_egress::{
    Credential, EgressCa, EgressEnv, EgressPolicy, Gateway, GatewayConfig, MasterKey,
    PolicySnapshot, REASON_HEADER, SessionKey, SessionListeners, SessionView,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Upper bound of every single wait in these tests.
const WAIT: Duration = Duration::from_secs(5);
/// How long asynchronously recorded decisions are polled for.
const RECORD_WAIT: Duration = Duration::from_secs(2);
const POLICY_VERSION: &str = "test/1";

async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(WAIT, future).await {
        Ok(out) => out,
        Err(_) => panic!("timed out: {what}"),
    }
}

// ---------------------------------------------------------------------------------------
// The in-memory environment.

#[derive(Debug)]
struct TestEnv {
    view: Mutex<SessionView>,
    decisions: Mutex<Vec<EgressDecision>>,
}

#[async_trait]
impl EgressEnv for TestEnv {
    async fn session_view(&self, _key: &SessionKey) -> Result<Arc<SessionView>, String> {
        Ok(Arc::new(self.view.lock().unwrap().clone()))
    }

    async fn record(&self, decisions: Vec<EgressDecision>) -> Result<(), String> {
        self.decisions.lock().unwrap().extend(decisions);
        Ok(())
    }
}

impl TestEnv {
    fn decisions(&self) -> Vec<EgressDecision> {
        self.decisions.lock().unwrap().clone()
    }

    fn set_credentials(&self, credentials: Vec<Credential>) {
        self.view.lock().unwrap().credentials = credentials;
    }

    /// Polls (up to 2 s) until at least `count` decisions match `keep`; returns those.
    async fn wait_for(
        &self,
        count: usize,
        keep: impl Fn(&EgressDecision) -> bool,
    ) -> Vec<EgressDecision> {
        let deadline = Instant::now() + RECORD_WAIT;
        loop {
            let found: Vec<EgressDecision> =
                self.decisions().into_iter().filter(|d| keep(d)).collect();
            if found.len() >= count || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The single decision recorded with `reason` (polled for).
    async fn one(&self, reason: ReasonCode) -> EgressDecision {
        let found = self.wait_for(1, |d| d.reason == reason).await;
        assert_eq!(
            found.len(),
            1,
            "expected one {reason:?} decision, all: {:#?}",
            self.decisions()
        );
        found.into_iter().next().unwrap()
    }
}

fn credential(secret: &str, class: &str, value: Option<&str>, ttl_secs: i64) -> Credential {
    Credential {
        secret_name: secret.into(),
        service_class: class.into(),
        header_name: "authorization".into(),
        header_value: value.map(str::to_owned),
        expires_at: Timestamp::now().saturating_add_micros(ttl_secs * 1_000_000),
    }
}

// ---------------------------------------------------------------------------------------
// Policies.

/// A service class for one host and port that may reach 127.0.0.1.
fn class(name: &str, host: &str, port: u16) -> String {
    format!(
        r#"{{"name":"{name}","hosts":["{host}"],"ports":[{port}],"address_ranges":["127.0.0.1/32"]}}"#
    )
}

/// One rule `r` allowing every class for every session.
fn policy(classes: &[String]) -> String {
    let names: Vec<String> = classes
        .iter()
        .map(|c| {
            let value: serde_json::Value = serde_json::from_str(c).unwrap();
            value["name"].clone().to_string()
        })
        .collect();
    format!(
        r#"{{"service_classes":[{}],"rules":[{{"name":"r","service_classes":[{}],"environments":["*"],"workload_classes":["*"]}}]}}"#,
        classes.join(","),
        names.join(",")
    )
}

// ---------------------------------------------------------------------------------------
// The gateway under test.

struct Setup {
    policy: String,
    credentials: Vec<Credential>,
    resolve: Vec<String>,
    unresolvable: Vec<String>,
    protected: Vec<SocketAddr>,
    roots: Option<String>,
    active: bool,
}

fn setup(policy: String) -> Setup {
    Setup {
        policy,
        credentials: Vec::new(),
        resolve: Vec::new(),
        unresolvable: Vec::new(),
        protected: Vec::new(),
        roots: None,
        active: true,
    }
}

impl Setup {
    /// Makes `name` resolve to 127.0.0.1.
    fn resolve(mut self, name: &str) -> Self {
        self.resolve.push(name.to_owned());
        self
    }

    /// Makes `name` resolve to no address at all.
    fn unresolvable(mut self, name: &str) -> Self {
        self.unresolvable.push(name.to_owned());
        self
    }

    fn protect(mut self, address: SocketAddr) -> Self {
        self.protected.push(address);
        self
    }

    fn roots(mut self, pem: &str) -> Self {
        self.roots = Some(pem.to_owned());
        self
    }

    fn credential(mut self, credential: Credential) -> Self {
        self.credentials.push(credential);
        self
    }

    fn inactive(mut self) -> Self {
        self.active = false;
        self
    }

    fn start(self) -> Harness {
        let policy = EgressPolicy::from_json(&self.policy).expect("test policy");
        let env = Arc::new(TestEnv {
            view: Mutex::new(SessionView {
                active: self.active,
                environment: "dev".into(),
                workload_class: "default".into(),
                policy: Arc::new(PolicySnapshot {
                    policy,
                    version: POLICY_VERSION.into(),
                }),
                credentials: self.credentials,
            }),
            decisions: Mutex::new(Vec::new()),
        });
        let master = MasterKey::from_bytes(&[7; 32]).unwrap();
        let ca =
            EgressCa::load(&cordon_egress::tls::generate_ca(&master).unwrap(), &master).unwrap();
        let config = GatewayConfig {
            resolve: self
                .resolve
                .into_iter()
                .map(|name| (name, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]))
                .chain(self.unresolvable.into_iter().map(|name| (name, Vec::new())))
                .collect(),
            protected: self.protected,
            upstream_roots_pem: self.roots,
            connect_timeout: Duration::from_secs(3),
            ..Default::default()
        };
        let gateway = Gateway::new(env.clone(), config, Arc::new(ca)).unwrap();
        let key = SessionKey {
            tenant_id: TenantId::generate(),
            session_id: SessionId::generate(),
        };
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let harness = Harness {
            proxy: proxy.local_addr().unwrap(),
            http: http.local_addr().unwrap(),
            https: https.local_addr().unwrap(),
            dns: dns.local_addr().unwrap(),
            gateway: gateway.clone(),
            env,
            key,
        };
        gateway
            .attach(
                key,
                SessionListeners {
                    proxy: Some(proxy),
                    http: Some(http),
                    https: Some(https),
                    dns: Some(dns),
                },
            )
            .unwrap();
        harness
    }
}

struct Harness {
    gateway: Gateway,
    env: Arc<TestEnv>,
    key: SessionKey,
    proxy: SocketAddr,
    http: SocketAddr,
    https: SocketAddr,
    dns: SocketAddr,
}

impl Harness {
    async fn client(&self) -> Client {
        Client::connect(self.proxy).await
    }
}

// ---------------------------------------------------------------------------------------
// HTTP/1.1 as the tests speak it: heads as text, bodies kept exactly as on the wire.

type Headers = Vec<(String, String)>;

fn all<'h>(headers: &'h Headers, name: &str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Reads a head; `None` on a clean end of stream before it.
async fn read_head<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Option<(String, Headers)> {
    let mut first = String::new();
    let mut headers = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader.read_until(b'\n', &mut line).await.ok()?;
        if n == 0 {
            return None;
        }
        let line = String::from_utf8(line).expect("head is text");
        let line = line.trim_end_matches(['\r', '\n']);
        if first.is_empty() {
            first = line.to_owned();
        } else if line.is_empty() {
            return Some((first, headers));
        } else {
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
}

/// A chunked body, sizes, extensions and trailers included, exactly as sent.
async fn read_chunked_raw<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Vec<u8> {
    let mut raw = Vec::new();
    loop {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).await.unwrap();
        assert!(line.ends_with(b"\n"), "chunk size line ended early");
        raw.extend_from_slice(&line);
        let text = String::from_utf8(line).unwrap();
        let size = text.trim_end().split(';').next().unwrap().trim();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            loop {
                let mut line = Vec::new();
                reader.read_until(b'\n', &mut line).await.unwrap();
                raw.extend_from_slice(&line);
                if line == b"\r\n" || line.is_empty() {
                    return raw;
                }
            }
        }
        let mut data = vec![0; size + 2];
        reader.read_exact(&mut data).await.unwrap();
        raw.extend_from_slice(&data);
    }
}

#[derive(Debug, Clone)]
struct Response {
    status: u16,
    headers: Headers,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        all(&self.headers, name).first().copied()
    }

    fn reason(&self) -> Option<&str> {
        self.header(REASON_HEADER)
    }
}

async fn read_response<R: AsyncRead + Unpin>(reader: &mut BufReader<R>, to_head: bool) -> Response {
    let (line, headers) = within("response head", read_head(reader))
        .await
        .expect("a response, not a closed connection");
    let status: u16 = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let no_body = to_head || status == 204 || status == 304 || status < 200;
    let body = if no_body {
        Vec::new()
    } else if all(&headers, "transfer-encoding")
        .iter()
        .any(|v| v.eq_ignore_ascii_case("chunked"))
    {
        within("chunked response body", read_chunked_raw(reader)).await
    } else if let Some(length) = all(&headers, "content-length").first() {
        let mut body = vec![0; length.parse().unwrap()];
        within("response body", reader.read_exact(&mut body))
            .await
            .unwrap();
        body
    } else {
        let mut body = Vec::new();
        within("response body until close", reader.read_to_end(&mut body))
            .await
            .unwrap();
        body
    };
    Response {
        status,
        headers,
        body,
    }
}

/// A sandbox's connection to the proxy listener.
struct Client {
    io: BufReader<TcpStream>,
}

impl Client {
    async fn connect(address: SocketAddr) -> Self {
        let stream = within("connect to the gateway", TcpStream::connect(address))
            .await
            .unwrap();
        Self {
            io: BufReader::new(stream),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
    }

    async fn response(&mut self) -> Response {
        read_response(&mut self.io, false).await
    }

    async fn head_response(&mut self) -> Response {
        read_response(&mut self.io, true).await
    }

    async fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes).await;
        self.response().await
    }
}

/// Whether the peer closed (or reset) without sending a byte; panics on data.
async fn closed_without_answer<R: AsyncRead + Unpin>(reader: &mut R) {
    let mut buf = [0u8; 512];
    match within("the connection to close", reader.read(&mut buf)).await {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "expected a closed connection, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Test upstreams.

#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    headers: Headers,
    /// The body as on the wire (chunked framing included).
    body: Vec<u8>,
}

type Reply = Arc<dyn Fn(&Received) -> Vec<u8> + Send + Sync>;

#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Upstream {
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }
}

fn ok_reply(body: &'static str) -> Reply {
    Arc::new(move |_| {
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
}

/// An HTTP/1.1 server (over TLS with `tls`) that records every request and answers
/// each with `reply`, keeping connections open.
async fn upstream(tls: Option<Arc<rustls::ServerConfig>>, reply: Reply) -> Upstream {
    upstream_closing(tls, reply, false).await
}

/// Like [`upstream`]; with `close_after_reply` it closes each connection after its
/// first answer without saying so (as a server timing out an idle connection does).
async fn upstream_closing(
    tls: Option<Arc<rustls::ServerConfig>>,
    reply: Reply,
    close_after_reply: bool,
) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = Upstream {
        addr: listener.local_addr().unwrap(),
        connections: Arc::new(AtomicUsize::new(0)),
        requests: Arc::new(Mutex::new(Vec::new())),
    };
    let state = upstream.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            state.connections.fetch_add(1, Ordering::SeqCst);
            let requests = Arc::clone(&state.requests);
            let reply = Arc::clone(&reply);
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(config) => {
                        let acceptor = tokio_rustls::TlsAcceptor::from(config);
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_upstream(stream, requests, reply, close_after_reply).await;
                        }
                    }
                    None => serve_upstream(stream, requests, reply, close_after_reply).await,
                }
            });
        }
    });
    upstream
}

async fn serve_upstream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    requests: Arc<Mutex<Vec<Received>>>,
    reply: Reply,
    close_after_reply: bool,
) {
    let mut io = BufReader::new(stream);
    while let Some((line, headers)) = read_head(&mut io).await {
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or_default().to_owned();
        let target = parts.next().unwrap_or_default().to_owned();
        let body = if all(&headers, "transfer-encoding").contains(&"chunked") {
            read_chunked_raw(&mut io).await
        } else if let Some(length) = all(&headers, "content-length").first() {
            let mut body = vec![0; length.parse().unwrap()];
            if io.read_exact(&mut body).await.is_err() {
                return;
            }
            body
        } else {
            Vec::new()
        };
        let received = Received {
            method,
            target,
            headers,
            body,
        };
        requests.lock().unwrap().push(received.clone());
        let out = reply(&received);
        if io.get_mut().write_all(&out).await.is_err() || io.get_mut().flush().await.is_err() {
            return;
        }
        if close_after_reply {
            let _ = io.get_mut().shutdown().await;
            return;
        }
    }
}

/// A raw TCP server that echoes every byte back and half-closes when its client does.
async fn echo_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.into_split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    (addr, connections)
}

// ---------------------------------------------------------------------------------------
// TLS material.

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA of the test's own, standing in for a public root.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server config presenting a certificate for `host` signed by this CA.
    fn server_config(&self, host: &str) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        Arc::new(config)
    }
}

/// A client config trusting only the certificates in `pem`.
fn client_config(pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in cordon_egress::tls::pem_certificates(pem) {
        roots.add(cert).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The first flight of a real TLS client for `name`: a ClientHello record with its SNI.
fn client_hello(name: &str) -> Vec<u8> {
    let config = client_config("");
    let mut conn =
        rustls::ClientConnection::new(config, ServerName::try_from(name.to_owned()).unwrap())
            .unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(
        cordon_egress::sni::server_name(&out).unwrap().as_deref(),
        Some(name)
    );
    out
}

/// Opens a CONNECT tunnel; returns the stream positioned after the proxy's answer head
/// (read byte by byte, so no tunnel bytes are consumed) and that head.
async fn open_tunnel(proxy: SocketAddr, authority: &str) -> (TcpStream, String) {
    let mut stream = within("connect to the gateway", TcpStream::connect(proxy))
        .await
        .unwrap();
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = within("the CONNECT answer", stream.read_u8())
            .await
            .expect("an answer to CONNECT");
        head.push(byte);
    }
    (stream, String::from_utf8(head).unwrap())
}

// ---------------------------------------------------------------------------------------
// 1. Keep-alive.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reuses_one_upstream_connection_and_records_each_request_without_query() {
    let up = upstream(None, ok_reply("hello")).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("api", "keepalive.test", port)]))
        .resolve("keepalive.test")
        .start();

    let mut client = h.client().await;
    let first = client
        .request(
            format!(
                "POST http://keepalive.test:{port}/a?x=1 HTTP/1.1\r\nHost: keepalive.test:{port}\r\ncontent-length: 3\r\n\r\nabc"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, b"hello");
    let second = client
        .request(
            format!(
                "GET http://keepalive.test:{port}/b HTTP/1.1\r\nHost: keepalive.test:{port}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body, b"hello");

    let requests = up.requests();
    assert_eq!(
        requests
            .iter()
            .map(|r| (r.method.as_str(), r.target.as_str()))
            .collect::<Vec<_>>(),
        [("POST", "/a?x=1"), ("GET", "/b")],
        "origin-form with the query on the upstream side"
    );
    assert_eq!(requests[0].body, b"abc");
    assert_eq!(
        up.connections(),
        1,
        "both requests on one upstream connection"
    );

    let decisions = h.env.wait_for(2, |_| true).await;
    assert_eq!(decisions.len(), 2, "{decisions:#?}");
    for (d, (method, path, sent)) in decisions
        .iter()
        .zip([("POST", "/a", 3u64), ("GET", "/b", 0u64)])
    {
        assert_eq!(d.reason, ReasonCode::EgressAllowed);
        assert_eq!(d.kind, "http");
        assert_eq!(d.mode, "enforce");
        assert_eq!(d.tenant_id, h.key.tenant_id);
        assert_eq!(d.session_id, h.key.session_id);
        assert_eq!(d.host, "keepalive.test");
        assert_eq!(d.port, port);
        assert_eq!(d.address.as_deref(), Some("127.0.0.1"));
        assert_eq!(d.method.as_deref(), Some(method));
        assert_eq!(d.path.as_deref(), Some(path));
        assert_eq!(d.status, Some(200));
        assert_eq!(d.service_class.as_deref(), Some("api"));
        assert_eq!(d.rule.as_deref(), Some("r"));
        assert_eq!(d.policy_version, POLICY_VERSION);
        assert_eq!(d.credential, None);
        assert_eq!(d.bytes_sent, sent);
        assert_eq!(d.bytes_received, 5);
    }
}

// ---------------------------------------------------------------------------------------
// 2. Framing.

const CHUNKED_REQUEST_BODY: &[u8] = b"3\r\nabc\r\n4;ext=1\r\ndefg\r\n0\r\n\r\n";
const CHUNKED_RESPONSE_BODY: &[u8] =
    b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";

fn framing_reply() -> Reply {
    Arc::new(
        |req: &Received| match (req.method.as_str(), req.target.as_str()) {
            ("POST", "/chunked") => {
                let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                out.extend_from_slice(CHUNKED_RESPONSE_BODY);
                out
            }
            // A HEAD answer announces a length and carries no body.
            ("HEAD", _) => b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n".to_vec(),
            (_, "/empty") => b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlast".to_vec(),
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_are_forwarded_byte_exact_and_bodiless_responses_do_not_hang() {
    let up = upstream(None, framing_reply()).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("api", "framing.test", port)]))
        .resolve("framing.test")
        .start();
    let base = format!("http://framing.test:{port}");
    let host = format!("Host: framing.test:{port}\r\n");

    let mut client = h.client().await;
    let mut request =
        format!("POST {base}/chunked HTTP/1.1\r\n{host}transfer-encoding: chunked\r\n\r\n")
            .into_bytes();
    request.extend_from_slice(CHUNKED_REQUEST_BODY);
    let chunked = client.request(&request).await;
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(chunked.body, CHUNKED_RESPONSE_BODY);

    client
        .send(format!("HEAD {base}/head HTTP/1.1\r\n{host}\r\n").as_bytes())
        .await;
    let head = client.head_response().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000"));

    let empty = client
        .request(format!("GET {base}/empty HTTP/1.1\r\n{host}\r\n").as_bytes())
        .await;
    assert_eq!(empty.status, 204);
    assert!(empty.body.is_empty());

    // The conversation is still in step after both bodiless answers.
    let last = client
        .request(format!("GET {base}/last HTTP/1.1\r\n{host}\r\n").as_bytes())
        .await;
    assert_eq!(last.status, 200);
    assert_eq!(last.body, b"last");

    let requests = up.requests();
    assert_eq!(requests.len(), 4);
    assert_eq!(requests[0].body, CHUNKED_REQUEST_BODY);
    assert_eq!(all(&requests[0].headers, "transfer-encoding"), ["chunked"]);
    assert_eq!(up.connections(), 1);

    let decisions = h.env.wait_for(4, |_| true).await;
    assert_eq!(
        decisions.iter().map(|d| d.status).collect::<Vec<_>>(),
        [Some(200), Some(200), Some(204), Some(200)]
    );
    assert!(
        decisions
            .iter()
            .all(|d| d.reason == ReasonCode::EgressAllowed)
    );
    assert_eq!(decisions[0].bytes_sent, CHUNKED_REQUEST_BODY.len() as u64);
    assert_eq!(
        decisions[0].bytes_received,
        CHUNKED_RESPONSE_BODY.len() as u64
    );
}

// ---------------------------------------------------------------------------------------
// 3. Headers.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_proxy_and_forged_reason_headers_are_dropped_both_ways() {
    let up = upstream(
        None,
        Arc::new(|_| {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-cordon-reason: FORGED\r\nX-Cordon-Other: x\r\nconnection: x-foo\r\nx-foo: 1\r\nkeep-alive: timeout=5\r\nx-kept: yes\r\n\r\nok"
                .to_vec()
        }),
    )
    .await;
    let port = up.addr.port();
    let h = setup(policy(&[class("api", "headers.test", port)]))
        .resolve("headers.test")
        .start();

    let mut client = h.client().await;
    let response = client
        .request(
            format!(
                "GET http://headers.test:{port}/ HTTP/1.1\r\nHost: headers.test:{port}\r\nProxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\nConnection: x-bar\r\nx-bar: 2\r\nx-end: e\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok");
    assert_eq!(response.reason(), None, "{:?}", response.headers);
    assert_eq!(response.header("x-cordon-other"), None);
    assert_eq!(response.header("x-foo"), None);
    assert_eq!(response.header("keep-alive"), None);
    assert_eq!(response.header("connection"), None);
    assert_eq!(response.header("x-kept"), Some("yes"));

    let requests = up.requests();
    assert_eq!(requests.len(), 1);
    let seen = &requests[0].headers;
    for gone in [
        "proxy-authorization",
        "proxy-connection",
        "connection",
        "x-bar",
    ] {
        assert!(
            all(seen, gone).is_empty(),
            "{gone} reached the upstream: {seen:?}"
        );
    }
    assert_eq!(all(seen, "x-end"), ["e"]);
    assert_eq!(all(seen, "host"), [format!("headers.test:{port}").as_str()]);
}

// ---------------------------------------------------------------------------------------
// 4. Credentials.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_replaces_the_clients_header_and_is_recorded_by_name() {
    let up = upstream(None, ok_reply("ok")).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("svc", "svc.test", port)]))
        .resolve("svc.test")
        .credential(credential("svc-token", "svc", Some("Bearer real"), 3600))
        .start();

    let mut client = h.client().await;
    let response = client
        .request(
            format!(
                "GET http://svc.test:{port}/x HTTP/1.1\r\nHost: svc.test:{port}\r\nAuthorization: Bearer fake\r\nauthorization: Bearer fake2\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200);
    let requests = up.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(all(&requests[0].headers, "authorization"), ["Bearer real"]);

    let decision = h.env.one(ReasonCode::EgressAllowed).await;
    assert_eq!(decision.credential.as_deref(), Some("svc-token"));
    assert_eq!(decision.service_class.as_deref(), Some("svc"));
    let debug = format!("{decision:?}");
    assert!(
        !debug.contains("Bearer real"),
        "the secret leaked into the record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_revoked_credential_lease_refuses_the_request_before_the_upstream() {
    let up = upstream(None, ok_reply("ok")).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("svc", "svc.test", port)]))
        .resolve("svc.test")
        .credential(credential("svc-token", "svc", Some("Bearer real"), -1))
        .start();
    let request = format!("GET http://svc.test:{port}/x HTTP/1.1\r\nHost: svc.test:{port}\r\n\r\n");

    let response = h.client().await.request(request.as_bytes()).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.reason(), Some("EGRESS_CREDENTIAL_LEASE_EXPIRED"));
    let body: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(body["error"]["code"], "EGRESS_CREDENTIAL_LEASE_EXPIRED");

    // Revoked (no value) counts the same.
    h.env
        .set_credentials(vec![credential("svc-token", "svc", None, 3600)]);
    let response = h.client().await.request(request.as_bytes()).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.reason(), Some("EGRESS_CREDENTIAL_LEASE_EXPIRED"));

    let denials = h
        .env
        .wait_for(2, |d| d.reason == ReasonCode::EgressCredentialLeaseExpired)
        .await;
    assert_eq!(denials.len(), 2);
    assert!(denials.iter().all(|d| d.status == Some(403)));
    assert_eq!(up.connections(), 0, "nothing may reach the upstream");
    assert!(up.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_without_a_credential_gets_no_injected_header() {
    let with = upstream(None, ok_reply("ok")).await;
    let without = upstream(None, ok_reply("ok")).await;
    let h = setup(policy(&[
        class("svc", "svc.test", with.addr.port()),
        class("plain", "plain.test", without.addr.port()),
    ]))
    .resolve("svc.test")
    .resolve("plain.test")
    .credential(credential("svc-token", "svc", Some("Bearer real"), 3600))
    .start();
    let port = without.addr.port();

    let response = h
        .client()
        .await
        .request(
            format!("GET http://plain.test:{port}/ HTTP/1.1\r\nHost: plain.test:{port}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200);
    let requests = without.requests();
    assert_eq!(requests.len(), 1);
    assert!(all(&requests[0].headers, "authorization").is_empty());
    let decision = h.env.one(ReasonCode::EgressAllowed).await;
    assert_eq!(decision.service_class.as_deref(), Some("plain"));
    assert_eq!(decision.credential, None);
    assert_eq!(with.connections(), 0);
}

// ---------------------------------------------------------------------------------------
// 5. Session state.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inactive_session_is_refused_and_the_denial_is_durable_before_the_answer() {
    let up = upstream(None, ok_reply("ok")).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("api", "api.test", port)]))
        .resolve("api.test")
        .inactive()
        .start();
    let mut denials = h.gateway.subscribe_denials();

    let response = h
        .client()
        .await
        .request(
            format!("GET http://api.test:{port}/p?q HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.reason(), Some("EGRESS_SESSION_NOT_ACTIVE"));

    // No polling: the decision was stored before the 403 was written.
    let stored = h.env.decisions();
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(stored[0].reason, ReasonCode::EgressSessionNotActive);
    assert_eq!(stored[0].status, Some(403));
    assert_eq!(stored[0].host, "api.test");
    assert_eq!(stored[0].path.as_deref(), Some("/p"));

    let published = within("the denial feed", denials.recv()).await.unwrap();
    assert_eq!(published.reason, ReasonCode::EgressSessionNotActive);
    assert_eq!(published.session_id, h.key.session_id);
    assert_eq!(up.connections(), 0);
}

// ---------------------------------------------------------------------------------------
// 6. The control plane's own address.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_control_plane_address_is_never_dialled_even_when_a_class_allows_it() {
    let up = upstream(None, ok_reply("ok")).await;
    let port = up.addr.port();
    let h = setup(policy(&[
        class("by-name", "cp.test", port),
        class("by-address", "127.0.0.1", port),
    ]))
    .resolve("cp.test")
    .protect(up.addr)
    .start();

    for authority in [format!("cp.test:{port}"), format!("127.0.0.1:{port}")] {
        let response = h
            .client()
            .await
            .request(
                format!("GET http://{authority}/ HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes(),
            )
            .await;
        assert_eq!(response.status, 403, "{authority}");
        assert_eq!(
            response.reason(),
            Some("EGRESS_NON_PUBLIC_ADDRESS"),
            "{authority}"
        );
    }
    // And through a tunnel.
    let (mut tunnel, answer) = open_tunnel(h.proxy, &format!("cp.test:{port}")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("EGRESS_NON_PUBLIC_ADDRESS"), "{answer}");
    let _ = tunnel.shutdown().await;

    let denials = h
        .env
        .wait_for(3, |d| d.reason == ReasonCode::EgressNonPublicAddress)
        .await;
    assert_eq!(denials.len(), 3);
    assert!(
        denials
            .iter()
            .all(|d| d.address.as_deref() == Some("127.0.0.1"))
    );
    assert_eq!(up.connections(), 0);
}

// ---------------------------------------------------------------------------------------
// 7. CONNECT.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_a_different_sni_is_cut_before_any_upstream_connection() {
    let (echo, connections) = echo_upstream().await;
    let port = echo.port();
    let h = setup(policy(&[class("tun", "tunnel.test", port)]))
        .resolve("tunnel.test")
        .start();

    let (mut tunnel, answer) = open_tunnel(h.proxy, &format!("tunnel.test:{port}")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tunnel.write_all(&client_hello("other.test")).await.unwrap();
    closed_without_answer(&mut tunnel).await;

    let decision = h.env.one(ReasonCode::EgressSniMismatch).await;
    assert_eq!(decision.kind, "connect");
    assert_eq!(decision.host, "tunnel.test");
    assert_eq!(decision.port, port);
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_followed_by_plain_bytes_is_a_malformed_request() {
    let (echo, connections) = echo_upstream().await;
    let port = echo.port();
    let h = setup(policy(&[class("tun", "tunnel.test", port)]))
        .resolve("tunnel.test")
        .start();

    let (mut tunnel, answer) = open_tunnel(h.proxy, &format!("tunnel.test:{port}")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tunnel
        .write_all(b"GET / HTTP/1.1\r\nHost: tunnel.test\r\n\r\n")
        .await
        .unwrap();
    closed_without_answer(&mut tunnel).await;

    let decision = h.env.one(ReasonCode::EgressMalformedRequest).await;
    assert_eq!(decision.kind, "connect");
    assert_eq!(connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_with_matching_sni_tunnels_bytes_both_ways() {
    let (echo, connections) = echo_upstream().await;
    let port = echo.port();
    let h = setup(policy(&[class("tun", "tunnel.test", port)]))
        .resolve("tunnel.test")
        .start();

    let (mut tunnel, answer) = open_tunnel(h.proxy, &format!("tunnel.test:{port}")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let hello = client_hello("tunnel.test");
    tunnel.write_all(&hello).await.unwrap();
    let mut echoed = vec![0; hello.len()];
    within("the echoed ClientHello", tunnel.read_exact(&mut echoed))
        .await
        .unwrap();
    assert_eq!(echoed, hello);

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let (mut read, mut write) = tunnel.into_split();
    let writer = {
        let payload = payload.clone();
        tokio::spawn(async move {
            write.write_all(&payload).await.unwrap();
            write.shutdown().await.unwrap();
        })
    };
    let mut back = Vec::new();
    within(
        "the echoed payload and the end",
        read.read_to_end(&mut back),
    )
    .await
    .unwrap();
    within("the writer", writer).await.unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "the tunnel altered bytes");
    assert_eq!(connections.load(Ordering::SeqCst), 1);

    let decision = h.env.one(ReasonCode::EgressAllowed).await;
    let total = (hello.len() + payload.len()) as u64;
    assert_eq!(decision.kind, "connect");
    assert_eq!(decision.host, "tunnel.test");
    assert_eq!(decision.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(decision.service_class.as_deref(), Some("tun"));
    assert_eq!(decision.bytes_sent, total);
    assert_eq!(decision.bytes_received, total);
}

// ---------------------------------------------------------------------------------------
// 8. Intercepted TLS.

/// CONNECT, then TLS with the gateway trusting its CA; returns the TLS stream.
async fn intercepted_tunnel(
    h: &Harness,
    host: &str,
    port: u16,
) -> BufReader<tokio_rustls::client::TlsStream<TcpStream>> {
    let (tcp, answer) = open_tunnel(h.proxy, &format!("{host}:{port}")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let connector = tokio_rustls::TlsConnector::from(client_config(h.gateway.ca_cert_pem()));
    let tls = within(
        "the TLS handshake with the gateway",
        connector.connect(ServerName::try_from(host.to_owned()).unwrap(), tcp),
    )
    .await
    .expect("the gateway's leaf verifies against its CA");
    BufReader::new(tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_tls_injects_the_credential_towards_a_verified_upstream() {
    let ca = TestCa::new("upstream test CA");
    let up = upstream(
        Some(ca.server_config("secure.test")),
        ok_reply("secret data"),
    )
    .await;
    let port = up.addr.port();
    let h = setup(policy(&[class("secure", "secure.test", port)]))
        .resolve("secure.test")
        .roots(&ca.pem)
        .credential(credential("api-key", "secure", Some("Bearer real"), 3600))
        .start();

    let mut tls = intercepted_tunnel(&h, "secure.test", port).await;
    tls.get_mut()
        .write_all(
            format!(
                "GET /data?q=1 HTTP/1.1\r\nHost: secure.test:{port}\r\nAuthorization: Bearer fake\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let response = read_response(&mut tls, false).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"secret data");

    let requests = up.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target, "/data?q=1");
    assert_eq!(all(&requests[0].headers, "authorization"), ["Bearer real"]);

    let decision = h.env.one(ReasonCode::EgressAllowed).await;
    assert_eq!(decision.kind, "https");
    assert_eq!(decision.host, "secure.test");
    assert_eq!(decision.port, port);
    assert_eq!(decision.path.as_deref(), Some("/data"));
    assert_eq!(decision.credential.as_deref(), Some("api-key"));
    assert_eq!(decision.status, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_tls_to_an_untrusted_upstream_certificate_answers_502_inside_the_tunnel() {
    let trusted = TestCa::new("upstream test CA");
    let rogue = TestCa::new("rogue CA");
    let up = upstream(Some(rogue.server_config("secure.test")), ok_reply("no")).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("secure", "secure.test", port)]))
        .resolve("secure.test")
        .roots(&trusted.pem)
        .credential(credential("api-key", "secure", Some("Bearer real"), 3600))
        .start();

    let mut tls = intercepted_tunnel(&h, "secure.test", port).await;
    tls.get_mut()
        .write_all(format!("GET /data HTTP/1.1\r\nHost: secure.test:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let response = read_response(&mut tls, false).await;
    assert_eq!(response.status, 502);
    assert_eq!(response.reason(), Some("EGRESS_UPSTREAM_TLS_FAILED"));

    assert!(
        up.requests().is_empty(),
        "no request over an unverified TLS"
    );
    let decision = h.env.one(ReasonCode::EgressUpstreamTlsFailed).await;
    assert_eq!(decision.kind, "https");
    assert_eq!(decision.status, Some(502));
    assert_eq!(decision.credential, None);
}

// ---------------------------------------------------------------------------------------
// 9. The transparent port 80.

async fn transparent(h: &Harness, request: &str) -> Response {
    Client::connect(h.http)
        .await
        .request(request.as_bytes())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_http_refuses_hosts_outside_the_policy_and_requests_without_host() {
    let h = setup(policy(&[class("web", "web.test", 80)]))
        .resolve("web.test")
        .start();

    let response = transparent(&h, "GET /x HTTP/1.1\r\nHost: elsewhere.test\r\n\r\n").await;
    assert_eq!(response.status, 403);
    assert_eq!(response.reason(), Some("EGRESS_DESTINATION_NOT_ALLOWED"));
    let decision = h.env.one(ReasonCode::EgressDestinationNotAllowed).await;
    assert_eq!(decision.host, "elsewhere.test");
    assert_eq!(decision.port, 80);
    assert_eq!(decision.kind, "http");

    let response = transparent(&h, "GET /x HTTP/1.1\r\n\r\n").await;
    assert_eq!(response.status, 403);
    assert_eq!(response.reason(), Some("EGRESS_MALFORMED_REQUEST"));
    h.env.one(ReasonCode::EgressMalformedRequest).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_http_decides_by_host_and_targets_port_80_of_the_resolved_name() {
    // Port 80 cannot be bound here; protecting 127.0.0.1:80 shows where the request was
    // headed without dialling it.
    let h = setup(policy(&[class("web", "web.test", 80)]))
        .resolve("web.test")
        .protect(SocketAddr::from((Ipv4Addr::LOCALHOST, 80)))
        .start();

    let response = transparent(&h, "GET /page?x=1 HTTP/1.1\r\nHost: web.test\r\n\r\n").await;
    assert_eq!(response.status, 403);
    assert_eq!(response.reason(), Some("EGRESS_NON_PUBLIC_ADDRESS"));
    let decision = h.env.one(ReasonCode::EgressNonPublicAddress).await;
    assert_eq!(decision.host, "web.test");
    assert_eq!(decision.port, 80);
    assert_eq!(decision.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(decision.path.as_deref(), Some("/page"));

    // CONNECT belongs to the proxy port only.
    let response = transparent(
        &h,
        "CONNECT web.test:443 HTTP/1.1\r\nHost: web.test:443\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 403);
    assert_eq!(response.reason(), Some("EGRESS_MALFORMED_REQUEST"));
}

// ---------------------------------------------------------------------------------------
// 10. The in-sandbox resolver.

fn dns_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut packet = Vec::new();
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    packet.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        packet.push(u8::try_from(label.len()).unwrap());
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&cordon_egress::dns::CLASS_IN.to_be_bytes());
    packet
}

struct DnsAnswer {
    id: u16,
    flags: u16,
    answers: u16,
    packet: Vec<u8>,
}

impl DnsAnswer {
    fn rcode(&self) -> u8 {
        (self.flags & 0x000f) as u8
    }
}

async fn ask(socket: &UdpSocket, packet: &[u8], wait: Duration) -> Option<DnsAnswer> {
    socket.send(packet).await.unwrap();
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(wait, socket.recv(&mut buf))
        .await
        .ok()?
        .unwrap();
    let packet = buf[..n].to_vec();
    assert!(packet.len() >= 12, "short DNS answer {packet:?}");
    Some(DnsAnswer {
        id: u16::from_be_bytes([packet[0], packet[1]]),
        flags: u16::from_be_bytes([packet[2], packet[3]]),
        answers: u16::from_be_bytes([packet[6], packet[7]]),
        packet,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_answers_a_with_loopback_aaaa_with_nothing_and_garbage_with_formerr() {
    let h = setup(policy(&[class("web", "web.test", 80)])).start();
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(h.dns).await.unwrap();

    let a = ask(&socket, &dns_query(0x1234, "example.com", 1), WAIT)
        .await
        .expect("an answer to A");
    assert_eq!(a.id, 0x1234);
    assert_ne!(a.flags & 0x8000, 0, "QR");
    assert_eq!(a.rcode(), cordon_egress::dns::RCODE_NOERROR);
    assert_eq!(a.answers, 1);
    let rdata = &a.packet[a.packet.len() - 4..];
    assert_eq!(rdata, [127, 0, 0, 1]);
    let ttl = &a.packet[a.packet.len() - 10..a.packet.len() - 6];
    assert!(u32::from_be_bytes(ttl.try_into().unwrap()) > 0);

    let aaaa = ask(&socket, &dns_query(0x2222, "example.com", 28), WAIT)
        .await
        .expect("an answer to AAAA");
    assert_eq!(aaaa.id, 0x2222);
    assert_eq!(aaaa.rcode(), cordon_egress::dns::RCODE_NOERROR);
    assert_eq!(aaaa.answers, 0);

    // A header-sized packet that is no valid query: FORMERR.
    let mut two_questions = dns_query(0x3333, "example.com", 1);
    two_questions[5] = 2;
    let formerr = ask(&socket, &two_questions, WAIT)
        .await
        .expect("FORMERR for a malformed query");
    assert_eq!(formerr.id, 0x3333);
    assert_eq!(formerr.rcode(), cordon_egress::dns::RCODE_FORMERR);
    assert_eq!(formerr.answers, 0);

    // Shorter than a header: no answer at all, and the resolver survives it.
    let silence = ask(&socket, b"\x01\x02\x03", Duration::from_millis(300)).await;
    assert!(silence.is_none());
    let mut junk = vec![0xffu8; 40];
    junk[2] = 0x01; // QR clear
    let _ = ask(&socket, &junk, Duration::from_millis(300)).await;

    let again = ask(&socket, &dns_query(0x4444, "Example.COM", 1), WAIT)
        .await
        .expect("the resolver still answers");
    assert_eq!(again.id, 0x4444);
    assert_eq!(again.answers, 1);
}

// ---------------------------------------------------------------------------------------
// 11. Detach.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_refuses_new_connections_and_cuts_open_tunnels() {
    let (echo, _) = echo_upstream().await;
    let port = echo.port();
    let h = setup(policy(&[class("tun", "tunnel.test", port)]))
        .resolve("tunnel.test")
        .start();

    let (mut tunnel, answer) = open_tunnel(h.proxy, &format!("tunnel.test:{port}")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let hello = client_hello("tunnel.test");
    tunnel.write_all(&hello).await.unwrap();
    let mut echoed = vec![0; hello.len()];
    within("the echo", tunnel.read_exact(&mut echoed))
        .await
        .unwrap();
    assert_eq!(echoed, hello);

    assert!(h.gateway.is_attached(h.key.session_id));
    h.gateway.detach(h.key.session_id);
    assert!(!h.gateway.is_attached(h.key.session_id));

    closed_without_answer(&mut tunnel).await;

    // New connections: refused once the listener is gone; any accepted in between is
    // closed without an answer.
    let deadline = Instant::now() + RECORD_WAIT;
    let mut refused = false;
    while Instant::now() < deadline {
        match TcpStream::connect(h.proxy).await {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(mut stream) => {
                let _ = stream
                    .write_all(
                        format!(
                            "GET http://tunnel.test:{port}/ HTTP/1.1\r\nHost: tunnel.test:{port}\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                closed_without_answer(&mut stream).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the proxy listener still accepts after detach");
}

// ---------------------------------------------------------------------------------------
// 12. Connection limit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_session_limit_are_closed_without_service() {
    let started = Instant::now();
    let h = setup(policy(&[class("web", "web.test", 80)])).start();
    let limit = cordon_egress::gateway::MAX_CONNECTIONS_PER_SESSION;
    let refused_request = "GET http://nowhere.test/ HTTP/1.1\r\nHost: nowhere.test\r\n\r\n";

    let mut held = Vec::with_capacity(limit);
    for _ in 0..limit {
        held.push(Client::connect(h.proxy).await);
    }
    // Accepted in order: the one past the limit is dropped at once.
    let mut extra = Client::connect(h.proxy).await;
    extra.send(refused_request.as_bytes()).await;
    closed_without_answer(extra.io.get_mut()).await;

    // The last connection within the limit is served.
    let mut last = held.pop().unwrap();
    let response = last.request(refused_request.as_bytes()).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.reason(), Some("EGRESS_DESTINATION_NOT_ALLOWED"));
    drop(last);

    // Its slot comes back once the gateway is done with it.
    let deadline = Instant::now() + RECORD_WAIT;
    loop {
        let mut client = Client::connect(h.proxy).await;
        client.send(refused_request.as_bytes()).await;
        match within("a new connection", read_head(&mut client.io)).await {
            Some((line, _)) => {
                assert!(line.starts_with("HTTP/1.1 403"), "{line}");
                break;
            }
            None => {
                assert!(Instant::now() < deadline, "a freed slot was never reused");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    drop(held);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Beyond the list: leases on reused and intercepted connections, framing ambiguity,
// the transparent TLS port, report mode, stale upstream connections.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_upstream_connection_injects_again_and_refuses_once_the_lease_expires() {
    let up = upstream(None, ok_reply("ok")).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("svc", "svc.test", port)]))
        .resolve("svc.test")
        .credential(credential("svc-token", "svc", Some("Bearer real"), 3600))
        .start();
    let request = format!("GET http://svc.test:{port}/x HTTP/1.1\r\nHost: svc.test:{port}\r\n\r\n");

    let mut client = h.client().await;
    assert_eq!(client.request(request.as_bytes()).await.status, 200);
    assert_eq!(client.request(request.as_bytes()).await.status, 200);
    h.env.set_credentials(vec![credential(
        "svc-token",
        "svc",
        Some("Bearer real"),
        -1,
    )]);
    let refused = client.request(request.as_bytes()).await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.reason(), Some("EGRESS_CREDENTIAL_LEASE_EXPIRED"));

    let requests = up.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(all(&r.headers, "authorization"), ["Bearer real"]);
    }
    assert_eq!(up.connections(), 1);
    let allowed = h
        .env
        .wait_for(2, |d| d.reason == ReasonCode::EgressAllowed)
        .await;
    assert!(
        allowed
            .iter()
            .all(|d| d.credential.as_deref() == Some("svc-token"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_tls_with_an_expired_lease_refuses_inside_the_tunnel() {
    let ca = TestCa::new("upstream test CA");
    let up = upstream(Some(ca.server_config("secure.test")), ok_reply("no")).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("secure", "secure.test", port)]))
        .resolve("secure.test")
        .roots(&ca.pem)
        .credential(credential("api-key", "secure", Some("Bearer real"), -1))
        .start();

    let mut tls = intercepted_tunnel(&h, "secure.test", port).await;
    tls.get_mut()
        .write_all(format!("GET /data HTTP/1.1\r\nHost: secure.test:{port}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let response = read_response(&mut tls, false).await;
    assert_eq!(response.status, 403);
    assert_eq!(response.reason(), Some("EGRESS_CREDENTIAL_LEASE_EXPIRED"));
    let decision = h.env.one(ReasonCode::EgressCredentialLeaseExpired).await;
    assert_eq!(decision.kind, "https");
    assert_eq!(up.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_and_host_mismatch_are_refused_as_malformed() {
    let up = upstream(None, ok_reply("ok")).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("api", "api.test", port)]))
        .resolve("api.test")
        .start();
    let cases = [
        format!(
            "POST http://api.test:{port}/ HTTP/1.1\r\nHost: api.test:{port}\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
        ),
        format!(
            "POST http://api.test:{port}/ HTTP/1.1\r\nHost: api.test:{port}\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab"
        ),
        format!("GET http://api.test:{port}/ HTTP/1.1\r\nHost: other.test\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n"),
    ];
    for case in &cases {
        let response = h.client().await.request(case.as_bytes()).await;
        assert_eq!(response.status, 403, "{case}");
        assert_eq!(
            response.reason(),
            Some("EGRESS_MALFORMED_REQUEST"),
            "{case}"
        );
    }
    let denials = h
        .env
        .wait_for(cases.len(), |d| {
            d.reason == ReasonCode::EgressMalformedRequest
        })
        .await;
    assert_eq!(denials.len(), cases.len());
    assert_eq!(up.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_tls_port_closes_connections_for_names_outside_the_policy() {
    let h = setup(policy(&[class("web", "web.test", 443)]))
        .resolve("web.test")
        .start();
    let mut stream = within("connect", TcpStream::connect(h.https))
        .await
        .unwrap();
    stream
        .write_all(&client_hello("elsewhere.test"))
        .await
        .unwrap();
    closed_without_answer(&mut stream).await;
    let decision = h.env.one(ReasonCode::EgressDestinationNotAllowed).await;
    assert_eq!(decision.kind, "tls");
    assert_eq!(decision.host, "elsewhere.test");
    assert_eq!(decision.port, 443);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_mode_forwards_what_it_would_refuse_and_records_why() {
    let up = upstream(None, ok_reply("ok")).await;
    let port = up.addr.port();
    // The class allows GET only; the rule reports instead of enforcing.
    let policy = format!(
        r#"{{"service_classes":[{{"name":"api","hosts":["api.test"],"ports":[{port}],"methods":["GET"],"address_ranges":["127.0.0.1/32"]}}],
            "rules":[{{"name":"trial","service_classes":["api"],"environments":["*"],"workload_classes":["*"],"mode":"report"}}]}}"#
    );
    let h = setup(policy).resolve("api.test").start();
    let mut denials = h.gateway.subscribe_denials();

    let response = h
        .client()
        .await
        .request(
            format!(
                "DELETE http://api.test:{port}/thing HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(up.requests().len(), 1);
    let decision = h.env.one(ReasonCode::EgressMethodNotAllowed).await;
    assert_eq!(decision.mode, "report");
    assert_eq!(decision.rule.as_deref(), Some("trial"));
    assert_eq!(decision.status, Some(200));
    assert!(
        denials.try_recv().is_err(),
        "a reported pass is not a denial"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_recovers_when_the_upstream_closed_its_idle_connection() {
    // The upstream answers without `connection: close` and then closes, as servers do
    // with idle connections. The next request of the client's conversation must still
    // be served (on a new upstream connection), not answered 502.
    let up = upstream_closing(None, ok_reply("ok"), true).await;
    let port = up.addr.port();
    let h = setup(policy(&[class("api", "api.test", port)]))
        .resolve("api.test")
        .start();
    let request = format!("GET http://api.test:{port}/ HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n");

    let mut client = h.client().await;
    assert_eq!(client.request(request.as_bytes()).await.status, 200);
    // Let the upstream's close arrive before the next request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = client.request(request.as_bytes()).await;
    assert_eq!(
        second.status,
        200,
        "reason {:?}; decisions {:#?}",
        second.reason(),
        h.env.decisions()
    );
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interim_responses_do_not_carry_upstream_cordon_or_hop_by_hop_headers() {
    let up = upstream(
        None,
        Arc::new(|_| {
            b"HTTP/1.1 103 Early Hints\r\nx-cordon-reason: FORGED\r\nconnection: x-foo\r\nx-foo: 1\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                .to_vec()
        }),
    )
    .await;
    let port = up.addr.port();
    let h = setup(policy(&[class("api", "api.test", port)]))
        .resolve("api.test")
        .start();

    let mut client = h.client().await;
    client
        .send(
            format!("GET http://api.test:{port}/ HTTP/1.1\r\nHost: api.test:{port}\r\n\r\n")
                .as_bytes(),
        )
        .await;
    let interim = client.response().await;
    assert_eq!(interim.status, 103);
    assert_eq!(interim.header("link"), Some("</a.css>"));
    let last = client.response().await;
    assert_eq!(last.status, 200);
    assert_eq!(last.body, b"ok");
    assert_eq!(
        interim.reason(),
        None,
        "forged reason in {:?}",
        interim.headers
    );
    assert_eq!(interim.header("x-foo"), None, "{:?}", interim.headers);
    assert_eq!(interim.header("connection"), None, "{:?}", interim.headers);
}

/// The refusals that name the check that failed: scheme, method (enforced), a name with
/// no address (502), an upstream that refuses the connection (502). None reaches an
/// upstream, each is recorded with its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheme_method_dns_and_upstream_failures_are_refused_with_their_codes() {
    let up = upstream(None, ok_reply("ok")).await;
    let port = up.addr.port();
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let policy = format!(
        r#"{{"service_classes":[
            {{"name":"tls-only","hosts":["secure.test"],"ports":[{port}],"schemes":["https"],"address_ranges":["127.0.0.1/32"]}},
            {{"name":"read-only","hosts":["api.test"],"ports":[{port}],"methods":["GET"],"address_ranges":["127.0.0.1/32"]}},
            {{"name":"nowhere","hosts":["gone.test"],"ports":[{port}],"address_ranges":["127.0.0.1/32"]}},
            {{"name":"closed","hosts":["closed.test"],"ports":[{closed}],"address_ranges":["127.0.0.1/32"]}}],
          "rules":[{{"name":"r","service_classes":["tls-only","read-only","nowhere","closed"],"environments":["*"],"workload_classes":["*"]}}]}}"#
    );
    let h = setup(policy)
        .resolve("secure.test")
        .resolve("api.test")
        .resolve("closed.test")
        .unresolvable("gone.test")
        .start();
    let cases = [
        (
            format!("GET http://secure.test:{port}/ HTTP/1.1\r\nHost: secure.test:{port}\r\n\r\n"),
            403,
            ReasonCode::EgressSchemeNotAllowed,
        ),
        (
            format!(
                "POST http://api.test:{port}/ HTTP/1.1\r\nHost: api.test:{port}\r\nContent-Length: 0\r\n\r\n"
            ),
            403,
            ReasonCode::EgressMethodNotAllowed,
        ),
        (
            format!("GET http://gone.test:{port}/ HTTP/1.1\r\nHost: gone.test:{port}\r\n\r\n"),
            502,
            ReasonCode::EgressDnsFailed,
        ),
        (
            format!(
                "GET http://closed.test:{closed}/ HTTP/1.1\r\nHost: closed.test:{closed}\r\n\r\n"
            ),
            502,
            ReasonCode::EgressUpstreamFailed,
        ),
    ];
    for (request, status, reason) in cases {
        let response = h.client().await.request(request.as_bytes()).await;
        assert_eq!(response.status, status, "{request}");
        assert_eq!(response.reason(), Some(reason.as_str()), "{request}");
        let decision = h.env.one(reason).await;
        assert_eq!(decision.mode, "enforce");
    }
    assert_eq!(up.connections(), 0);
}
