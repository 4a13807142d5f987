//! The harness: a `cordon serve` child process on a data dir of its own (and a database
//! of its own for PostgreSQL), and the client commands run as subprocesses.
//!
//! Everything is bounded in time: a server must answer `/readyz` within
//! [`READY_TIMEOUT`], a command must finish within [`COMMAND_TIMEOUT`], and a server
//! asked to stop must exit within [`EXIT_TIMEOUT`]. Servers are killed when dropped.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cordon_test_support::PostgresDatabase;
use serde_json::Value;
use tempfile::TempDir;

mod artifacts;
mod bootstrap;
mod console;
mod durability;
mod egress;
mod evidence;
mod exit_codes;
mod idempotency;
mod lifecycle;
mod metrics;
mod otlp;
mod process;
mod sandbox;
mod tenancy;
mod workflow_crash;
mod workflow_scenarios;
mod workflows;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_cordon");
/// How long a starting server may take to answer `/readyz` with 200.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one client command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit once it was told to (or is expected to fail).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Environment variables the binary reads; scrubbed from every child so that the
/// environment of whoever runs the tests cannot leak in.
const CORDON_VARS: &[&str] = &[
    "CORDON_URL",
    "CORDON_TOKEN",
    "CORDON_LISTEN",
    "CORDON_DATA_DIR",
    "CORDON_DATABASE_URL",
    "CORDON_LOG_FORMAT",
    "CORDON_BOOTSTRAP_TOKEN",
    "CORDON_SANDBOX",
    "CORDON_SANDBOX_CLASSES",
    "CORDON_SANDBOX_ROOT",
    "CORDON_SANDBOX_UID_DIR",
    "CORDON_SANDBOX_CGROUP",
    "CORDON_SANDBOX_SPARES",
    "CORDON_EGRESS",
    "CORDON_EGRESS_POLICY",
    "CORDON_EGRESS_UPSTREAM_CA",
    "CORDON_LEASE_MAX_TTL",
    "CORDON_MASTER_KEY",
    "RUST_LOG",
];

/// Runs each named scenario `fn name(backend: Backend)` as a test on both backends:
/// `<area>::sqlite::name` and `<area>::postgres::name`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::suite::Backend::Sqlite)
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::suite::Backend::Postgres)
                }
            )*
        }
    };
}
pub(crate) use on_both_backends;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs a future to completion on a runtime of its own (the tests are synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
        .block_on(future)
}

/// reqwest is built with `rustls-no-provider` (cordon-artifacts asks for it): the test
/// process's own HTTP clients need a crypto provider installed first. Every test makes
/// a [`Place`] before any client, so `Place::new` calls this.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("cannot bind an ephemeral port");
    listener.local_addr().expect("no local address").port()
}

/// Where a server keeps its state; it outlives the server processes started on it, so
/// a test can kill a server and start another on the same state.
#[derive(Debug)]
pub struct Place {
    data_dir: TempDir,
    logs: TempDir,
    database: Option<PostgresDatabase>,
    /// The system admin token, once a server on this place has been ready.
    token: Option<String>,
    starts: usize,
    /// The cgroup parent of this place's sandboxes (unique per place, removed on drop);
    /// None runs the servers without sandboxes.
    pub sandbox_cgroup: Option<String>,
}

impl Drop for Place {
    fn drop(&mut self) {
        // Whatever a test left running (it may have failed halfway) goes with it.
        if let Some(parent) = &self.sandbox_cgroup
            && let Ok(root) = cordon_sandbox::cgroup::CgroupRoot::detect(parent)
        {
            for child in root.children().unwrap_or_default() {
                if let Some(group) = root.open(&child) {
                    let _ = group.remove();
                }
            }
            let _ = root.remove_parent_if_empty();
            // And the host uids its sandboxes claimed.
            let owner = format!("{}#", self.data_dir().join("sandboxes").display());
            if let Ok(claims) = std::fs::read_dir("/run/cordon/uids") {
                for claim in claims.flatten() {
                    let claimed_by = std::fs::read_to_string(claim.path()).unwrap_or_default();
                    if claimed_by.starts_with(&owner) {
                        let _ = std::fs::remove_file(claim.path());
                    }
                }
            }
        }
    }
}

impl Place {
    pub fn new(backend: Backend) -> Self {
        install_crypto_provider();
        let data_dir = tempfile::Builder::new()
            .prefix("cordon-e2e-data-")
            .tempdir()
            .expect("cannot create a data dir");
        let logs = tempfile::Builder::new()
            .prefix("cordon-e2e-logs-")
            .tempdir()
            .expect("cannot create a log dir");
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(block_on(cordon_test_support::fresh_postgres_database())),
        };
        Self {
            data_dir,
            logs,
            database,
            token: None,
            starts: 0,
            sandbox_cgroup: None,
        }
    }

    /// A place whose servers run sandboxes, under a cgroup parent of its own.
    pub fn with_sandboxes(backend: Backend) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let mut place = Self::new(backend);
        place.sandbox_cgroup = Some(format!(
            "cordon-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        place
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn token_file(&self) -> PathBuf {
        self.data_dir().join("bootstrap-admin.token")
    }

    /// Drops the PostgreSQL database under a running server, to make its store fail.
    pub fn drop_database(&mut self) {
        drop(self.database.take().expect("a PostgreSQL place"));
    }

    /// The token in `<data-dir>/bootstrap-admin.token`, trimmed.
    pub fn read_token_file(&self) -> String {
        let path = self.token_file();
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
            .trim()
            .to_owned()
    }

    /// Spawns `cordon serve` on this place and `port` with extra arguments and
    /// environment; its stdout and stderr go to a fresh log file.
    fn spawn(&mut self, port: u16, args: &[&str], env: &[(&str, &str)]) -> (Child, PathBuf) {
        self.starts += 1;
        let log = self.logs.path().join(format!("serve-{}.log", self.starts));
        let out = self.logs.path().join(format!("serve-{}.out", self.starts));
        let mut command = Command::new(BIN);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(self.data_dir.path());
        if let Some(database) = &self.database {
            command.arg("--database-url").arg(database.url());
        }
        match &self.sandbox_cgroup {
            Some(parent) => command.args(["--sandbox", "on", "--sandbox-cgroup-parent", parent]),
            None => command.args(["--sandbox", "off"]),
        };
        command.args(args);
        for var in CORDON_VARS {
            command.env_remove(var);
        }
        // No spare sandboxes unless a test asks: each sandbox's cgroup is then named by
        // its session, which the leak checks rely on.
        command.env("CORDON_SANDBOX_SPARES", "0");
        command.envs(env.iter().copied());
        command
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("cannot create the stdout file"))
            .stderr(File::create(&log).expect("cannot create the log file"));
        let child = command.spawn().expect("cannot spawn `cordon serve`");
        (child, log)
    }

    /// Runs `cordon serve` on this place expecting it to exit by itself (it fails to
    /// start); returns its exit status and stderr. Panics if it is still running after
    /// [`EXIT_TIMEOUT`], or ever answers `/readyz`.
    pub fn serve_expecting_exit(
        &mut self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (ExitStatus, String) {
        let port = free_port();
        let (mut child, log) = self.spawn(port, args, env);
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("cannot poll `cordon serve`") {
                return (status, read_log(&log));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`cordon serve` was expected to exit but still runs after {EXIT_TIMEOUT:?}; stderr:\n{}",
                    read_log(&log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// A running `cordon serve`; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    /// The system admin token.
    pub token: String,
    log: PathBuf,
    place: Option<Place>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        // `place` (data dir, database) is dropped after the process is gone.
    }
}

impl Server {
    pub fn start(place: Place) -> Server {
        Self::start_with(place, &[], &[])
    }

    /// Starts `cordon serve` on `place` and waits until `/readyz` answers 200. The admin
    /// token is the place's known one, else CORDON_BOOTSTRAP_TOKEN from `env`, else the
    /// token file.
    pub fn start_with(mut place: Place, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut attempts = 0;
        let (child, port, log) = loop {
            attempts += 1;
            let port = free_port();
            let (mut child, log) = place.spawn(port, args, env);
            match wait_ready(&mut child, port, &log) {
                Ok(()) => break (child, port, log),
                Err(stderr) => {
                    // The free port may have been taken in between: try another.
                    if attempts < 3 && stderr.contains("cannot listen") {
                        continue;
                    }
                    panic!("`cordon serve` did not become ready; stderr:\n{stderr}");
                }
            }
        };
        let token = match &place.token {
            Some(token) => token.clone(),
            None => env
                .iter()
                .find(|(name, _)| *name == "CORDON_BOOTSTRAP_TOKEN")
                .map(|(_, token)| (*token).to_owned())
                .unwrap_or_else(|| place.read_token_file()),
        };
        place.token = Some(token.clone());
        Server {
            child: Some(child),
            port,
            url: format!("http://127.0.0.1:{port}"),
            token,
            log,
            place: Some(place),
        }
    }

    pub fn place(&self) -> &Place {
        self.place.as_ref().expect("the server has a place")
    }

    pub fn place_mut(&mut self) -> &mut Place {
        self.place.as_mut().expect("the server has a place")
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// SIGKILLs the server and returns its state for a restart.
    pub fn kill9(mut self) -> Place {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("cannot SIGKILL the server");
            child.wait().expect("cannot reap the server");
        }
        self.place.take().expect("the server has a place")
    }

    /// Sends SIGTERM and waits (bounded) for the server to exit; returns its status, its
    /// stderr and its state.
    pub fn terminate(mut self) -> (ExitStatus, String, Place) {
        let mut child = self.child.take().expect("the server runs");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("cannot run `kill`");
        assert!(sent.success(), "`kill -TERM` failed");
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("cannot poll the server") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server ignored SIGTERM for {EXIT_TIMEOUT:?}; stderr:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log();
        (
            status,
            log,
            self.place.take().expect("the server has a place"),
        )
    }

    /// A client command as the system admin.
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_as(&self.token, args)
    }

    /// A client command with `token`.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Run {
        cordon(&[("CORDON_URL", &self.url), ("CORDON_TOKEN", token)], args)
    }

    /// A client command with CORDON_URL set and no token.
    pub fn cli_anonymous(&self, args: &[&str]) -> Run {
        cordon(&[("CORDON_URL", &self.url)], args)
    }

    /// `session create --json` as the system admin; the new session's id.
    pub fn create_session(&self, class: &str, env: &str) -> String {
        let run = self.cli(&[
            "session", "create", "--class", class, "--env", env, "--json",
        ]);
        run.success();
        run.json()["id"].as_str().expect("session id").to_owned()
    }

    /// `session get ID --json` as the system admin.
    pub fn session(&self, id: &str) -> Value {
        let run = self.cli(&["session", "get", id, "--json"]);
        run.success();
        run.json()
    }
}

/// Polls `/readyz` until it answers 200. On failure (the process exited, or the wait
/// timed out and the process was killed) returns its stderr.
fn wait_ready(child: &mut Child, port: u16, log: &Path) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().map_err(|error| error.to_string())? {
            return Err(format!("(exited with {status})\n{}", read_log(log)));
        }
        if http_status(port, "/readyz") == Some(200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "(no 200 from /readyz within {READY_TIMEOUT:?})\n{}",
                read_log(log)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status of `GET path` on 127.0.0.1:`port`, or None if there is no HTTP answer.
/// Plain HTTP/1.1 over a socket, so that waiting needs no async runtime.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    // "HTTP/1.1 200"
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// The outcome of one `cordon` command.
#[derive(Debug)]
pub struct Run {
    pub args: Vec<String>,
    /// The exit code; -1 if the process was killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "`cordon {}` exited {}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    /// Asserts exit code 0 and returns self.
    #[track_caller]
    pub fn success(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success: {}", self.describe());
        self
    }

    /// Asserts a failure with `code`, `reason` on stderr and nothing on stdout.
    #[track_caller]
    pub fn failure(&self, code: i32, reason: &str) -> &Self {
        assert_eq!(
            self.code,
            code,
            "expected exit code {code}: {}",
            self.describe()
        );
        assert!(
            self.stderr.contains(reason),
            "expected `{reason}` on stderr: {}",
            self.describe()
        );
        assert!(
            self.stdout.is_empty(),
            "expected nothing on stdout: {}",
            self.describe()
        );
        self
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {}", self.describe()))
    }
}

/// Runs `cordon args...` with exactly the CORDON_* variables in `env` (stdin is not a
/// terminal), capturing stdout, stderr and the exit code. Panics after
/// [`COMMAND_TIMEOUT`].
pub fn cordon(env: &[(&str, &str)], args: &[&str]) -> Run {
    let mut command = Command::new(BIN);
    command.args(args);
    for var in CORDON_VARS {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot spawn `cordon`");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot poll `cordon`") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`cordon {}` still runs after {COMMAND_TIMEOUT:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        code: status.code().unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader panicked"),
        stderr: stderr.join().expect("stderr reader panicked"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
