//! `cordon bench egress`: the egress gateway side by side with Debian's squid (a plain
//! forward proxy: no policy, no caching) and with direct connections, against upstreams
//! on loopback. Cordon runs with everything on: policy, durable decision records in
//! SQLite, and a leased credential injected into every request. Prints requests/s and
//! p50/p99 latency at several concurrencies, and CONNECT tunnel throughput for a large
//! TLS transfer. See docs/benchmarks.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cordon_core::{SessionId, TenantId};
use cordon_egress::tls::generate_ca;
use cordon_egress::{EgressCa, MasterKey, SessionKey, SessionListeners};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::bench_sandbox::{Api, BENCH_TOKEN, Timings};
use crate::serve::{self, EgressSettings, SandboxMode, SandboxSettings, ServerConfig};

#[derive(Debug, clap::Args)]
pub struct EgressArgs {
    /// Seconds each measured phase runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent keep-alive clients, one phase each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    concurrency: Vec<usize>,
    /// MiB sent through each CONNECT tunnel for the throughput figure.
    #[arg(long, default_value_t = 512)]
    tunnel_mib: u64,
    /// The squid binary to compare with (skipped, with a note, if absent).
    #[arg(long, default_value = "/usr/sbin/squid")]
    squid: PathBuf,
}

const UPSTREAM_IP: &str = "127.0.0.2";
const TUNNEL_HOST: &str = "tunnel.test";
const BODY: &[u8] = b"hello, world\n";
/// Requests the HTTP upstream answered: each phase checks that every request it counted
/// reached the upstream.
static UPSTREAM_REQUESTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One way to reach the upstream.
#[derive(Debug, Clone, Copy)]
enum Route {
    Direct,
    Proxy(SocketAddr),
}

#[derive(Debug)]
struct Phase {
    requests: usize,
    errors: usize,
    seconds: f64,
    timings: Timings,
}

pub async fn run(args: EgressArgs) -> anyhow::Result<()> {
    // Upstreams and load generator each get a runtime thread of their own, so the
    // gateway's runtime serves only the gateway, like squid's process.
    let upstream_rt = runtime("upstream")?;
    let http_upstream = upstream_rt
        .block_on_spawned(serve_http_upstream())
        .await??;
    let master = MasterKey::from_bytes(&[0x42; 32])?;
    let tunnel_ca = EgressCa::load(&generate_ca(&master)?, &master)?;
    let tunnel_config = tunnel_ca.server_config(TUNNEL_HOST)?;
    let tunnel_bytes = args.tunnel_mib << 20;
    let tunnel_upstream = upstream_rt
        .block_on_spawned(serve_tls_source(tunnel_config, tunnel_bytes))
        .await??;
    let raw_upstream = upstream_rt
        .block_on_spawned(serve_raw_source(tunnel_bytes))
        .await??;
    let client_config = cordon_egress::tls::upstream_client_config(Some(tunnel_ca.cert_pem()))?;
    let hello = client_hello(&client_config)?;
    let client_tls = tokio_rustls::TlsConnector::from(client_config);

    let (cordon, _cordon_data) = start_cordon(http_upstream, tunnel_upstream, raw_upstream).await?;
    let squid = match Squid::start(&args.squid, tunnel_upstream).await {
        Ok(squid) => Some(squid),
        Err(error) => {
            println!("squid: skipped ({error:#})");
            None
        }
    };

    println!(
        "egress: {}s per phase, upstream http://{http_upstream}, tunnel {} MiB over TLS",
        args.seconds, args.tunnel_mib
    );
    let mut routes = vec![("direct", Route::Direct)];
    if let Some(squid) = &squid {
        routes.push(("squid", Route::Proxy(squid.addr)));
    }
    routes.push(("cordon", Route::Proxy(cordon.proxy)));

    let load_rt = runtime("load")?;
    println!(
        "{:>8} {:>6} {:>12} {:>10} {:>10} {:>8}",
        "route", "conc", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    let mut table = Vec::new();
    for &concurrency in &args.concurrency {
        for (name, route) in &routes {
            let route = *route;
            let seconds = args.seconds;
            let served = UPSTREAM_REQUESTS.load(std::sync::atomic::Ordering::Relaxed);
            let mut phase = load_rt
                .block_on_spawned(load(route, http_upstream, concurrency, seconds))
                .await??;
            let reached = UPSTREAM_REQUESTS.load(std::sync::atomic::Ordering::Relaxed) - served;
            if reached < phase.requests {
                bail!(
                    "{name}: {} responses but the upstream answered only {reached} requests",
                    phase.requests
                );
            }
            #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
            let rate = phase.requests as f64 / phase.seconds;
            let (p50, p99) = (phase.timings.quantile(0.5), phase.timings.quantile(0.99));
            println!(
                "{name:>8} {concurrency:>6} {rate:>12.0} {p50:>10.3} {p99:>10.3} {:>8}",
                phase.errors
            );
            table.push((*name, concurrency, rate, p50, p99));
        }
    }
    for &concurrency in &args.concurrency {
        let find = |route: &str| {
            table
                .iter()
                .find(|row| row.0 == route && row.1 == concurrency)
                .copied()
        };
        if let (Some(cordon), Some(direct)) = (find("cordon"), find("direct")) {
            let squid = find("squid")
                .map(|s| format!("{:.2}x squid's requests/s, ", cordon.2 / s.2))
                .unwrap_or_default();
            println!(
                "concurrency {concurrency}: cordon {squid}p99 {:+.3} ms over direct",
                cordon.4 - direct.4
            );
        }
    }

    println!("{:>8} {:>14} {:>14}", "tunnel", "TLS MiB/s", "raw MiB/s");
    let mut throughput = Vec::new();
    for (name, route) in &routes {
        let mut best = [0f64; 2];
        let targets = [(tunnel_upstream, None), (raw_upstream, Some(hello.clone()))];
        for (slot, (target, hello)) in targets.into_iter().enumerate() {
            for _ in 0..3 {
                let route = *route;
                let tls = client_tls.clone();
                let hello = hello.clone();
                let rate = load_rt
                    .block_on_spawned(tunnel(route, target, tls, tunnel_bytes, hello))
                    .await??;
                best[slot] = best[slot].max(rate);
            }
        }
        println!("{name:>8} {:>14.0} {:>14.0}", best[0], best[1]);
        throughput.push((*name, best));
    }
    let direct = throughput.iter().find(|t| t.0 == "direct").map(|t| t.1);
    let proxied = throughput.iter().find(|t| t.0 == "cordon").map(|t| t.1);
    if let (Some(direct), Some(cordon)) = (direct, proxied) {
        println!(
            "tunnel: cordon {:.0}% of direct over TLS, {:.0}% raw",
            100.0 * cordon[0] / direct[0].max(f64::MIN_POSITIVE),
            100.0 * cordon[1] / direct[1].max(f64::MIN_POSITIVE)
        );
    }
    let decisions = cordon
        .server
        .store
        .list_egress_decisions(
            cordon.tenant,
            &cordon_core::EgressDecisionFilter::default(),
            1,
        )
        .await?;
    if decisions.is_empty() {
        bail!("cordon recorded no decisions: the benchmark did not measure the real path");
    }
    drop(squid);
    cordon.server.stop().await?;
    Ok(())
}

/// A runtime on a thread of its own.
struct Runtime {
    handle: tokio::runtime::Handle,
    _thread: std::thread::JoinHandle<()>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn runtime(name: &str) -> anyhow::Result<Runtime> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("bench-{name}"))
        .spawn(move || {
            rt.block_on(async {
                let _ = stopped.await;
            });
        })?;
    Ok(Runtime {
        handle,
        _thread: thread,
        _stop: stop,
    })
}

impl Runtime {
    /// Runs `future` on this runtime's thread and waits for it from the caller's.
    async fn block_on_spawned<F>(&self, future: F) -> anyhow::Result<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.handle.spawn(future).await?)
    }
}

/// A keep-alive HTTP/1.1 server answering every request with a small body.
async fn serve_http_upstream() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((UPSTREAM_IP, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                    BODY.len()
                );
                let mut out = response.into_bytes();
                out.extend_from_slice(BODY);
                let mut line = String::new();
                loop {
                    // Read a request head; requests carry no body.
                    loop {
                        line.clear();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                    }
                    UPSTREAM_REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if stream.get_mut().write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A TLS server that sends `bytes` bytes on each connection, then closes it.
async fn serve_tls_source(
    config: Arc<rustls::ServerConfig>,
    bytes: u64,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((UPSTREAM_IP, 0)).await?;
    let addr = listener.local_addr()?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let chunk = vec![0x5au8; 64 << 10];
                let mut left = bytes;
                while left > 0 {
                    let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                    if tls.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// A TCP server that reads one TLS record (the client's ClientHello), then sends
/// `bytes` raw bytes and closes: the tunnel's own cost, without TLS at both ends.
async fn serve_raw_source(bytes: u64) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind((UPSTREAM_IP, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut header = [0u8; 5];
                if stream.read_exact(&mut header).await.is_err() {
                    return;
                }
                let mut record = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
                if stream.read_exact(&mut record).await.is_err() {
                    return;
                }
                let chunk = vec![0x5au8; 256 << 10];
                let mut left = bytes;
                while left > 0 {
                    let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
            });
        }
    });
    Ok(addr)
}

/// Drives `concurrency` keep-alive clients for `seconds` through `route`.
async fn load(
    route: Route,
    upstream: SocketAddr,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Phase> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        clients.push(tokio::spawn(client(route, upstream, deadline)));
    }
    let mut phase = Phase {
        requests: 0,
        errors: 0,
        seconds: 0.0,
        timings: Timings::default(),
    };
    for client in clients {
        let (timings, errors) = client.await?;
        phase.requests += timings.len();
        phase.errors += errors;
        for t in timings {
            phase.timings.push(t);
        }
    }
    phase.seconds = started.elapsed().as_secs_f64();
    Ok(phase)
}

/// One client: a connection, requests one after another; reconnects after an error.
async fn client(route: Route, upstream: SocketAddr, deadline: Instant) -> (Vec<Duration>, usize) {
    let (connect_to, request) = match route {
        Route::Direct => (
            upstream,
            format!("GET /item HTTP/1.1\r\nhost: {upstream}\r\nuser-agent: bench\r\n\r\n"),
        ),
        Route::Proxy(proxy) => (
            proxy,
            format!(
                "GET http://{upstream}/item HTTP/1.1\r\nhost: {upstream}\r\nuser-agent: bench\r\n\r\n"
            ),
        ),
    };
    let mut timings = Vec::with_capacity(65_536);
    let mut errors = 0;
    while Instant::now() < deadline {
        let Ok(stream) = TcpStream::connect(connect_to).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut stream = BufReader::new(stream);
        while Instant::now() < deadline {
            let started = Instant::now();
            match exchange(&mut stream, request.as_bytes()).await {
                Ok(true) => timings.push(started.elapsed()),
                Ok(false) => {
                    timings.push(started.elapsed());
                    break;
                }
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
    }
    (timings, errors)
}

/// Sends one request and reads its response; returns whether the connection stays open.
async fn exchange(stream: &mut BufReader<TcpStream>, request: &[u8]) -> anyhow::Result<bool> {
    stream.get_mut().write_all(request).await?;
    let mut line = String::new();
    let mut length = 0usize;
    let mut keep_alive = true;
    stream.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("unexpected status line {line:?}");
    }
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            bail!("closed mid-response");
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(value) = lower.strip_prefix("content-length:") {
            length = value.trim().parse()?;
        } else if lower.starts_with("connection:") && lower.contains("close") {
            keep_alive = false;
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(keep_alive)
}

/// The first flight of a TLS client for the tunnel's host: a real ClientHello.
fn client_hello(config: &Arc<rustls::ClientConfig>) -> anyhow::Result<Vec<u8>> {
    let name = rustls::pki_types::ServerName::try_from(TUNNEL_HOST)?;
    let mut client = rustls::ClientConnection::new(Arc::clone(config), name)?;
    let mut hello = Vec::new();
    client.write_tls(&mut hello)?;
    Ok(hello)
}

/// Reads a whole transfer through `route` (TLS, or raw after a ClientHello); returns
/// MiB/s.
async fn tunnel(
    route: Route,
    upstream: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    bytes: u64,
    hello: Option<Vec<u8>>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut stream = match route {
        Route::Direct => TcpStream::connect(upstream).await?,
        Route::Proxy(proxy) => {
            let mut stream = TcpStream::connect(proxy).await?;
            let target = format!("{TUNNEL_HOST}:{}", upstream.port());
            stream
                .write_all(
                    format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").as_bytes(),
                )
                .await?;
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await? == 0 {
                    bail!("the proxy closed the CONNECT");
                }
                head.push(byte[0]);
            }
            if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                bail!("CONNECT refused: {}", String::from_utf8_lossy(&head));
            }
            stream
        }
    };
    let mut buffer = vec![0u8; 256 << 10];
    let mut received = 0u64;
    if let Some(hello) = hello {
        // Raw: a real ClientHello for the gateway's SNI check, then plain bytes.
        stream.write_all(&hello).await?;
        loop {
            match stream.read(&mut buffer).await? {
                0 => break,
                n => received += n as u64,
            }
        }
        if received != bytes {
            bail!("received {received} of {bytes} bytes");
        }
        #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
        return Ok(received as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64());
    }
    let name = rustls::pki_types::ServerName::try_from(TUNNEL_HOST)?;
    let mut tls = tls.connect(name, stream).await?;
    loop {
        match tls.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => received += n as u64,
            // A close without close_notify still delivered every byte we count.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
    }
    if received != bytes {
        bail!("received {received} of {bytes} bytes");
    }
    #[allow(clippy::cast_precision_loss, reason = "a rate for display")]
    Ok(received as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
}

struct Cordon {
    server: serve::RunningServer,
    tenant: TenantId,
    proxy: SocketAddr,
}

/// A real server (SQLite, egress on, no sandboxes) with a policy allowing the upstreams,
/// a secret bound to the HTTP upstream and leased to one active session, and that
/// session's proxy listener on loopback.
async fn start_cordon(
    http_upstream: SocketAddr,
    tunnel_upstream: SocketAddr,
    raw_upstream: SocketAddr,
) -> anyhow::Result<(Cordon, tempfile::TempDir)> {
    let data = tempfile::Builder::new()
        .prefix("cordon-bench-egress-")
        .tempdir()?;
    let policy = json!({
        "service_classes": [
            {"name": "bench-http", "hosts": [UPSTREAM_IP], "ports": [http_upstream.port()],
             "schemes": ["http"], "address_ranges": [format!("{UPSTREAM_IP}/32")]},
            {"name": "bench-tunnel", "hosts": [TUNNEL_HOST],
             "ports": [tunnel_upstream.port(), raw_upstream.port()], "schemes": ["https"], "address_ranges": [format!("{UPSTREAM_IP}/32")]}
        ],
        "rules": [{"name": "bench", "service_classes": ["bench-http", "bench-tunnel"],
                   "environments": ["*"], "workload_classes": ["*"]}]
    });
    let policy_file = data.path().join("egress-policy.json");
    std::fs::write(&policy_file, policy.to_string())?;
    let server = serve::start(ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: data.path().join("data"),
        database_url: None,
        bootstrap_token: Some(BENCH_TOKEN.to_owned()),
        sandbox: SandboxSettings {
            mode: SandboxMode::Off,
            ..SandboxSettings::default()
        },
        egress: EgressSettings {
            policy_file: Some(policy_file),
            resolve: vec![(TUNNEL_HOST.to_owned(), tunnel_upstream.ip())],
            ..EgressSettings::default()
        },
        artifacts: crate::artifacts::ArtifactSettings::default(),
        telemetry: crate::serve::TelemetrySettings::default(),
    })
    .await?;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", server.addr),
    };
    let id = api.session().await?;
    api.activate(&id).await?;
    api.post(
        "/v1/secrets",
        json!({"name": "bench-key", "service_class": "bench-http", "header": "x-api-key",
               "format": "{secret}", "value": "bench-secret-value"}),
    )
    .await?;
    api.post(
        &format!("/v1/sessions/{id}/leases"),
        json!({"secret": "bench-key"}),
    )
    .await?;
    let session_id: SessionId = id.parse()?;
    let session = server
        .store
        .list_tenants()
        .await?
        .into_iter()
        .next()
        .context("no tenant")?;
    let tenant = session.id;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let proxy = listener.local_addr()?;
    let egress = server.control.egress().context("egress is off")?;
    egress.gateway.attach(
        SessionKey {
            tenant_id: tenant,
            session_id,
        },
        SessionListeners {
            proxy: Some(listener),
            ..SessionListeners::default()
        },
    )?;
    Ok((
        Cordon {
            server,
            tenant,
            proxy,
        },
        data,
    ))
}

/// Debian's squid as a plain forward proxy: every request and port allowed, no cache,
/// access log on (as cordon records every decision).
struct Squid {
    addr: SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Squid {
    async fn start(binary: &Path, tunnel_upstream: SocketAddr) -> anyhow::Result<Squid> {
        if !binary.is_file() {
            bail!("{} not found (apt-get install squid)", binary.display());
        }
        let dir = tempfile::Builder::new()
            .prefix("cordon-bench-squid-")
            .tempdir()?;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let path = |name: &str| dir.path().join(name).display().to_string();
        std::fs::write(
            dir.path().join("hosts"),
            format!("{} {TUNNEL_HOST}\n", tunnel_upstream.ip()),
        )?;
        let config = format!(
            "http_port 127.0.0.1:{port}\n\
             acl all_ports port 1-65535\n\
             http_access allow all\n\
             cache deny all\n\
             cache_mem 0 MB\n\
             hosts_file {hosts}\n\
             access_log stdio:{access}\n\
             cache_log {cache}\n\
             pid_filename {pid}\n\
             coredump_dir {dir}\n\
             shutdown_lifetime 0 seconds\n\
             workers 1\n",
            hosts = path("hosts"),
            access = path("access.log"),
            cache = path("cache.log"),
            pid = path("squid.pid"),
            dir = dir.path().display(),
        );
        let conf = dir.path().join("squid.conf");
        std::fs::write(&conf, config)?;
        // squid drops to its own user: the directory must be writable by it.
        let _ = std::process::Command::new("chown")
            .args(["-R", "proxy:proxy"])
            .arg(dir.path())
            .status();
        let child = std::process::Command::new(binary)
            .args(["-N", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let cache_log = path("cache.log");
        let squid = Squid {
            addr,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).await.is_err() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(&cache_log).unwrap_or_default();
                bail!("squid did not start listening: {log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(squid)
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
