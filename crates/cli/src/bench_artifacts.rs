//! `cordon bench artifacts`: the artifacts runtime side by side with git and
//! `tar --zstd` on workspaces the benchmark generates itself (full and incremental
//! checkpoints, restores into an empty directory and back to the previous version),
//! then durable evidence appends per second on SQLite (and PostgreSQL when asked), and
//! inclusion proof verification. Only local processes; everything lives in a temporary
//! directory removed at the end. See docs/benchmarks.md.

use std::collections::HashSet;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cordon_artifacts::evidence_log::{EvidenceLog, Record};
use cordon_artifacts::{BlobStore, Limits, SnapshotIndex, restore, snapshot};
use cordon_core::{SessionId, Tenant, TenantId, Timestamp};
use cordon_evidence::{MerkleTree, Signer, merkle};
use cordon_store::Store;
use cordon_store_postgres::{PostgresOptions, PostgresStore};
use cordon_store_sqlite::{SqliteOptions, SqliteStore};

use crate::bench::BenchDatabase;

#[derive(Debug, clap::Args)]
pub struct ArtifactsArgs {
    /// Timed runs of each workspace operation; p50 and p90 are over these
    /// [default: 5; --quick: 2].
    #[arg(long)]
    runs: Option<usize>,
    /// Files of the small workspace, W1 [default: 1000; --quick: 200].
    #[arg(long)]
    small_files: Option<usize>,
    /// MB (10^6 bytes) of the small workspace [default: 50; --quick: 5].
    #[arg(long)]
    small_mb: Option<u64>,
    /// Files of the large workspace, W2 [default: 10000; --quick: 1000].
    #[arg(long)]
    large_files: Option<usize>,
    /// MB of the large workspace [default: 200; --quick: 20].
    #[arg(long)]
    large_mb: Option<u64>,
    /// Percent of the files changed between two versions.
    #[arg(long, default_value_t = 1.0)]
    change_percent: f64,
    /// Seconds each evidence append phase runs [default: 5; --quick: 1].
    #[arg(long)]
    evidence_secs: Option<u64>,
    /// Concurrent evidence appenders.
    #[arg(long, default_value_t = 64)]
    appenders: usize,
    /// A PostgreSQL URL with the right to create databases: the evidence phases also
    /// run there, in a fresh database created and dropped by the benchmark.
    #[arg(long)]
    database_url: Option<String>,
    /// Leaves of the tree whose inclusion proofs are verified
    /// [default: 1000000; --quick: 100000].
    #[arg(long)]
    proof_leaves: Option<u64>,
    /// Timed `verify_inclusion` calls.
    #[arg(long, default_value_t = 10_000)]
    proof_calls: usize,
    /// A smoke run with small numbers (for CI): see the defaults of each flag.
    #[arg(long)]
    quick: bool,
    /// Where the temporary directory is made (default: the system's). It should be on
    /// the disk whose durability is being measured, not a tmpfs.
    #[arg(long)]
    temp_dir: Option<PathBuf>,
    /// The git binary.
    #[arg(long, default_value = "git")]
    git: PathBuf,
    /// The GNU tar binary (needs `--zstd`, hence zstd).
    #[arg(long, default_value = "tar")]
    tar: PathBuf,
}

/// The longest any external command may take before the benchmark gives up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// Longer than the snapshot index's racy window (20 ms) and git's: a file written
/// less than this before an index was taken is re-read by both, so the benchmark
/// waits this long (untimed) after touching files outside a timed operation.
const SETTLE: Duration = Duration::from_millis(50);
/// Bytes rewritten in each changed file.
const CHANGE_BYTES: u64 = 64;
/// The largest generated file.
const MAX_FILE_BYTES: u64 = 8 << 20;

struct Settings {
    runs: usize,
    workloads: [(usize, u64); 2],
    change_percent: f64,
    evidence: Duration,
    appenders: usize,
    proof_leaves: u64,
    proof_calls: usize,
}

impl Settings {
    fn of(args: &ArtifactsArgs) -> anyhow::Result<Settings> {
        let pick = |value: Option<u64>, full: u64, quick: u64| {
            value.unwrap_or(if args.quick { quick } else { full })
        };
        let pick_usize = |value: Option<usize>, full: usize, quick: usize| {
            value.unwrap_or(if args.quick { quick } else { full })
        };
        let settings = Settings {
            runs: pick_usize(args.runs, 5, 2),
            workloads: [
                (
                    pick_usize(args.small_files, 1000, 200),
                    pick(args.small_mb, 50, 5) * 1_000_000,
                ),
                (
                    pick_usize(args.large_files, 10_000, 1000),
                    pick(args.large_mb, 200, 20) * 1_000_000,
                ),
            ],
            change_percent: args.change_percent,
            evidence: Duration::from_secs(pick(args.evidence_secs, 5, 1)),
            appenders: args.appenders,
            proof_leaves: pick(args.proof_leaves, 1_000_000, 100_000),
            proof_calls: args.proof_calls,
        };
        if settings.runs == 0
            || settings.appenders == 0
            || settings.proof_leaves == 0
            || settings.proof_calls == 0
            || settings.evidence.is_zero()
        {
            bail!(
                "--runs, --appenders, --proof-leaves, --proof-calls and --evidence-secs must be positive"
            );
        }
        if settings.workloads.iter().any(|&(files, _)| files == 0) {
            bail!("a workspace needs at least one file");
        }
        if !(settings.change_percent > 0.0 && settings.change_percent <= 100.0) {
            bail!("--change-percent must be above 0 and at most 100");
        }
        Ok(settings)
    }
}

pub async fn run(args: ArtifactsArgs) -> anyhow::Result<()> {
    let settings = Settings::of(&args)?;
    let base = args.temp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let temp = tempfile::Builder::new()
        .prefix("cordon-bench-artifacts-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a temporary directory in {}", base.display()))?;
    let tools = Tools::check(&args, temp.path()).await?;
    let build = if cfg!(debug_assertions) {
        "debug build: not representative, use --release"
    } else {
        "release build"
    };
    println!(
        "cordon bench artifacts: {build}, {} cores, {} timed runs per figure, temp dir on {} ({})",
        std::thread::available_parallelism().map_or(0, usize::from),
        settings.runs,
        filesystem_of(temp.path()),
        temp.path().display()
    );
    println!("{}; {}", tools.git_version, tools.tar_version);
    println!(
        "the file system is synced (sync(1), untimed) before every timed operation; \
         page caches stay warm; git and tar times include starting their processes"
    );
    println!();

    let mut summary = Summary::default();
    for (number, &(files, bytes)) in settings.workloads.iter().enumerate() {
        let name = if number == 0 { "W1" } else { "W2" };
        let dir = temp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        let outcome = workload(name, &dir, files, bytes, &settings, &tools).await?;
        // Kept until the end (see the full checkpoints in `workload`).
        summary.workloads.push(outcome);
    }

    println!(
        "evidence appends: {} concurrent appenders",
        settings.appenders
    );
    println!(
        "{:<9} {:<38} {:>9} {:>8} {:>10} {:>8} {:>8}",
        "backend", "mode", "entries", "seconds", "entries/s", "p50 ms", "p99 ms"
    );
    let sqlite_dir = temp.path().join("sqlite");
    let store = SqliteStore::open(SqliteOptions::new(sqlite_dir.join("cordon.db")))
        .context("cannot open the SQLite store")?;
    let rows = evidence("sqlite", Arc::new(store), &settings).await?;
    summary.evidence.extend(rows);
    if let Some(url) = &args.database_url {
        let database = BenchDatabase::create(url).await?;
        let outcome = async {
            let store = PostgresStore::connect(PostgresOptions::new(database.url.clone()))
                .await
                .context("cannot open the PostgreSQL store")?;
            let rows = evidence("postgres", Arc::new(store.clone()), &settings).await;
            store.close().await;
            rows
        }
        .await;
        database.drop_database().await;
        summary.evidence.extend(outcome?);
    }
    println!();

    summary.proofs = Some(proofs(&settings).await?);
    println!();
    summary.print(&settings);
    drop(temp);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Statistics and output

/// Durations of one measured operation.
#[derive(Debug, Default, Clone)]
struct Times(Vec<Duration>);

impl Times {
    fn push(&mut self, elapsed: Duration) {
        self.0.push(elapsed);
    }

    /// The sample at quantile `q` (nearest rank), in milliseconds.
    fn ms(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1000.0
    }
}

struct Row {
    phase: &'static str,
    tool: String,
    times: Times,
    note: String,
}

impl Row {
    fn new(phase: &'static str, tool: &str, times: Times, note: impl Into<String>) -> Row {
        Row {
            phase,
            tool: tool.to_owned(),
            times,
            note: note.into(),
        }
    }
}

fn print_rows(rows: &[Row]) {
    println!(
        "  {:<30} {:<44} {:>9} {:>9}  notes",
        "phase", "tool", "p50 ms", "p90 ms"
    );
    for row in rows {
        println!(
            "  {:<30} {:<44} {:>9.1} {:>9.1}  {}",
            row.phase,
            row.tool,
            row.times.ms(0.5),
            row.times.ms(0.9),
            row.note
        );
    }
}

/// What the closing verdicts need from one workload.
struct WorkloadOutcome {
    name: &'static str,
    files: usize,
    rows: Vec<Row>,
}

impl WorkloadOutcome {
    fn p50(&self, phase: &str, tool_prefix: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.phase == phase && r.tool.starts_with(tool_prefix))
            .map(|r| r.times.ms(0.5))
    }
}

struct EvidenceRow {
    backend: &'static str,
    mode: &'static str,
    entries: u64,
    elapsed: Duration,
}

impl EvidenceRow {
    fn rate(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }
}

struct ProofOutcome {
    mean_us: f64,
    p50_us: f64,
    p99_us: f64,
}

#[derive(Default)]
struct Summary {
    workloads: Vec<WorkloadOutcome>,
    evidence: Vec<EvidenceRow>,
    proofs: Option<ProofOutcome>,
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

impl Summary {
    fn print(&self, settings: &Settings) {
        println!("targets:");
        if let Some(large) = self.workloads.get(1) {
            let cordon = large.p50(PHASE_INCREMENTAL, "cordon");
            for (label, prefix) in [
                ("git, default fsync", GitDurability::Default.label()),
                ("git, fsync=all", GitDurability::FsyncAll.label()),
                ("git, fsync=all batch", GitDurability::FsyncBatch.label()),
            ] {
                if let (Some(cordon), Some(git)) = (cordon, large.p50(PHASE_INCREMENTAL, prefix)) {
                    let ratio = git / cordon;
                    println!(
                        "  incremental checkpoint {} ({} files): cordon {cordon:.1} ms vs {label} {git:.1} ms = {ratio:.2}x faster (target >= 5x): {}",
                        large.name,
                        large.files,
                        verdict(ratio >= 5.0)
                    );
                }
            }
        }
        if let Some(small) = self.workloads.first()
            && let (Some(cordon), Some(git)) = (
                small.p50(PHASE_RESTORE_EMPTY, "cordon"),
                small.p50(PHASE_RESTORE_EMPTY, "git"),
            )
        {
            println!(
                "  restore {} ({} files) into an empty dir, p50: cordon {cordon:.1} ms (target <= 100 ms): {}; git checkout {git:.1} ms (target: cordon no slower): {} ({:.2}x git's time)",
                small.name,
                small.files,
                verdict(cordon <= 100.0),
                verdict(cordon <= git),
                cordon / git
            );
        }
        for row in &self.evidence {
            println!(
                "  evidence {} {}: {:.0} durable entries/s (target >= 20,000): {}",
                row.backend,
                row.mode,
                row.rate(),
                verdict(row.rate() >= 20_000.0)
            );
        }
        if let Some(proofs) = &self.proofs {
            println!(
                "  verify_inclusion, {} leaves: mean {:.2} us, p50 {:.2} us, p99 {:.2} us (target < 100 us): {}",
                settings.proof_leaves,
                proofs.mean_us,
                proofs.p50_us,
                proofs.p99_us,
                verdict(proofs.p99_us < 100.0)
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// External tools

struct Tools {
    git: PathBuf,
    tar: PathBuf,
    /// HOME for git, so that no user configuration applies.
    home: PathBuf,
    git_version: String,
    tar_version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GitDurability {
    /// git's default: `core.fsync=committed,-loose-object`, so `add` and `commit`
    /// (loose objects, index, refs) fsync nothing.
    Default,
    /// Every component fsynced, one fsync per file.
    FsyncAll,
    /// Every component; loose objects written back, then one fsync (the closest to
    /// cordon's one syncfs per snapshot).
    FsyncBatch,
}

const GIT_VARIANTS: [GitDurability; 3] = [
    GitDurability::Default,
    GitDurability::FsyncAll,
    GitDurability::FsyncBatch,
];

impl GitDurability {
    fn flags(self) -> &'static [&'static str] {
        match self {
            GitDurability::Default => &[],
            GitDurability::FsyncAll => &["-c", "core.fsync=all", "-c", "core.fsyncMethod=fsync"],
            GitDurability::FsyncBatch => &["-c", "core.fsync=all", "-c", "core.fsyncMethod=batch"],
        }
    }

    fn label(self) -> &'static str {
        match self {
            GitDurability::Default => "git add -A && commit (default: no fsync)",
            GitDurability::FsyncAll => "git add -A && commit (fsync=all, fsync)",
            GitDurability::FsyncBatch => "git add -A && commit (fsync=all, batch)",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            GitDurability::Default => "default",
            GitDurability::FsyncAll => "fsync",
            GitDurability::FsyncBatch => "batch",
        }
    }
}

impl Tools {
    async fn check(args: &ArtifactsArgs, temp: &Path) -> anyhow::Result<Tools> {
        let home = temp.join("home");
        std::fs::create_dir_all(&home)?;
        let mut tools = Tools {
            git: args.git.clone(),
            tar: args.tar.clone(),
            home,
            git_version: String::new(),
            tar_version: String::new(),
        };
        let mut git = tools.git_command();
        git.arg("--version");
        tools.git_version = output(git)
            .await
            .with_context(|| format!("cannot run {}", args.git.display()))?
            .trim()
            .to_owned();
        let mut tar = tokio::process::Command::new(&tools.tar);
        tar.arg("--version");
        tools.tar_version = output(tar)
            .await
            .with_context(|| format!("cannot run {}", args.tar.display()))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut zstd = tokio::process::Command::new("zstd");
        zstd.arg("--version");
        output(zstd)
            .await
            .context("tar --zstd needs the zstd program")?;
        Ok(tools)
    }

    /// git with no system or user configuration, automatic gc and maintenance off,
    /// and an identity for commits.
    fn git_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.git);
        for name in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_CONFIG",
            "GIT_CONFIG_PARAMETERS",
            "GIT_CONFIG_COUNT",
        ] {
            command.env_remove(name);
        }
        command
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .args([
                "-c",
                "gc.auto=0",
                "-c",
                "maintenance.auto=false",
                "-c",
                "user.name=cordon-bench",
                "-c",
                "user.email=bench@cordon.invalid",
                "-c",
                "commit.gpgSign=false",
            ]);
        command
    }

    fn git(
        &self,
        durability: GitDurability,
        git_dir: &Path,
        work_tree: &Path,
        args: &[&str],
    ) -> tokio::process::Command {
        let mut command = self.git_command();
        command
            .args(durability.flags())
            .arg("--git-dir")
            .arg(git_dir)
            .arg("--work-tree")
            .arg(work_tree)
            .args(args);
        command
    }

    /// Times `git add -A && git commit -q -m MESSAGE`.
    async fn add_commit(
        &self,
        durability: GitDurability,
        git_dir: &Path,
        work_tree: &Path,
        message: &str,
    ) -> anyhow::Result<Duration> {
        let add = self.git(durability, git_dir, work_tree, &["add", "-A"]);
        let commit = self.git(
            durability,
            git_dir,
            work_tree,
            &["commit", "-q", "--no-verify", "-m", message],
        );
        let started = Instant::now();
        output(add).await?;
        output(commit).await?;
        Ok(started.elapsed())
    }

    fn tar_create(&self, archive: &Path, dir: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.tar);
        command
            .arg("--zstd")
            .arg("-cf")
            .arg(archive)
            .arg("-C")
            .arg(dir)
            .arg(".");
        command
    }

    fn tar_extract(&self, archive: &Path, dir: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.tar);
        command
            .arg("--zstd")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(dir);
        command
    }
}

/// Runs a command to completion (bounded by [`COMMAND_TIMEOUT`]) and returns its
/// stdout; a failure carries its stderr.
async fn output(mut command: tokio::process::Command) -> anyhow::Result<String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = format!("{:?}", command.as_std());
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let result = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("{shown} took longer than {COMMAND_TIMEOUT:?}"))?
        .with_context(|| format!("waiting for {shown}"))?;
    if !result.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            result.status,
            String::from_utf8_lossy(&result.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&result.stdout).into_owned())
}

async fn timed(command: tokio::process::Command) -> anyhow::Result<Duration> {
    let started = Instant::now();
    output(command).await?;
    Ok(started.elapsed())
}

/// Flushes every file system (untimed): no timed operation pays for another's dirty
/// pages.
async fn sync() -> anyhow::Result<()> {
    output(tokio::process::Command::new("sync"))
        .await
        .map(|_| ())
}

/// The type of the file system holding `path`, from /proc/self/mountinfo.
fn filesystem_of(path: &Path) -> String {
    let Ok(path) = path.canonicalize() else {
        return "an unknown file system".to_owned();
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(mount_point), Some(separator)) =
            (fields.get(4), fields.iter().position(|f| *f == "-"))
        else {
            continue;
        };
        let Some(fs_type) = fields.get(separator + 1) else {
            continue;
        };
        let depth = mount_point.len();
        if path.starts_with(mount_point) && best.as_ref().is_none_or(|(d, _)| depth >= *d) {
            best = Some((depth, (*fs_type).to_owned()));
        }
    }
    best.map_or_else(|| "an unknown file system".to_owned(), |(_, fs)| fs)
}

/// Bytes of the files under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return std::fs::metadata(dir).map_or(0, |m| m.len());
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => disk_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}

/// Regular files under `dir`.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => count_files(&entry.path()),
            Ok(kind) if kind.is_file() => 1,
            _ => 0,
        })
        .sum()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

// ---------------------------------------------------------------------------------
// Generated workspaces

/// SplitMix64: small, fast and deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5851_F42D_4C95_7F2D)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn gaussian(&mut self) -> f64 {
        let u1 = self.unit().max(1e-12);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Source-like text: indented lines of identifiers and punctuation, words drawn with a
/// skew towards a few common ones (zstd -1 makes it about 3x smaller).
struct TextGenerator {
    words: Vec<Vec<u8>>,
}

const PUNCTUATION: [&str; 16] = [
    "=", "(", ")", "{", "}", ";", "->", "::", "&", ",", ".", "//", "=>", "0", "1", "\"",
];
const KEYWORDS: [&str; 12] = [
    "fn", "let", "if", "return", "self", "mut", "pub", "use", "match", "for", "in", "struct",
];

impl TextGenerator {
    fn new(rng: &mut Rng) -> TextGenerator {
        let mut words: Vec<Vec<u8>> = KEYWORDS.iter().map(|k| k.as_bytes().to_vec()).collect();
        while words.len() < 4096 {
            let length = 2 + rng.below(11) as usize;
            let word = (0..length)
                .map(|i| {
                    let r = rng.below(28) as u8;
                    if i > 0 && r >= 26 {
                        b'_'
                    } else {
                        b'a' + r % 26
                    }
                })
                .collect();
            words.push(word);
        }
        TextGenerator { words }
    }

    fn text(&self, rng: &mut Rng, size: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(size + 128);
        while out.len() < size {
            let indent = 4 * rng.below(4) as usize;
            out.resize(out.len() + indent, b' ');
            for token in 0..3 + rng.below(9) {
                if token > 0 {
                    out.push(b' ');
                }
                let r = rng.next_u64();
                if r.is_multiple_of(4) {
                    out.extend_from_slice(
                        PUNCTUATION[(r >> 8) as usize % PUNCTUATION.len()].as_bytes(),
                    );
                } else {
                    // Cubing a uniform number favours the first words of the list.
                    let u = (r >> 11) as f64 / (1u64 << 53) as f64;
                    let index = (u * u * u * self.words.len() as f64) as usize;
                    out.extend_from_slice(&self.words[index.min(self.words.len() - 1)]);
                }
            }
            out.push(b'\n');
        }
        out.truncate(size);
        out
    }
}

struct Workspace {
    dir: PathBuf,
    files: Vec<(PathBuf, u64)>,
    dirs: usize,
    total: u64,
    binary: u64,
    chunked: usize,
    largest: u64,
}

/// Sizes for `count` files adding up to about `total`: log-normal (most files a few
/// KiB, a few over 1 MiB), at least 16 bytes, at most [`MAX_FILE_BYTES`].
fn plan_sizes(rng: &mut Rng, count: usize, total: u64) -> Vec<u64> {
    let weights: Vec<f64> = (0..count).map(|_| (1.6 * rng.gaussian()).exp()).collect();
    let sum: f64 = weights.iter().sum();
    let mut scale = total as f64 / sum;
    let mut sizes = vec![0u64; count];
    for _ in 0..8 {
        for (size, weight) in sizes.iter_mut().zip(&weights) {
            *size = ((weight * scale) as u64).clamp(16, MAX_FILE_BYTES);
        }
        let got: u64 = sizes.iter().sum();
        if got == 0 || got.abs_diff(total) < total / 1000 {
            break;
        }
        scale *= total as f64 / got as f64;
    }
    sizes
}

/// Writes a workspace of `count` files, about `total` bytes, in nested directories
/// (none empty: git could not record an empty one). One file in ten is random bytes.
fn generate(dir: &Path, count: usize, total: u64, seed: u64) -> anyhow::Result<Workspace> {
    let mut rng = Rng::new(seed);
    let text = TextGenerator::new(&mut rng);
    let sizes = plan_sizes(&mut rng, count, total);
    // Directories: each under a random earlier one, at most five deep.
    let dir_count = (count / 12).max(1);
    let mut dirs: Vec<(PathBuf, usize)> = vec![(PathBuf::new(), 0)];
    for number in 1..dir_count {
        let (parent, depth) = loop {
            let candidate = &dirs[rng.below(dirs.len() as u64) as usize];
            if candidate.1 < 5 {
                break candidate.clone();
            }
        };
        dirs.push((parent.join(format!("d{number}")), depth + 1));
    }
    const EXTENSIONS: [&str; 6] = ["rs", "ts", "py", "json", "md", "txt"];
    let mut workspace = Workspace {
        dir: dir.to_path_buf(),
        files: Vec::with_capacity(count),
        dirs: dirs.len(),
        total: 0,
        binary: 0,
        chunked: 0,
        largest: 0,
    };
    for (path, _) in &dirs {
        std::fs::create_dir_all(dir.join(path))?;
    }
    for (number, &size) in sizes.iter().enumerate() {
        // The first files go one to a directory so that none stays empty.
        let parent = if number < dirs.len() {
            &dirs[number].0
        } else {
            &dirs[rng.below(dirs.len() as u64) as usize].0
        };
        let binary = rng.below(10) == 0;
        let (content, extension) = if binary {
            let mut bytes = vec![0u8; size as usize];
            rng.fill(&mut bytes);
            workspace.binary += size;
            (bytes, "bin")
        } else {
            let extension = EXTENSIONS[rng.below(EXTENSIONS.len() as u64) as usize];
            (text.text(&mut rng, size as usize), extension)
        };
        let relative = parent.join(format!("f{number}.{extension}"));
        std::fs::write(dir.join(&relative), &content)
            .with_context(|| format!("cannot write {}", relative.display()))?;
        workspace.total += size;
        workspace.largest = workspace.largest.max(size);
        if size > 1 << 20 {
            workspace.chunked += 1;
        }
        workspace.files.push((relative, size));
    }
    Ok(workspace)
}

/// Rewrites [`CHANGE_BYTES`] random bytes at a random place in `percent`% of the files
/// (at least one), chosen by `seed`. Returns how many files changed.
fn change(workspace: &Workspace, percent: f64, seed: u64) -> anyhow::Result<usize> {
    let count = ((workspace.files.len() as f64 * percent / 100.0).round() as usize)
        .clamp(1, workspace.files.len());
    let mut rng = Rng::new(seed);
    let mut chosen = HashSet::new();
    while chosen.len() < count {
        chosen.insert(rng.below(workspace.files.len() as u64) as usize);
    }
    let mut chosen: Vec<usize> = chosen.into_iter().collect();
    chosen.sort_unstable();
    for index in chosen {
        let (relative, size) = &workspace.files[index];
        let length = CHANGE_BYTES.min(*size);
        let offset = rng.below(size - length + 1);
        let mut bytes = vec![0u8; length as usize];
        rng.fill(&mut bytes);
        let path = workspace.dir.join(relative);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(&bytes)?;
    }
    Ok(count)
}

// ---------------------------------------------------------------------------------
// The workspace phases

const PHASE_FULL: &str = "full checkpoint";
const PHASE_INCREMENTAL: &str = "incremental checkpoint";
const PHASE_RESTORE_EMPTY: &str = "restore into an empty dir";
const PHASE_RESTORE_PREVIOUS: &str = "restore previous over changed";

const CORDON_FULL: &str = "cordon snapshot, new store (syncfs)";
const CORDON_INCREMENTAL: &str = "cordon snapshot with index (syncfs)";
const CORDON_RESTORE: &str = "cordon restore, no index";
const CORDON_RESTORE_INDEX: &str = "cordon restore with index";
const TAR_CREATE: &str = "tar --zstd -cf (everything)";
const TAR_EXTRACT: &str = "tar --zstd -xf";
const TAR_EXTRACT_OVER: &str = "tar --zstd -xf (everything, over it)";
const GIT_CHECKOUT_EMPTY: &str = "git checkout C -- . (fresh index)";
const GIT_CHECKOUT_PREVIOUS: &str = "git checkout HEAD~1 -- .";

fn progress(workload: &str, what: &str, run: usize, runs: usize) {
    eprintln!("  [{workload}] {what}: run {}/{runs}", run + 1);
}

/// Everything measured on one workspace.
async fn workload(
    name: &'static str,
    dir: &Path,
    files: usize,
    bytes: u64,
    settings: &Settings,
    tools: &Tools,
) -> anyhow::Result<WorkloadOutcome> {
    let runs = settings.runs;
    let ws_dir = dir.join("ws");
    let seed = if name == "W1" { 1 } else { 2 };
    eprintln!("[{name}] generating {files} files, {bytes} bytes");
    let workspace = {
        let ws_dir = ws_dir.clone();
        tokio::task::spawn_blocking(move || generate(&ws_dir, files, bytes, seed))
            .await
            .context("the generator failed")??
    };
    let blobs_dir = |run: usize| dir.join(format!("cordon-{run}"));
    let git_dir = |d: GitDurability, run: usize| dir.join(format!("git-{}-{run}", d.slug()));
    let archive = |label: &str| dir.join(format!("{label}.tar.zst"));
    let mut rows = Vec::new();

    // Full checkpoints: a fresh store, repository or archive each run. Nothing is
    // deleted before the end of the run: on ext4 without a journal, creating files
    // within a minute of deleting many is several times slower (the inode allocator
    // skips recently deleted inodes one by one), which would charge one tool for
    // another's clean-up.
    let mut cordon = Times::default();
    let mut git: Vec<Times> = vec![Times::default(); GIT_VARIANTS.len()];
    let mut tar = Times::default();
    let mut full_note = String::new();
    let mut index = SnapshotIndex::default();
    let mut root = String::new();
    for run in 0..runs {
        progress(name, PHASE_FULL, run, runs);
        let blobs = BlobStore::local(blobs_dir(run))?;
        sync().await?;
        let started = Instant::now();
        let (snap, new_index) = snapshot(&blobs, &ws_dir, None, &Limits::default()).await?;
        cordon.push(started.elapsed());
        full_note = format!(
            "{} blobs, {:.1} MiB written",
            snap.stats.blobs_written,
            mib(snap.stats.bytes_written)
        );
        if snap.stats.files != files as u64 {
            bail!(
                "the snapshot of {name} holds {} files, not {files}",
                snap.stats.files
            );
        }
        (root, index) = (snap.root, new_index);
        for (d, times) in GIT_VARIANTS.iter().zip(git.iter_mut()) {
            let repo = git_dir(*d, run);
            output(tools.git(*d, &repo, &ws_dir, &["init", "-q"])).await?;
            sync().await?;
            times.push(tools.add_commit(*d, &repo, &ws_dir, "v0").await?);
        }
        sync().await?;
        tar.push(timed(tools.tar_create(&archive(&format!("full-{run}")), &ws_dir)).await?);
    }
    let last = runs - 1;
    let blobs = BlobStore::local(blobs_dir(last))?;
    let repo = git_dir(GitDurability::Default, last);
    let full_archive = archive(&format!("full-{last}"));
    println!(
        "workload {name}: {} files in {} dirs, {:.1} MiB ({:.0}% random bytes; {} files over 1 MiB, the largest {:.1} MiB)",
        workspace.files.len(),
        workspace.dirs,
        mib(workspace.total),
        100.0 * workspace.binary as f64 / workspace.total.max(1) as f64,
        workspace.chunked,
        mib(workspace.largest)
    );
    println!(
        "  stored after a full checkpoint: cordon {:.1} MiB, git {:.1} MiB (loose objects), tar.zst {:.1} MiB",
        mib(disk_bytes(&blobs_dir(last))),
        mib(disk_bytes(&repo.join("objects"))),
        mib(disk_bytes(&full_archive))
    );
    rows.push(Row::new(PHASE_FULL, CORDON_FULL, cordon, full_note));
    for (d, times) in GIT_VARIANTS.iter().zip(git) {
        rows.push(Row::new(PHASE_FULL, d.label(), times, ""));
    }
    rows.push(Row::new(PHASE_FULL, TAR_CREATE, tar, ""));

    // Incremental checkpoints: a chain of versions, each with a fresh change.
    let mut roots = vec![root];
    let mut archives = vec![full_archive];
    let mut cordon = Times::default();
    let mut git: Vec<Times> = vec![Times::default(); GIT_VARIANTS.len()];
    let mut tar = Times::default();
    let mut changed = 0;
    let mut incremental_note = String::new();
    for run in 0..runs {
        progress(name, PHASE_INCREMENTAL, run, runs);
        changed = change(
            &workspace,
            settings.change_percent,
            1000 * seed + run as u64,
        )?;
        sync().await?;
        let started = Instant::now();
        let (snap, new_index) = snapshot(&blobs, &ws_dir, Some(&index), &Limits::default()).await?;
        cordon.push(started.elapsed());
        incremental_note = format!(
            "{} blobs, {:.2} MiB written",
            snap.stats.blobs_written,
            mib(snap.stats.bytes_written)
        );
        index = new_index;
        roots.push(snap.root);
        for (d, times) in GIT_VARIANTS.iter().zip(git.iter_mut()) {
            sync().await?;
            let message = format!("v{}", run + 1);
            times.push(
                tools
                    .add_commit(*d, &git_dir(*d, last), &ws_dir, &message)
                    .await?,
            );
        }
        let path = archive(&format!("inc-{run}"));
        sync().await?;
        tar.push(timed(tools.tar_create(&path, &ws_dir)).await?);
        archives.push(path);
    }
    println!(
        "  change: {changed} files ({}%), {CHANGE_BYTES} bytes rewritten in each; restores go back to the first version (empty dir) or one change back",
        settings.change_percent
    );
    rows.push(Row::new(
        PHASE_INCREMENTAL,
        CORDON_INCREMENTAL,
        cordon,
        incremental_note,
    ));
    for (d, times) in GIT_VARIANTS.iter().zip(git) {
        rows.push(Row::new(PHASE_INCREMENTAL, d.label(), times, ""));
    }
    rows.push(Row::new(PHASE_INCREMENTAL, TAR_CREATE, tar, ""));

    // Restores of the first version into an empty directory.
    let first_commit = {
        let command = tools.git(
            GitDurability::Default,
            &repo,
            &ws_dir,
            &["rev-list", "--max-parents=0", "HEAD"],
        );
        output(command).await?.trim().to_owned()
    };
    let mut cordon = Times::default();
    let mut git = Times::default();
    let mut tar = Times::default();
    for run in 0..runs {
        progress(name, PHASE_RESTORE_EMPTY, run, runs);
        let target = dir.join(format!("empty-cordon-{run}"));
        std::fs::create_dir(&target)?;
        sync().await?;
        let started = Instant::now();
        let (stats, _) = restore(&blobs, &roots[0], &target, None, None).await?;
        cordon.push(started.elapsed());
        if stats.files_written != files as u64 {
            bail!(
                "cordon restored {} files of {name}, not {files}",
                stats.files_written
            );
        }

        let target = dir.join(format!("empty-git-{run}"));
        std::fs::create_dir(&target)?;
        let index_file = dir.join(format!("index-{run}"));
        let mut checkout = tools.git(
            GitDurability::Default,
            &repo,
            &target,
            &["checkout", "-q", &first_commit, "--", "."],
        );
        checkout.env("GIT_INDEX_FILE", &index_file);
        sync().await?;
        git.push(timed(checkout).await?);
        if run == 0 && count_files(&target) != files {
            bail!(
                "git checkout restored {} files of {name}",
                count_files(&target)
            );
        }

        let target = dir.join(format!("empty-tar-{run}"));
        std::fs::create_dir(&target)?;
        sync().await?;
        tar.push(timed(tools.tar_extract(&archives[0], &target)).await?);
        if run == 0 && count_files(&target) != files {
            bail!("tar restored {} files of {name}", count_files(&target));
        }
    }
    rows.push(Row::new(
        PHASE_RESTORE_EMPTY,
        CORDON_RESTORE,
        cordon,
        format!("{files} files"),
    ));
    rows.push(Row::new(
        PHASE_RESTORE_EMPTY,
        GIT_CHECKOUT_EMPTY,
        git,
        "loose objects; checkout.workers=1 (default)",
    ));
    rows.push(Row::new(PHASE_RESTORE_EMPTY, TAR_EXTRACT, tar, ""));

    // Restores of the previous version over the changed directory, and back (untimed).
    let current = roots[runs].clone();
    let previous = roots[runs - 1].clone();
    let mut cordon = Times::default();
    let mut git = Times::default();
    let mut tar = Times::default();
    let mut previous_note = String::new();
    let settle = |index: SnapshotIndex| {
        let (blobs, ws_dir, repo, current) = (&blobs, &ws_dir, &repo, &current);
        async move {
            // Both indexes fresh and trusted: cordon's by a snapshot, git's by `add -A`.
            tokio::time::sleep(SETTLE).await;
            let (snap, index) = snapshot(blobs, ws_dir, Some(&index), &Limits::default()).await?;
            if &snap.root != current {
                bail!("the workspace is not at the version it should be at");
            }
            output(tools.git(GitDurability::Default, repo, ws_dir, &["add", "-A"])).await?;
            tokio::time::sleep(SETTLE).await;
            anyhow::Ok(index)
        }
    };
    index = settle(index).await?;
    for run in 0..runs {
        progress(name, PHASE_RESTORE_PREVIOUS, run, runs);
        sync().await?;
        let started = Instant::now();
        let (stats, restored) = restore(&blobs, &previous, &ws_dir, None, Some(&index)).await?;
        cordon.push(started.elapsed());
        previous_note = format!(
            "{} files written, {} unchanged",
            stats.files_written, stats.files_unchanged
        );
        let (_, back) = restore(&blobs, &current, &ws_dir, None, Some(&restored)).await?;
        index = settle(back).await?;

        sync().await?;
        git.push(
            timed(tools.git(
                GitDurability::Default,
                &repo,
                &ws_dir,
                &["checkout", "-q", "HEAD~1", "--", "."],
            ))
            .await?,
        );
        output(tools.git(
            GitDurability::Default,
            &repo,
            &ws_dir,
            &["checkout", "-q", "HEAD", "--", "."],
        ))
        .await?;
        index = settle(index).await?;
    }
    // tar replaces every file (unlinking the old ones), so its runs come last.
    for run in 0..runs {
        progress(name, "restore previous with tar", run, runs);
        sync().await?;
        tar.push(timed(tools.tar_extract(&archives[runs - 1], &ws_dir)).await?);
        let (_, back) = restore(&blobs, &current, &ws_dir, None, Some(&index)).await?;
        index = settle(back).await?;
    }
    rows.push(Row::new(
        PHASE_RESTORE_PREVIOUS,
        CORDON_RESTORE_INDEX,
        cordon,
        previous_note,
    ));
    rows.push(Row::new(
        PHASE_RESTORE_PREVIOUS,
        GIT_CHECKOUT_PREVIOUS,
        git,
        "rewrites only what differs from its index",
    ));
    rows.push(Row::new(PHASE_RESTORE_PREVIOUS, TAR_EXTRACT_OVER, tar, ""));
    print_rows(&rows);
    println!();
    Ok(WorkloadOutcome { name, files, rows })
}

// ---------------------------------------------------------------------------------
// Evidence

const EVIDENCE_ORIGIN: &str = "bench.cordon.invalid/evidence";

fn evidence_record(tenant_id: TenantId, session_id: SessionId, n: u64) -> Record {
    Record::new(tenant_id, Some(session_id), "exec", "key_bench")
        .field("argv", serde_json::json!(["cargo", "test", "--workspace"]))
        .field("exit_code", 0)
        .field("seq", n)
}

/// Durable appends per second through one evidence log over `store`: appenders each
/// awaiting `append` in a loop, then appenders queueing with `record` and one final
/// `flush`.
async fn evidence(
    backend: &'static str,
    store: Arc<dyn Store>,
    settings: &Settings,
) -> anyhow::Result<Vec<EvidenceRow>> {
    let tenant = Tenant {
        id: TenantId::generate(),
        name: format!("bench-{}", uuid::Uuid::now_v7().simple()),
        created_at: Timestamp::now(),
    };
    store.create_tenant(&tenant).await?;
    let (signer, _) = Signer::generate(EVIDENCE_ORIGIN)?;
    let log = EvidenceLog::spawn(Arc::clone(&store), Arc::new(signer), EVIDENCE_ORIGIN, None);
    let session = SessionId::generate();
    // Warm-up: loads the (empty) tree and opens connections.
    for n in 0..16 {
        log.append(evidence_record(tenant.id, session, n)).await?;
    }
    let mut total = 16;
    let mut rows = Vec::new();

    eprintln!("  [evidence {backend}] append");
    let started = Instant::now();
    let deadline = started + settings.evidence;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..settings.appenders {
        let log = log.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let begun = Instant::now();
                log.append(evidence_record(tenant.id, session, 0)).await?;
                latencies.push(begun.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Times::default();
    while let Some(result) = tasks.join_next().await {
        latencies.0.extend(result??);
    }
    let elapsed = started.elapsed();
    let entries = latencies.0.len() as u64;
    total += entries;
    print_evidence(
        backend,
        "append (each awaits durability)",
        entries,
        elapsed,
        &latencies,
    );
    rows.push(EvidenceRow {
        backend,
        mode: "append",
        entries,
        elapsed,
    });

    eprintln!("  [evidence {backend}] record + flush");
    let started = Instant::now();
    let deadline = started + settings.evidence;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..settings.appenders {
        let log = log.clone();
        tasks.spawn(async move {
            let mut queued = 0u64;
            while Instant::now() < deadline {
                log.record(evidence_record(tenant.id, session, queued))
                    .await;
                queued += 1;
            }
            queued
        });
    }
    let mut entries = 0;
    while let Some(result) = tasks.join_next().await {
        entries += result?;
    }
    log.flush().await?;
    let elapsed = started.elapsed();
    total += entries;
    print_evidence(
        backend,
        "record, then one flush (until durable)",
        entries,
        elapsed,
        &Times::default(),
    );
    rows.push(EvidenceRow {
        backend,
        mode: "record + flush",
        entries,
        elapsed,
    });

    let stored = store.evidence_size(tenant.id).await?;
    if stored != total {
        bail!("{backend}: {stored} evidence entries stored, {total} appended");
    }

    // What closing a session costs at the end of a long log: its bundle (entries,
    // inclusion proofs, checkpoints and their consistency proofs), verified once.
    let closing = SessionId::generate();
    for n in 0..SESSION_ENTRIES {
        log.record(evidence_record(tenant.id, closing, n)).await;
    }
    log.flush().await?;
    let mut exports = Times::default();
    let mut bytes = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let bundle = log.export(tenant.id, Some(closing)).await?;
        exports.push(started.elapsed());
        bytes = bundle.len();
    }
    println!(
        "{:<9} export of a {SESSION_ENTRIES}-entry session at the end of a {}-entry log: p50 {:.1} ms, max {:.1} ms ({} KiB)",
        backend,
        stored + SESSION_ENTRIES,
        exports.ms(0.5),
        exports.ms(1.0),
        bytes / 1024
    );
    Ok(rows)
}

/// Entries of the session exported after the append phases.
const SESSION_ENTRIES: u64 = 20;

fn print_evidence(backend: &str, mode: &str, entries: u64, elapsed: Duration, latencies: &Times) {
    let show = |ms: f64| {
        if ms.is_nan() {
            "-".to_owned()
        } else {
            format!("{ms:.2}")
        }
    };
    println!(
        "{:<9} {:<38} {:>9} {:>8.2} {:>10.0} {:>8} {:>8}",
        backend,
        mode,
        entries,
        elapsed.as_secs_f64(),
        entries as f64 / elapsed.as_secs_f64(),
        show(latencies.ms(0.5)),
        show(latencies.ms(0.99))
    );
}

// ---------------------------------------------------------------------------------
// Inclusion proofs

async fn proofs(settings: &Settings) -> anyhow::Result<ProofOutcome> {
    let (leaves_count, calls) = (settings.proof_leaves, settings.proof_calls);
    tokio::task::spawn_blocking(move || proofs_blocking(leaves_count, calls))
        .await
        .context("the proof task failed")?
}

fn proofs_blocking(leaves_count: u64, calls: usize) -> anyhow::Result<ProofOutcome> {
    let leaves: Vec<merkle::Hash> = (0..leaves_count)
        .map(|i| merkle::leaf_hash(&i.to_le_bytes()))
        .collect();
    let started = Instant::now();
    let root = merkle::root(&leaves);
    let root_time = started.elapsed();
    let mut rng = Rng::new(0x5EED);
    // The library's own proofs, for a few indexes: what the fast path below must match.
    let mut library = Times::default();
    let checks: Vec<u64> = (0..3).map(|_| rng.below(leaves_count)).collect();
    let mut expected = Vec::new();
    for &index in &checks {
        let started = Instant::now();
        expected.push(merkle::inclusion_proof(&leaves, index)?);
        library.push(started.elapsed());
    }
    let tree = MerkleTree::from_leaves(leaves);
    if tree.root(leaves_count)? != root {
        bail!("MerkleTree::root differs from merkle::root");
    }
    for (&index, proof) in checks.iter().zip(&expected) {
        if &tree.inclusion_proof(index, leaves_count)? != proof {
            bail!("MerkleTree's proof of leaf {index} differs from merkle::inclusion_proof");
        }
    }
    let mut made = Times::default();
    let mut cases = Vec::with_capacity(calls);
    for _ in 0..calls {
        let index = rng.below(leaves_count);
        let started = Instant::now();
        let proof = tree.inclusion_proof(index, leaves_count)?;
        made.push(started.elapsed());
        let leaf = tree.leaf(index).context("a leaf of the tree")?;
        cases.push((index, leaf, proof));
    }
    let mut each = Vec::with_capacity(calls);
    let all = Instant::now();
    for (index, leaf, proof) in &cases {
        let started = Instant::now();
        let verified = merkle::verify_inclusion(leaf, *index, leaves_count, proof, &root);
        each.push(started.elapsed());
        verified?;
    }
    let total = all.elapsed();
    each.sort_unstable();
    let at = |q: f64| {
        let index = ((each.len() - 1) as f64 * q).round() as usize;
        each[index].as_secs_f64() * 1e6
    };
    let outcome = ProofOutcome {
        mean_us: total.as_secs_f64() * 1e6 / calls as f64,
        p50_us: at(0.5),
        p99_us: at(0.99),
    };
    println!(
        "inclusion proofs: {leaves_count} leaves ({} hashes a proof), {calls} verify_inclusion calls at random indexes",
        cases.first().map_or(0, |c| c.2.len())
    );
    println!(
        "  verify_inclusion: mean {:.2} us, p50 {:.2} us, p99 {:.2} us, max {:.2} us",
        outcome.mean_us,
        outcome.p50_us,
        outcome.p99_us,
        at(1.0)
    );
    println!(
        "  making proofs: MerkleTree::inclusion_proof (the server's, stored subtrees) p50 {:.2} us, p99 {:.2} us; merkle::inclusion_proof (O(n), recomputes them) {:.0} ms; merkle::root over all leaves {:.0} ms",
        made.ms(0.5) * 1000.0,
        made.ms(0.99) * 1000.0,
        library.ms(0.5),
        root_time.as_secs_f64() * 1000.0
    );
    Ok(outcome)
}
