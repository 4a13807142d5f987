//! `cordon bench sandboxes`: sandbox start-up, exec round trips and density, side by side
//! with Debian's bubblewrap running the same command with comparable isolation. See
//! docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::serve::{self, EgressSettings, SandboxMode, SandboxSettings, ServerConfig};

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// Samples of each timed phase.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Idle sandboxes held at once for the density measurement (0 skips it).
    #[arg(long, default_value_t = 200)]
    idle: usize,
    /// The bubblewrap binary to compare with (skipped, with a note, if absent).
    #[arg(long, default_value = "bwrap")]
    bwrap: PathBuf,
}

pub(crate) const BENCH_TOKEN: &str = "cordon_bench_sandboxes_0123456789abcdefghijklmnopqrstuvwxyz";

/// Milliseconds, sorted on demand.
#[derive(Debug, Default)]
pub(crate) struct Timings(Vec<f64>);

impl Timings {
    pub(crate) fn push(&mut self, elapsed: Duration) {
        self.0.push(elapsed.as_secs_f64() * 1000.0);
    }

    pub(crate) fn extend(&mut self, other: Timings) {
        self.0.extend(other.0);
    }

    pub(crate) fn quantile(&mut self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_by(f64::total_cmp);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a sorted sample"
        )]
        let index = ((self.0.len() - 1) as f64 * q).round() as usize;
        self.0[index]
    }
}

pub(crate) struct Api {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
}

impl Api {
    pub(crate) async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(BENCH_TOKEN)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let value: Value = response.json().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {value}");
        }
        Ok(value)
    }

    pub(crate) async fn session(&self) -> anyhow::Result<String> {
        let session = self
            .post(
                "/v1/sessions",
                json!({"workload_class": "bench", "environment": "dev"}),
            )
            .await?;
        session["id"]
            .as_str()
            .map(str::to_owned)
            .context("no session id")
    }

    pub(crate) async fn activate(&self, id: &str) -> anyhow::Result<()> {
        self.post(&format!("/v1/sessions/{id}/activate"), json!({}))
            .await
            .map(|_| ())
    }

    async fn close(&self, id: &str) -> anyhow::Result<()> {
        self.post(&format!("/v1/sessions/{id}/close"), json!({}))
            .await
            .map(|_| ())
    }

    async fn exec(&self, id: &str, argv: &[&str]) -> anyhow::Result<Value> {
        let result = self
            .post(&format!("/v1/sessions/{id}/exec"), json!({"argv": argv}))
            .await?;
        if result["exit_code"] != 0 {
            bail!("exec {argv:?} failed: {result}");
        }
        Ok(result)
    }
}

pub async fn run(args: SandboxArgs) -> anyhow::Result<()> {
    if std::env::var_os("RUST_LOG").is_some() {
        serve::init_logging(serve::LogFormat::Text);
    }
    let data = tempfile::Builder::new()
        .prefix("cordon-bench-sandboxes-")
        .tempdir()?;
    let cgroup_parent = format!("cordon-bench-{}", std::process::id());
    let config = ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: data.path().to_owned(),
        database_url: None,
        bootstrap_token: Some(BENCH_TOKEN.to_owned()),
        sandbox: SandboxSettings {
            mode: SandboxMode::On,
            cgroup_parent: cgroup_parent.clone(),
            // This server measures the cold path: every sandbox is launched.
            spares: 0,
            ..SandboxSettings::default()
        },
        egress: EgressSettings::default(),
        artifacts: crate::artifacts::ArtifactSettings::default(),
        telemetry: crate::serve::TelemetrySettings::default(),
    };
    let server = serve::start(config).await?;
    // A second server keeps two spare sandboxes, as `cordon serve` does by default.
    let pooled_data = tempfile::Builder::new()
        .prefix("cordon-bench-spares-")
        .tempdir()?;
    let pooled_parent = format!("cordon-bench-spares-{}", std::process::id());
    let pooled = serve::start(ServerConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        data_dir: pooled_data.path().to_owned(),
        database_url: None,
        bootstrap_token: Some(BENCH_TOKEN.to_owned()),
        sandbox: SandboxSettings {
            mode: SandboxMode::On,
            cgroup_parent: pooled_parent.clone(),
            spares: 2,
            ..SandboxSettings::default()
        },
        egress: EgressSettings::default(),
        artifacts: crate::artifacts::ArtifactSettings::default(),
        telemetry: crate::serve::TelemetrySettings::default(),
    })
    .await?;
    let pooled_api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", pooled.addr),
    };
    let pooled_manager = pooled
        .control
        .sandboxes()
        .cloned()
        .context("sandboxes are off")?;
    let api = Api {
        http: reqwest::Client::new(),
        base: format!("http://{}", server.addr),
    };
    let build = if cfg!(debug_assertions) {
        "debug build: not representative, use --release"
    } else {
        "release build"
    };
    let cgroups = server
        .control
        .sandboxes()
        .map(|s| format!("{:?}", s.cgroup_version()))
        .unwrap_or_default();
    println!(
        "cordon bench sandboxes: {build}, {} CPUs, cgroups {cgroups}, {} samples per phase",
        std::thread::available_parallelism().map_or(0, usize::from),
        args.samples
    );
    println!();

    // Warm-up: the first sandbox pays for cold page caches.
    let warm = api.session().await?;
    api.activate(&warm).await?;
    api.exec(&warm, &["echo", "hi"]).await?;

    // Time to interactive: create -> activate -> first `echo hi` answered.
    let mut tti = Timings::default();
    let mut to_close = Vec::new();
    for _ in 0..args.samples {
        let started = Instant::now();
        let id = api.session().await?;
        api.activate(&id).await?;
        api.exec(&id, &["echo", "hi"]).await?;
        tti.push(started.elapsed());
        to_close.push(id);
    }
    for id in to_close.drain(..) {
        api.close(&id).await?;
    }
    // The same with a spare waiting: activation adopts it (the pool refills between
    // samples, untimed).
    let mut tti_pooled = Timings::default();
    for _ in 0..args.samples {
        wait_for_spares(&pooled_manager, 2).await?;
        let started = Instant::now();
        let id = pooled_api.session().await?;
        pooled_api.activate(&id).await?;
        pooled_api.exec(&id, &["echo", "hi"]).await?;
        tti_pooled.push(started.elapsed());
        to_close.push(id);
    }
    for id in to_close.drain(..) {
        pooled_api.close(&id).await?;
    }

    // Warm exec round trip.
    let mut warm_exec = Timings::default();
    for _ in 0..args.samples.max(200) {
        let started = Instant::now();
        api.exec(&warm, &["echo", "hi"]).await?;
        warm_exec.push(started.elapsed());
    }

    // Raw spawn-to-exit of `true`, in the runtime without HTTP: claim a uid, create the
    // cgroup, launch, run `true` and see it exit. Teardown (kill, rmdir, reap) is timed
    // apart, as bwrap's namespace teardown happens after its process exits.
    let manager = server
        .control
        .sandboxes()
        .cloned()
        .context("sandboxes are off")?;
    let mut raw = Timings::default();
    let mut raw_start = Timings::default();
    let mut raw_exec = Timings::default();
    let mut raw_destroy = Timings::default();
    for i in 0..args.samples {
        let id = format!("bench-raw-{i}");
        let started = Instant::now();
        manager.start(&id, "bench", "bench").await?;
        raw_start.push(started.elapsed());
        let exec_started = Instant::now();
        let result = manager
            .exec_collect(
                &id,
                cordon_sandbox::ExecRequest {
                    argv: vec!["true".to_owned()],
                    ..Default::default()
                },
            )
            .await?;
        raw_exec.push(exec_started.elapsed());
        raw.push(started.elapsed());
        if result.outcome.exit_code != 0 {
            bail!("`true` failed in the sandbox: {:?}", result.outcome);
        }
        let destroying = Instant::now();
        manager.destroy(&id).await?;
        raw_destroy.push(destroying.elapsed());
    }
    let mut pooled_spawn = Timings::default();
    for i in 0..args.samples {
        wait_for_spares(&pooled_manager, 2).await?;
        let id = format!("bench-pooled-{i}");
        let started = Instant::now();
        pooled_manager.start(&id, "default", "bench").await?;
        let result = pooled_manager
            .exec_collect(
                &id,
                cordon_sandbox::ExecRequest {
                    argv: vec!["true".to_owned()],
                    ..Default::default()
                },
            )
            .await?;
        pooled_spawn.push(started.elapsed());
        if result.outcome.exit_code != 0 {
            bail!("`true` failed in the sandbox: {:?}", result.outcome);
        }
        pooled_manager.destroy(&id).await?;
    }
    let mut bwrap = Timings::default();
    let bwrap_note = match bwrap_available(&args.bwrap).await {
        Ok(()) => {
            for _ in 0..args.samples {
                let started = Instant::now();
                run_bwrap(&args.bwrap, "true").await?;
                bwrap.push(started.elapsed());
            }
            String::new()
        }
        Err(error) => format!("bwrap skipped: {error:#}"),
    };

    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "phase", "p50 ms", "p90 ms", "p99 ms"
    );
    let line = |name: &str, t: &mut Timings| {
        println!(
            "{name:<44} {:>9.2} {:>9.2} {:>9.2}",
            t.quantile(0.5),
            t.quantile(0.9),
            t.quantile(0.99)
        );
    };
    line("time-to-interactive, cold (launch per session)", &mut tti);
    line("time-to-interactive, a spare waiting", &mut tti_pooled);
    line("warm exec `echo hi` (HTTP round trip)", &mut warm_exec);
    line("cordon spawn-to-exit of `true` (no HTTP)", &mut raw);
    line("  start: uid, cgroup, launcher, init ready", &mut raw_start);
    line("  first exec of `true` until its exit", &mut raw_exec);
    line("cordon teardown (kill, rmdir, reap)", &mut raw_destroy);
    line(
        "cordon spawn-to-exit of `true`, a spare waiting",
        &mut pooled_spawn,
    );
    if bwrap.0.is_empty() {
        println!("{bwrap_note}");
    } else {
        line("bwrap `true` (same namespaces and mounts)", &mut bwrap);
        println!(
            "cordon spawn-to-exit / bwrap p50 ratio: cold {:.2}, a spare waiting {:.2} (below 1 = Cordon faster)",
            raw.quantile(0.5) / bwrap.quantile(0.5),
            pooled_spawn.quantile(0.5) / bwrap.quantile(0.5)
        );
    }

    if args.idle > 0 {
        println!();
        density(&api, &server, args.idle).await?;
    }
    api.close(&warm).await?;
    server.stop().await?;
    pooled.stop().await?;
    // The pooled server's spares outlive it, as every sandbox outlives its server; this
    // benchmark owns them, so it removes them with their parent group.
    if let Ok(root) = cordon_sandbox::cgroup::CgroupRoot::detect(&pooled_parent) {
        for child in root.children().unwrap_or_default() {
            if let Some(group) = root.open(&child) {
                let _ = group.remove();
            }
        }
        let _ = root.remove_parent_if_empty();
    }
    release_uid_claims(pooled_data.path());
    // Every sandbox is gone; so goes their parent group.
    if let Ok(root) = cordon_sandbox::cgroup::CgroupRoot::detect(&cgroup_parent) {
        let _ = root.remove_parent_if_empty();
    }
    Ok(())
}

async fn wait_for_spares(
    manager: &cordon_sandbox::SandboxManager,
    count: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while manager.spares() < count {
        if Instant::now() > deadline {
            bail!("the spare sandboxes were not refilled within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// Removes the uid claims of a data dir's sandboxes (spares left behind on purpose).
fn release_uid_claims(data_dir: &Path) {
    let owner = format!("{}#", data_dir.join("sandboxes").display());
    if let Ok(claims) = std::fs::read_dir("/run/cordon/uids") {
        for claim in claims.flatten() {
            if std::fs::read_to_string(claim.path()).is_ok_and(|o| o.starts_with(&owner)) {
                let _ = std::fs::remove_file(claim.path());
            }
        }
    }
}

async fn bwrap_available(bwrap: &Path) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(bwrap)
        .arg("--version")
        .output()
        .await
        .with_context(|| {
            format!(
                "cannot run {} (apt-get install bubblewrap)",
                bwrap.display()
            )
        })?;
    if !output.status.success() {
        bail!("{} --version failed", bwrap.display());
    }
    Ok(())
}

/// bubblewrap with the isolation Cordon's launcher sets up: new user (uid 1000), pid,
/// net, ipc, uts and cgroup namespaces, read-only system binds, fresh /proc, minimal
/// /dev, tmpfs /tmp and /workspace, no capabilities, a new session. (It has no seccomp
/// filter, landlock or cgroup limits, which Cordon's sandboxes have.)
async fn run_bwrap(bwrap: &Path, program: &str) -> anyhow::Result<()> {
    let mut command = tokio::process::Command::new(bwrap);
    command.args([
        "--unshare-all",
        "--uid",
        "1000",
        "--gid",
        "1000",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    for dir in ["bin", "sbin", "lib", "lib64"] {
        let host = Path::new("/").join(dir);
        match std::fs::read_link(&host) {
            Ok(target) => {
                command.arg("--symlink").arg(target).arg(format!("/{dir}"));
            }
            Err(_) if host.is_dir() => {
                command.arg("--ro-bind").arg(&host).arg(&host);
            }
            Err(_) => {}
        }
    }
    command.args([
        "--ro-bind",
        "/etc/ld.so.cache",
        "/etc/ld.so.cache",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "--tmpfs",
        "/workspace",
        "--chdir",
        "/workspace",
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/bin:/bin",
        program,
    ]);
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .status()
        .await?;
    if !status.success() {
        bail!("bwrap {program} failed: {status}");
    }
    Ok(())
}

/// Resident and proportional memory of a process, in KiB, from smaps_rollup.
fn memory_kib(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

async fn density(api: &Api, server: &serve::RunningServer, count: usize) -> anyhow::Result<()> {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let (server_before, _) = memory_kib(me);
    let started = Instant::now();
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let id = api.session().await?;
        api.activate(&id).await?;
        ids.push(id);
    }
    let spawn_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let manager = server.control.sandboxes().context("sandboxes are off")?;
    let (mut rss, mut pss, mut cgroup_bytes) = (0u64, 0u64, 0u64);
    for id in &ids {
        let info = manager.info(id)?;
        let (r, p) = memory_kib(info.init_pid);
        rss += r;
        pss += p;
        cgroup_bytes += info.counters.map_or(0, |c| c.memory_bytes);
    }
    let (server_after, _) = memory_kib(me);
    let n = count as f64;
    let server_delta = server_after.saturating_sub(server_before) as f64;
    println!("density: {count} idle active sandboxes started in {spawn_seconds:.1} s");
    println!(
        "  init process per sandbox: RSS {:.2} MiB, PSS {:.2} MiB",
        rss as f64 / n / 1024.0,
        pss as f64 / n / 1024.0
    );
    println!(
        "  server growth per sandbox: {:.3} MiB (this process, including the benchmark's client)",
        server_delta / n / 1024.0
    );
    println!(
        "  overhead per idle sandbox (init PSS + server growth): {:.2} MiB; by RSS: {:.2} MiB",
        (pss as f64 + server_delta) / n / 1024.0,
        (rss as f64 + server_delta) / n / 1024.0
    );
    println!(
        "  cgroup memory per sandbox (kernel's count: pages, tmpfs, kernel objects): {:.2} MiB",
        cgroup_bytes as f64 / n / 1_048_576.0
    );
    let closing = Instant::now();
    for id in &ids {
        api.close(id).await?;
    }
    println!(
        "  closed them all in {:.1} s",
        closing.elapsed().as_secs_f64()
    );
    Ok(())
}
