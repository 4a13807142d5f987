//! The egress gateway through the real binary, from inside real sandboxes: the red
//! team's attempts to get out (each refused with its code, and the test servers see no
//! connection), credential injection, and the secret tests.
//!
//! Test upstreams listen on 127.0.0.2 (and 127.0.0.3 or .4 for the transparent ports); the
//! test policy allows exactly those ranges, so every other non-public address stays
//! refused.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::sandbox::{Sandboxed, start_with_args};
use super::{Backend, Place, block_on, on_both_backends};

const PROBE: &str = include_str!("egress_probe.py");
const SECRET: &str = "s3cr3t-VALUE-8c41f07e";

/// Counts the places inside a sandbox that hold `argv[1]` reversed.
const SCAN: &str = r#"
import glob, os, sys
needle = sys.argv[1][::-1].encode()
hits = []
paths = glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline")
for root in ["/workspace", "/tmp", "/etc", "/run", "/dev/shm", "/var"]:
    for folder, _, files in os.walk(root):
        paths += [os.path.join(folder, f) for f in files]
for path in paths:
    try:
        with open(path, "rb") as f:
            if needle in f.read(1 << 20):
                hits.append(path)
    except OSError:
        pass
print(len(hits), *hits)
"#;

/// A loopback HTTP and HTTPS server that records every connection and request head.
struct Upstream {
    http: SocketAddr,
    tls: SocketAddr,
    ca_pem: String,
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl Upstream {
    /// Listens on `ip` (ports as given, 0 for any); the TLS certificate names `name`.
    fn start(ip: &str, http_port: u16, tls_port: u16, name: &str) -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (ca_pem, tls_config) = test_tls(name);
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (http, tls) = runtime.block_on(async {
            let http = tokio::net::TcpListener::bind((ip, http_port))
                .await
                .unwrap();
            let tls = tokio::net::TcpListener::bind((ip, tls_port)).await.unwrap();
            (http, tls)
        });
        let addrs = (http.local_addr().unwrap(), tls.local_addr().unwrap());
        let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
        for (listener, tls) in [(http, false), (tls, true)] {
            let heads = Arc::clone(&heads);
            let connections = Arc::clone(&connections);
            let acceptor = acceptor.clone();
            runtime.spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let heads = Arc::clone(&heads);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if tls {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answer(stream, heads).await;
                            }
                        } else {
                            answer(stream, heads).await;
                        }
                    });
                }
            });
        }
        Upstream {
            http: addrs.0,
            tls: addrs.1,
            ca_pem,
            heads,
            connections,
            _runtime: runtime,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

/// Serves requests on one connection: `/redirect` sends the client to the cloud
/// metadata address, `/echo` returns the request head, anything else a greeting.
async fn answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    heads: Arc<Mutex<Vec<String>>>,
) {
    loop {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        heads.lock().unwrap().push(text.clone());
        let path = text.split(' ').nth(1).unwrap_or("/").to_owned();
        let response = if path == "/redirect" {
            "HTTP/1.1 302 Found\r\nlocation: http://169.254.169.254/latest/meta-data/\r\ncontent-length: 0\r\n\r\n".to_owned()
        } else {
            let body = if path == "/echo" {
                text
            } else {
                "hello from upstream".to_owned()
            };
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nx-cordon-reason: FORGED\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A test CA and a server config for `name` signed by it.
fn test_tls(name: &str) -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "egress test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

/// A server whose policy allows the upstream's ports on 127.0.0.2 by name and address.
struct World {
    sandboxed: Sandboxed,
    upstream: Upstream,
    /// The server's arguments, for a restart.
    args: Vec<String>,
    _files: tempfile::TempDir,
}

fn policy(upstream: &Upstream, extra_classes: Vec<Value>) -> Value {
    let mut classes = vec![
        json!({"name": "test-http", "hosts": ["upstream.test", "127.0.0.2"],
               "ports": [upstream.http.port()], "schemes": ["http"],
               "address_ranges": ["127.0.0.2/32"]}),
        json!({"name": "test-api", "hosts": ["api.test"], "ports": [upstream.tls.port()],
               "schemes": ["https"], "address_ranges": ["127.0.0.2/32"]}),
        json!({"name": "echo", "hosts": ["echo.test"], "ports": [upstream.http.port()],
               "schemes": ["http"], "address_ranges": ["127.0.0.2/32"]}),
        // Allowed by name, but these names resolve to non-public addresses.
        json!({"name": "private-names", "hosts": ["localhost", "private.test"],
               "ports": [upstream.http.port()], "schemes": ["http"]}),
    ];
    classes.extend(extra_classes);
    let names: Vec<Value> = classes.iter().map(|c| c["name"].clone()).collect();
    json!({
        "service_classes": classes,
        "rules": [{"name": "tests", "service_classes": names,
                   "environments": ["*"], "workload_classes": ["*"]}]
    })
}

fn world(backend: Backend) -> World {
    let upstream = Upstream::start("127.0.0.2", 0, 0, "api.test");
    world_with(backend, upstream, vec![], &[])
}

fn world_with(backend: Backend, upstream: Upstream, classes: Vec<Value>, args: &[&str]) -> World {
    let files = tempfile::tempdir().unwrap();
    let policy_file = files.path().join("policy.json");
    std::fs::write(&policy_file, policy(&upstream, classes).to_string()).unwrap();
    let ca_file = files.path().join("upstream-ca.pem");
    std::fs::write(&ca_file, &upstream.ca_pem).unwrap();
    let mut all = vec![
        "--egress-policy",
        policy_file.to_str().unwrap(),
        "--egress-upstream-ca",
        ca_file.to_str().unwrap(),
        "--egress-resolve",
        "upstream.test=127.0.0.2",
        "--egress-resolve",
        "api.test=127.0.0.2",
        "--egress-resolve",
        "echo.test=127.0.0.2",
        "--egress-resolve",
        "private.test=10.0.0.1",
    ];
    all.extend_from_slice(args);
    let sandboxed = start_with_args(Place::with_sandboxes(backend), &all, &[]);
    World {
        sandboxed,
        upstream,
        args: all.iter().map(|a| (*a).to_owned()).collect(),
        _files: files,
    }
}

impl World {
    /// An active session with the probe script in its workspace.
    fn session(&self) -> String {
        let id = self.sandboxed.active_session("default");
        let (status, body) = self.sandboxed.request(
            Method::PUT,
            &format!("/v1/sessions/{id}/files/probe.py"),
            &[],
            Some(PROBE.as_bytes().to_vec()),
            None,
        );
        assert!(
            status == 200 || status == 201,
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        id
    }

    /// Runs the probe inside the sandbox; returns its one line of output.
    fn probe(&self, id: &str, args: &[&str]) -> String {
        let mut argv = vec!["python3", "/workspace/probe.py"];
        argv.extend_from_slice(args);
        let result = self.sandboxed.exec(id, json!({"argv": argv}));
        assert_eq!(result["exit_code"], 0, "probe {args:?} failed: {result}");
        result["stdout"].as_str().unwrap().trim().to_owned()
    }

    fn decisions(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.sandboxed.json(
            Method::GET,
            &format!("/v1/egress/decisions?session={id}&limit=500"),
            None,
        );
        assert_eq!(status, 200, "{body}");
        body["decisions"].as_array().unwrap().clone()
    }

    /// Kills the server with SIGKILL and starts it again on the same state.
    fn restart(self) -> World {
        let World {
            sandboxed,
            upstream,
            args,
            _files,
        } = self;
        let place = sandboxed.server.kill9();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        World {
            sandboxed: start_with_args(place, &argv, &[]),
            upstream,
            args,
            _files,
        }
    }

    /// The first decision of the session matching `matches`, waiting up to 10 s for it
    /// (allowed requests are recorded in batches, after their answer).
    fn decision_where(&self, id: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let decisions = self.decisions(id);
            if let Some(found) = decisions.iter().find(|d| matches(d)) {
                return found.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no such decision among {decisions:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn upstream_url(&self, path: &str) -> String {
        format!("http://upstream.test:{}{path}", self.upstream.http.port())
    }
}

/// Each attempt is refused with its code, and the upstream sees no connection.
fn red_team(backend: Backend) {
    let w = world(backend);
    let id = w.session();
    let port = w.upstream.http.port();
    let tls_port = w.upstream.tls.port();

    // The allowed path works, and upstream headers cannot speak for the gateway.
    let allowed = w.probe(&id, &["get", &w.upstream_url("/hello")]);
    assert_eq!(allowed, "200 - hello from upstream");
    let seen = w.upstream.connections();
    assert_eq!(seen, 1, "{:?}", w.upstream.heads());

    let refused: Vec<(Vec<String>, &str)> = vec![
        // IP literals in every encoding of loopback, and loopback itself.
        (
            get(&format!("http://0x7f000001:{port}/")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get(&format!("http://2130706433:{port}/")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get(&format!("http://127.1:{port}/")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get(&format!("http://0177.0.0.1:{port}/")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get(&format!("http://[::ffff:127.0.0.1]:{port}/")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get(&format!("http://[::1]:{port}/")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get(&format!("http://0x7f000002:{port}/")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        // Names the policy allows that resolve to non-public addresses.
        (
            get(&format!("http://localhost:{port}/")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get(&format!("http://private.test:{port}/")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        // Cloud metadata, by address.
        (
            get("http://169.254.169.254/latest/meta-data/"),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get("http://[fd00:ec2::254]/latest/"),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get("http://100.100.100.200/"),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        // IPv6 forms that embed a private IPv4 address: NAT64, 6to4.
        (
            get("http://[64:ff9b::a00:1]/"),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        (
            get("http://[2002:a00:1::]/"),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        // A redirect to the metadata address: the client follows, the gateway decides
        // the second hop again.
        (
            get(&w.upstream_url("/redirect")),
            "403 EGRESS_NON_PUBLIC_ADDRESS",
        ),
        // Hosts and ports nobody allowed.
        (
            get("http://example.com/"),
            "403 EGRESS_DESTINATION_NOT_ALLOWED",
        ),
        (
            get(&format!(
                "http://upstream.test:{}/",
                port.wrapping_add(1).max(1)
            )),
            "403 EGRESS_PORT_NOT_ALLOWED",
        ),
        // CONNECT to a port the class does not list, and to a host nobody allowed.
        (
            args(&["connect", "api.test:22", "api.test"]),
            "403 EGRESS_PORT_NOT_ALLOWED",
        ),
        (
            args(&["connect", "example.com:443", "example.com"]),
            "403 EGRESS_DESTINATION_NOT_ALLOWED",
        ),
        // Host header against the absolute URI.
        (
            raw(&format!(
                "GET http://upstream.test:{port}/ HTTP/1.1\\r\\nHost: evil.test\\r\\n\\r\\n"
            )),
            "403 EGRESS_MALFORMED_REQUEST",
        ),
        // Smuggling: both framings, two lengths, an obfuscated coding.
        (
            raw(&format!(
                "POST http://upstream.test:{port}/ HTTP/1.1\\r\\nHost: upstream.test:{port}\\r\\nContent-Length: 4\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n"
            )),
            "403 EGRESS_MALFORMED_REQUEST",
        ),
        (
            raw(&format!(
                "POST http://upstream.test:{port}/ HTTP/1.1\\r\\nHost: upstream.test:{port}\\r\\nContent-Length: 4\\r\\nContent-Length: 5\\r\\n\\r\\nabcde"
            )),
            "403 EGRESS_MALFORMED_REQUEST",
        ),
        (
            raw(&format!(
                "POST http://upstream.test:{port}/ HTTP/1.1\\r\\nHost: upstream.test:{port}\\r\\nTransfer-Encoding: chunked, identity\\r\\n\\r\\n"
            )),
            "403 EGRESS_MALFORMED_REQUEST",
        ),
        // Origin-form to the proxy (a client that thinks the proxy is the server).
        (
            raw("GET /v1/sessions HTTP/1.1\\r\\nHost: upstream.test\\r\\n\\r\\n"),
            "403 EGRESS_MALFORMED_REQUEST",
        ),
    ];
    for (argv, expected) in &refused {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        assert_eq!(&w.probe(&id, &argv), expected, "{argv:?}");
    }
    // The control plane itself, through the proxy: a loopback address.
    let control = format!("http://127.0.0.1:{}/v1/sessions", w.sandboxed.server.port);
    assert_eq!(
        w.probe(&id, &["get", &control]),
        "403 EGRESS_NON_PUBLIC_ADDRESS"
    );

    // SNI that differs from the CONNECT host: the tunnel is cut before any upstream
    // connection.
    let sni = w.probe(
        &id,
        &["connect", &format!("api.test:{tls_port}"), "evil.test"],
    );
    assert!(sni.starts_with("tls-error"), "{sni}");

    // Around the proxy: sockets straight at the upstream or the internet, a resolver of
    // our own, and a tool that ignores the proxy variables.
    assert_eq!(
        w.probe(&id, &["direct", "127.0.0.2", &port.to_string()]),
        "error 111"
    );
    assert_eq!(w.probe(&id, &["direct", "1.1.1.1", "80"]), "error 101");
    assert_eq!(w.probe(&id, &["dns", "8.8.8.8"]), "error 101");
    assert_eq!(w.probe(&id, &["resolve", "anything.example"]), "127.0.0.1");
    let unproxied = w.probe(&id, &["get-noproxy", &w.upstream_url("/")]);
    assert!(unproxied.starts_with("error"), "{unproxied}");

    // One allowed connection among them: the redirect's first hop.
    assert_eq!(
        w.upstream.connections(),
        seen + 1,
        "the upstream saw connections from refused attempts: {:?}",
        w.upstream.heads()
    );

    // Every decision is recorded with its reason; denials are counted by reason.
    let allowed = w.decision_where(&id, |d| d["reason"] == "EGRESS_ALLOWED");
    let decisions = w.decisions(&id);
    let reasons: Vec<&str> = decisions
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    for code in [
        "EGRESS_ALLOWED",
        "EGRESS_NON_PUBLIC_ADDRESS",
        "EGRESS_DESTINATION_NOT_ALLOWED",
        "EGRESS_PORT_NOT_ALLOWED",
        "EGRESS_MALFORMED_REQUEST",
        "EGRESS_SNI_MISMATCH",
    ] {
        assert!(reasons.contains(&code), "no {code} among {reasons:?}");
    }
    assert_eq!(allowed["host"], "upstream.test");
    assert_eq!(allowed["address"], "127.0.0.2");
    assert_eq!(allowed["path"], "/hello");
    assert_eq!(allowed["status"], 200);
    assert!(allowed["bytes_received"].as_u64().unwrap() > 0);
    let metrics = block_on(async {
        reqwest::get(format!("{}/metrics", w.sandboxed.server.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains("cordon_egress_denials_total{reason=\"EGRESS_NON_PUBLIC_ADDRESS\"}"),
        "{metrics}"
    );
}

fn get(url: &str) -> Vec<String> {
    args(&["get", url])
}

fn raw(request: &str) -> Vec<String> {
    args(&["raw", request])
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A leased secret is injected on the way out (over TLS the gateway intercepts), and
/// the sandbox never holds it.
fn leased_credentials(backend: Backend) {
    let w = world(backend);
    let id = w.session();
    let s = &w.sandboxed;
    let (status, secret) = s.json(
        Method::POST,
        "/v1/secrets",
        Some(json!({"name": "api-token", "service_class": "test-api",
                    "header": "Authorization", "format": "Bearer {secret}", "value": SECRET})),
    );
    assert_eq!(status, 201, "{secret}");
    assert!(!secret.to_string().contains(SECRET));

    let url = format!("https://api.test:{}/whoami", w.upstream.tls.port());
    // Without a lease the tunnel is blind: the sandbox meets the upstream's own
    // certificate (from a CA it does not trust), not one from the gateway.
    let blind = w.probe(&id, &["get", &url]);
    assert!(blind.contains("CERTIFICATE_VERIFY_FAILED"), "{blind}");

    let (status, lease) = s.json(
        Method::POST,
        &format!("/v1/sessions/{id}/leases"),
        Some(json!({"secret": "api-token"})),
    );
    assert_eq!(status, 201, "{lease}");
    // The sandbox's own Authorization header is replaced, not kept beside it.
    let forged = json!({"Authorization": "Bearer forged-by-the-sandbox"}).to_string();
    assert_eq!(
        w.probe(&id, &["get", &url, &forged]),
        "200 - hello from upstream"
    );
    let last = w.upstream.heads().last().unwrap().to_ascii_lowercase();
    assert!(
        last.contains(&format!(
            "authorization: bearer {}",
            SECRET.to_ascii_lowercase()
        )),
        "{last}"
    );
    assert!(!last.contains("forged"), "{last}");

    // A host the secret is not bound to never sees it, and neither does the sandbox.
    let echo = format!("http://echo.test:{}/echo", w.upstream.http.port());
    let echoed = w.probe(&id, &["get", &echo, &forged]);
    assert!(echoed.starts_with("200"), "{echoed}");
    assert!(!echoed.contains(SECRET), "{echoed}");
    let env = w.probe(&id, &["env"]);
    assert!(!env.contains(SECRET));
    assert!(
        env.contains("\"HTTPS_PROXY\": \"http://127.0.0.1:3128\""),
        "{env}"
    );
    // Scans the sandbox's files, environments and command lines for the value. The
    // scanner gets it reversed, so its own command line does not hold it.
    let reversed: String = SECRET.chars().rev().collect();
    let everywhere = s.exec(&id, json!({"argv": ["python3", "-c", SCAN, reversed]}));
    assert_eq!(
        everywhere["stdout"].as_str().unwrap().trim(),
        "0",
        "{everywhere}"
    );

    let injected = w.decision_where(&id, |d| d["credential"] == "api-token");
    assert_eq!(injected["reason"], "EGRESS_ALLOWED");
    let decisions = w.decisions(&id);
    let injected = decisions
        .iter()
        .filter(|d| d["credential"] == "api-token")
        .count();
    assert_eq!(injected, 1, "{decisions:?}");

    // Revoked: the destination needs the credential, so the request is refused rather
    // than sent without it.
    let lease_id = lease["id"].as_str().unwrap();
    let (status, _) = s.json(
        Method::DELETE,
        &format!("/v1/sessions/{id}/leases/{lease_id}"),
        None,
    );
    assert_eq!(status, 200);
    let before = w.upstream.heads().len();
    assert_eq!(
        w.probe(&id, &["get", &url]),
        "403 EGRESS_CREDENTIAL_LEASE_EXPIRED"
    );
    assert_eq!(w.upstream.heads().len(), before);

    // A short lease expires on time.
    let (status, _) = s.json(
        Method::POST,
        &format!("/v1/sessions/{id}/leases"),
        Some(json!({"secret": "api-token", "ttl_seconds": 2})),
    );
    assert_eq!(status, 201);
    assert_eq!(w.probe(&id, &["get", &url]), "200 - hello from upstream");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        w.probe(&id, &["get", &url]),
        "403 EGRESS_CREDENTIAL_LEASE_EXPIRED"
    );

    // Suspend revokes every lease of the session.
    let (status, _) = s.json(
        Method::POST,
        &format!("/v1/sessions/{id}/leases"),
        Some(json!({"secret": "api-token"})),
    );
    assert_eq!(status, 201);
    s.server.cli(&["session", "suspend", &id]).success();
    let (_, leases) = s.json(Method::GET, &format!("/v1/sessions/{id}/leases"), None);
    let leases = leases["items"].as_array().unwrap();
    assert!(
        leases.iter().all(|l| !l["revoked_at"].is_null()),
        "{leases:?}"
    );
    s.server.cli(&["session", "resume", &id]).success();
    assert_eq!(
        w.probe(&id, &["get", &url]),
        "403 EGRESS_CREDENTIAL_LEASE_EXPIRED"
    );
    // Still governed after the resume: the policy applies as before.
    assert_eq!(
        w.probe(&id, &["get", "http://example.com/"]),
        "403 EGRESS_DESTINATION_NOT_ALLOWED"
    );
}

/// Tools that ignore the proxy variables reach ports 80 and 443 by name through the
/// in-sandbox resolver, and are governed the same way.
fn transparent_ports(backend: Backend) {
    // Ports 80 and 443 are fixed, so each backend's run takes an address of its own.
    let ip = match backend {
        Backend::Sqlite => "127.0.0.3",
        Backend::Postgres => "127.0.0.4",
    };
    let upstream = Upstream::start(ip, 80, 443, "web.test");
    let classes = vec![
        json!({"name": "web", "hosts": ["web.test"], "ports": [80, 443],
                              "address_ranges": [format!("{ip}/32")]}),
    ];
    let resolve = format!("web.test={ip}");
    let w = world_with(backend, upstream, classes, &["--egress-resolve", &resolve]);
    let id = w.session();
    assert_eq!(
        w.probe(&id, &["get-noproxy", "http://web.test/"]),
        "200 - hello from upstream"
    );
    // A blind tunnel: the upstream's own headers arrive as they are (the gateway strips
    // forged `x-cordon-*` headers only from responses it reads).
    assert_eq!(
        w.probe(&id, &["tls-direct", "web.test", "443", "web.test"]),
        "tls 200 FORGED"
    );
    let seen = w.upstream.connections();
    assert_eq!(seen, 2);
    // A name nobody allowed, on either port: refused, nothing reaches the upstream.
    assert_eq!(
        w.probe(&id, &["get-noproxy", "http://other.test/"]),
        "403 EGRESS_DESTINATION_NOT_ALLOWED"
    );
    let tls = w.probe(&id, &["tls-direct", "other.test", "443", "other.test"]);
    assert!(tls.starts_with("tls-error"), "{tls}");
    assert_eq!(w.upstream.connections(), seen);
}

/// A tenant's own policy, stored through the API, replaces the file's at once; a rule
/// in report mode forwards what it would refuse and records why.
fn policy_through_the_api(backend: Backend) {
    let w = world(backend);
    let id = w.session();
    let port = w.upstream.http.port();
    let other_port = port.wrapping_add(1).max(1);
    let s = &w.sandboxed;
    // Enforce: the upstream's real port is not listed.
    let document = json!({
        "service_classes": [{"name": "up", "hosts": ["upstream.test"], "ports": [other_port],
                             "address_ranges": ["127.0.0.2/32"]}],
        "rules": [{"name": "strict", "service_classes": ["up"], "environments": ["*"],
                   "workload_classes": ["*"]}]
    });
    let (status, stored) = s.json(Method::PUT, "/v1/egress/policy", Some(document.clone()));
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["version"], "tenant/1");
    assert_eq!(
        w.probe(&id, &["get", &w.upstream_url("/")]),
        "403 EGRESS_PORT_NOT_ALLOWED"
    );
    let before = w.upstream.connections();
    // The same rule in report mode: forwarded, recorded with the reason it would have had.
    let mut report = document;
    report["rules"][0]["mode"] = json!("report");
    let (status, stored) = s.json(Method::PUT, "/v1/egress/policy", Some(report));
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["version"], "tenant/2");
    assert_eq!(
        w.probe(&id, &["get", &w.upstream_url("/")]),
        "200 - hello from upstream"
    );
    assert_eq!(w.upstream.connections(), before + 1);
    // Report mode never opens non-public addresses.
    assert_eq!(
        w.probe(&id, &["get", &format!("http://localhost:{port}/")]),
        "403 EGRESS_NON_PUBLIC_ADDRESS"
    );
    // Allowed decisions are written in batches after the answer: wait for it.
    let reported = w.decision_where(&id, |d| d["mode"] == "report");
    let refused = w.decision_where(&id, |d| d["host"] == "localhost");
    assert_eq!(refused["reason"], "EGRESS_NON_PUBLIC_ADDRESS");
    assert_eq!(refused["mode"], "enforce", "a refusal is never report-only");
    assert_eq!(reported["reason"], "EGRESS_PORT_NOT_ALLOWED");
    assert_eq!(reported["policy_version"], "tenant/2");
    assert_eq!(reported["rule"], "strict");
    assert_eq!(reported["status"], 200);
    let (status, body) = s.json(
        Method::PUT,
        "/v1/egress/policy",
        Some(
            json!({"rules": [{"name": "r", "service_classes": ["missing"],
                               "environments": ["*"], "workload_classes": ["*"]}]}),
        ),
    );
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "EGRESS_POLICY_INVALID", "{body}");
}

/// After `kill -9` and a restart, the server serves the running sandbox's egress again.
fn egress_survives_restart(backend: Backend) {
    let w = world(backend);
    let id = w.session();
    assert_eq!(
        w.probe(&id, &["get", &w.upstream_url("/")]),
        "200 - hello from upstream"
    );
    let w = w.restart();
    assert_eq!(
        w.probe(&id, &["get", &w.upstream_url("/")]),
        "200 - hello from upstream"
    );
    // A real tool through the proxy variables: curl, with a body it announces with
    // `Expect: 100-continue` (the gateway answers the expectation itself).
    let curl = w.sandboxed.ok(
        &id,
        &format!(
            "head -c 200000 /dev/zero > /tmp/body && curl -sS --max-time 20 -o /dev/null -w '%{{http_code}}' \
             -H 'Expect: 100-continue' --data-binary @/tmp/body {}",
            w.upstream_url("/upload")
        ),
    );
    assert_eq!(curl, "200");
    assert_eq!(
        w.probe(&id, &["get", "http://example.com/"]),
        "403 EGRESS_DESTINATION_NOT_ALLOWED"
    );
    // Closing the session stops its egress and removes the sandbox.
    w.sandboxed
        .server
        .cli(&["session", "close", &id, "--yes"])
        .success();
    w.decision_where(&id, |d| d["reason"] == "EGRESS_ALLOWED");
    w.decision_where(&id, |d| d["reason"] == "EGRESS_DESTINATION_NOT_ALLOWED");
}

/// With `--egress off` a sandbox has its loopback and nothing else: no proxy variables,
/// no listeners, no resolver; the secrets API says egress is off.
fn egress_off_means_no_way_out(backend: Backend) {
    let upstream = Upstream::start("127.0.0.2", 0, 0, "api.test");
    let w = world_with(backend, upstream, vec![], &["--egress", "off"]);
    let id = w.session();
    let env = w.probe(&id, &["env"]);
    assert!(!env.contains("HTTP_PROXY"), "{env}");
    assert_eq!(w.probe(&id, &["direct", "127.0.0.1", "3128"]), "error 111");
    assert_eq!(w.probe(&id, &["direct", "127.0.0.1", "80"]), "error 111");
    let resolved = w.probe(&id, &["resolve", "example.com"]);
    assert!(resolved.starts_with("error"), "{resolved}");
    assert_eq!(w.upstream.connections(), 0);
    let (status, body) = w.sandboxed.json(
        Method::POST,
        "/v1/secrets",
        Some(json!({"name": "k", "service_class": "c", "header": "x-key", "value": "v"})),
    );
    assert_eq!(status, 503, "{body}");
}

/// The same flow through the command line: policy from a file, a secret's value from
/// stdin (never an argument), a lease, and the decisions it led to.
fn through_the_cli(backend: Backend) {
    let w = world(backend);
    let id = w.session();
    let server = &w.sandboxed.server;
    let files = tempfile::tempdir().unwrap();
    let policy_file = files.path().join("policy.json");
    std::fs::write(&policy_file, policy(&w.upstream, vec![]).to_string()).unwrap();
    let set = server.cli(&["egress", "set-policy", policy_file.to_str().unwrap()]);
    set.success();
    let shown = server.cli(&["egress", "policy", "--json"]);
    shown.success();
    assert_eq!(shown.json()["version"], "tenant/1");

    let mut child = std::process::Command::new(super::BIN)
        .args([
            "secret",
            "create",
            "--name",
            "api-token",
            "--service-class",
            "test-api",
        ])
        .args([
            "--header",
            "Authorization",
            "--format",
            "Bearer {secret}",
            "--json",
        ])
        .env("CORDON_URL", &server.url)
        .env("CORDON_TOKEN", &server.token)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{SECRET}").unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let created = String::from_utf8(output.stdout).unwrap();
    assert!(!created.contains(SECRET), "{created}");
    let listed = server.cli(&["secret", "list"]);
    listed.success();
    let lease = server.cli(&["lease", "create", &id, "--secret", "api-token", "--json"]);
    lease.success();
    let lease_id = lease.json()["id"].as_str().unwrap().to_owned();
    let url = format!("https://api.test:{}/whoami", w.upstream.tls.port());
    assert_eq!(w.probe(&id, &["get", &url]), "200 - hello from upstream");
    let last = w.upstream.heads().last().unwrap().to_ascii_lowercase();
    // The newline that ended stdin is not part of the value.
    assert!(
        last.contains(&format!(
            "authorization: bearer {}\r\n",
            SECRET.to_ascii_lowercase()
        )),
        "{last}"
    );
    server.cli(&["lease", "revoke", &id, &lease_id]).success();
    w.decision_where(&id, |d| d["credential"] == "api-token");
    let decisions = server.cli(&["egress", "decisions", "--session", &id, "--json"]);
    decisions.success();
    let decisions = decisions.json();
    assert!(
        decisions["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["credential"] == "api-token"),
        "{decisions}"
    );
    let refused = server.cli(&["egress", "decisions", "--reason", "NOT_A_CODE"]);
    assert_ne!(refused.code, 0, "{}", refused.stderr);
}

on_both_backends!(
    through_the_cli,
    egress_off_means_no_way_out,
    red_team,
    leased_credentials,
    transparent_ports,
    policy_through_the_api,
    egress_survives_restart
);
