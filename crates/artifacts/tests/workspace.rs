//! Working state against real directories: snapshots, restores, diffs, tar handoff,
//! garbage collection, corruption, and the same round trip on an S3-compatible server.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cordon_artifacts::{
    ArchiveLimits, BlobStore, ChangeKind, Limits, S3Config, collect_garbage, diff, export_tar,
    file_list, import_tar, read_file, restore, snapshot, subset,
};
use cordon_core::ReasonCode;

fn random_bytes(length: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(length + 8);
    seed |= 1;
    while out.len() < length {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(length);
    out
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A workspace with every kind of thing a version holds.
fn populate(dir: &Path) {
    write(&dir.join("run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    write(&dir.join("secret.txt"), b"only me", 0o600);
    write(&dir.join("empty"), b"", 0o644);
    write(&dir.join("src/lib.rs"), b"pub fn f() {}\n", 0o644);
    write(&dir.join("src/deep/er/file.txt"), b"deep", 0o640);
    write(&dir.join("big.bin"), &random_bytes(5 << 20, 42), 0o644);
    mkdir(&dir.join("empty-dir"), 0o755);
    mkdir(&dir.join("private"), 0o700);
    write(&dir.join("private/key"), b"k", 0o600);
    fs::set_permissions(dir.join("src/deep"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("lib.rs", dir.join("src/link-to-lib")).unwrap();
    symlink("../run.sh", dir.join("src/deep/up")).unwrap();
    symlink("src", dir.join("src-link")).unwrap();
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    File { mode: u32, content: Vec<u8> },
    Dir { mode: u32 },
    Symlink { target: PathBuf },
}

/// Everything under `dir`, without following symlinks.
fn tree_of(dir: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let relative = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let seen = if meta.file_type().is_symlink() {
                Seen::Symlink {
                    target: fs::read_link(&path).unwrap(),
                }
            } else if meta.is_dir() {
                stack.push(path.clone());
                Seen::Dir { mode }
            } else {
                Seen::File {
                    mode,
                    content: fs::read(&path).unwrap(),
                }
            };
            out.insert(relative, seen);
        }
    }
    out
}

struct Fixture {
    _temp: tempfile::TempDir,
    blob_dir: PathBuf,
    blobs: BlobStore,
    base: PathBuf,
}

fn fixture() -> Fixture {
    let temp = tempfile::tempdir().unwrap();
    let blob_dir = temp.path().join("blobs");
    let blobs = BlobStore::local(&blob_dir).unwrap();
    let base = temp.path().to_path_buf();
    Fixture {
        _temp: temp,
        blob_dir,
        blobs,
        base,
    }
}

fn reason<T: std::fmt::Debug>(result: cordon_artifacts::Result<T>) -> ReasonCode {
    result.unwrap_err().reason()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_and_restore_round_trip_byte_for_byte_and_mode_for_mode() {
    let f = fixture();
    let source = f.base.join("source");
    populate(&source);
    let (version, _) = snapshot(&f.blobs, &source, None, &Limits::default())
        .await
        .unwrap();
    assert_eq!(version.stats.files, 7);
    assert_eq!(version.stats.symlinks, 3);
    assert_eq!(version.stats.dirs, 5);
    assert!(version.stats.blobs_written > 10, "{:?}", version.stats);

    let target = f.base.join("target");
    let (stats, _) = restore(&f.blobs, &version.root, &target, None, None)
        .await
        .unwrap();
    assert_eq!(stats.files_written, 7);
    assert_eq!(tree_of(&source), tree_of(&target));

    // The restored directory records as the same version, writing nothing.
    let (again, _) = snapshot(&f.blobs, &target, None, &Limits::default())
        .await
        .unwrap();
    assert_eq!(again.root, version.root);
    assert_eq!(again.stats.blobs_written, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_over_a_dirty_directory_makes_it_exactly_the_version() {
    let f = fixture();
    let source = f.base.join("source");
    populate(&source);
    let (version, _) = snapshot(&f.blobs, &source, None, &Limits::default())
        .await
        .unwrap();
    let target = f.base.join("target");
    let (_, index) = restore(&f.blobs, &version.root, &target, None, None)
        .await
        .unwrap();

    // Dirty it: extra files and directories, changed content and modes, and a symlink
    // planted where a directory belongs, pointing at a directory outside.
    let outside = f.base.join("outside");
    write(&outside.join("sentinel"), b"do not touch", 0o644);
    write(&target.join("extra.txt"), b"extra", 0o644);
    write(&target.join("extra-dir/nested/file"), b"x", 0o644);
    mkdir(&target.join("extra-dir/locked"), 0o500);
    write(&target.join("run.sh"), b"changed", 0o755);
    fs::set_permissions(target.join("secret.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_dir_all(target.join("private")).unwrap();
    symlink(&outside, target.join("private")).unwrap();
    fs::remove_file(target.join("src/link-to-lib")).unwrap();
    write(&target.join("src/link-to-lib"), b"now a file", 0o644);
    fs::remove_file(target.join("empty")).unwrap();
    mkdir(&target.join("empty"), 0o755);

    let (stats, _) = restore(&f.blobs, &version.root, &target, None, Some(&index))
        .await
        .unwrap();
    assert_eq!(tree_of(&source), tree_of(&target));
    assert_eq!(
        fs::read(outside.join("sentinel")).unwrap(),
        b"do not touch",
        "the planted symlink was followed"
    );
    assert_eq!(tree_of(&outside).len(), 1);
    // Unchanged files (the 5 MiB one among them) are not rewritten.
    assert!(stats.files_unchanged >= 4, "{stats:?}");
    assert!(stats.files_written <= 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incremental_snapshot_writes_only_changed_blobs() {
    let f = fixture();
    let dir = f.base.join("ws");
    populate(&dir);
    let (first, index) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    // Let the files' times settle, so the index trusts them.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let (same, index) = snapshot(&f.blobs, &dir, Some(&index), &Limits::default())
        .await
        .unwrap();
    assert_eq!(same.root, first.root);
    assert_eq!(same.stats.blobs_written, 0);

    // One small file at the root: its blob and the root manifest.
    write(&dir.join("run.sh"), b"#!/bin/sh\necho changed\n", 0o755);
    let (second, index) = snapshot(&f.blobs, &dir, Some(&index), &Limits::default())
        .await
        .unwrap();
    assert_ne!(second.root, first.root);
    assert_eq!(second.stats.blobs_written, 2, "{:?}", second.stats);

    // A small edit in the middle of the 5 MiB file: a chunk or two, the chunk list,
    // the root manifest.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut big = fs::read(dir.join("big.bin")).unwrap();
    big.splice(2 << 20..2 << 20, b"inserted".iter().copied());
    fs::write(dir.join("big.bin"), &big).unwrap();
    let (third, _) = snapshot(&f.blobs, &dir, Some(&index), &Limits::default())
        .await
        .unwrap();
    assert!(
        (3..=4).contains(&third.stats.blobs_written),
        "{:?}",
        third.stats
    );
    assert!(third.stats.bytes_written < 3 << 20, "{:?}", third.stats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_version_cannot_hold_is_refused() {
    let f = fixture();
    for (name, make) in [
        (
            "absolute",
            Box::new(|d: &Path| symlink("/etc/passwd", d.join("link")).unwrap())
                as Box<dyn Fn(&Path)>,
        ),
        (
            "climbs out",
            Box::new(|d: &Path| {
                mkdir(&d.join("sub"), 0o755);
                symlink("../../outside", d.join("sub/link")).unwrap();
            }),
        ),
        (
            "chain",
            Box::new(|d: &Path| {
                // Each looks inside on its own; `n` climbs out through `l`.
                mkdir(&d.join("a/b"), 0o755);
                mkdir(&d.join("x"), 0o755);
                symlink("../../x", d.join("a/b/l")).unwrap();
                symlink("a/b/l/../..", d.join("n")).unwrap();
            }),
        ),
        (
            "fifo",
            Box::new(|d: &Path| {
                nix::unistd::mkfifo(
                    &d.join("pipe"),
                    nix::sys::stat::Mode::from_bits_truncate(0o644),
                )
                .unwrap();
            }),
        ),
    ] {
        let dir = f.base.join(name);
        mkdir(&dir, 0o755);
        write(&dir.join("ok.txt"), b"fine", 0o644);
        make(&dir);
        let error = snapshot(&f.blobs, &dir, None, &Limits::default())
            .await
            .unwrap_err();
        assert_eq!(
            error.reason(),
            ReasonCode::WorkspaceUnsupported,
            "{name}: {error}"
        );
    }

    let dir = f.base.join("limits");
    populate(&dir);
    let tight = Limits {
        max_files: 5,
        ..Limits::default()
    };
    assert_eq!(
        reason(snapshot(&f.blobs, &dir, None, &tight).await),
        ReasonCode::WorkspaceUnsupported
    );
    let tight = Limits {
        max_file_bytes: 1 << 20,
        ..Limits::default()
    };
    let error = snapshot(&f.blobs, &dir, None, &tight).await.unwrap_err();
    assert!(error.to_string().contains("big.bin"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_lists_what_changed() {
    let f = fixture();
    let dir = f.base.join("ws");
    populate(&dir);
    let (before, _) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    write(&dir.join("run.sh"), b"changed", 0o755);
    fs::set_permissions(dir.join("secret.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::remove_dir_all(dir.join("private")).unwrap();
    write(&dir.join("new/one.txt"), b"1", 0o644);
    fs::remove_file(dir.join("empty")).unwrap();
    mkdir(&dir.join("empty"), 0o755);
    let (after, _) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();

    let changes = diff(&f.blobs, &before.root, &after.root).await.unwrap();
    let summary: Vec<(&str, ChangeKind)> =
        changes.iter().map(|c| (c.path.as_str(), c.kind)).collect();
    assert_eq!(
        summary,
        vec![
            ("empty", ChangeKind::TypeChanged),
            ("new", ChangeKind::Added),
            ("new/one.txt", ChangeKind::Added),
            ("private", ChangeKind::Removed),
            ("private/key", ChangeKind::Removed),
            ("run.sh", ChangeKind::Modified),
            ("secret.txt", ChangeKind::ModeChanged),
        ]
    );
    let run = &changes[5];
    assert_eq!((run.size_before, run.size_after), (Some(18), Some(7)));
    assert!(
        diff(&f.blobs, &after.root, &after.root)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tar_export_then_import_gives_the_same_root() {
    let f = fixture();
    let dir = f.base.join("ws");
    populate(&dir);
    // A path longer than 100 bytes needs a GNU long-name record.
    let long = "d".repeat(60);
    write(&dir.join(format!("{long}/{long}/file")), b"long", 0o644);
    let (version, _) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    let tar = export_tar(&f.blobs, &version.root, Vec::new())
        .await
        .unwrap();
    let again = export_tar(&f.blobs, &version.root, Vec::new())
        .await
        .unwrap();
    assert_eq!(tar, again, "export is deterministic");

    let imported = import_tar(
        &f.blobs,
        std::io::Cursor::new(tar.clone()),
        &ArchiveLimits::default(),
    )
    .await
    .unwrap();
    assert_eq!(imported.root, version.root);
    assert_eq!(imported.stats.files, version.stats.files);

    // GNU tar reads it the same way.
    let unpacked = f.base.join("unpacked");
    mkdir(&unpacked, 0o755);
    let status = std::process::Command::new("tar")
        .args(["-x", "-p", "-f", "-", "-C"])
        .arg(&unpacked)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(&tar)?;
            child.wait()
        })
        .unwrap();
    assert!(status.success());
    assert_eq!(tree_of(&dir), tree_of(&unpacked));

    let listed = file_list(&f.blobs, &version.root).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|e| e.path == "src/link-to-lib" && e.target.as_deref() == Some("lib.rs"))
    );
    assert_eq!(
        read_file(&f.blobs, &version.root, "src/lib.rs")
            .await
            .unwrap(),
        b"pub fn f() {}\n"
    );
    assert_eq!(
        read_file(&f.blobs, &version.root, "big.bin").await.unwrap(),
        random_bytes(5 << 20, 42)
    );
    assert_eq!(
        reason(read_file(&f.blobs, &version.root, "src/nope").await),
        ReasonCode::NotFound
    );
}

/// One raw tar entry: the header's fields are written directly, so hostile names pass.
fn raw_entry(
    out: &mut Vec<u8>,
    path: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
    declared: u64,
) {
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..path.len()].copy_from_slice(path.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(declared);
    header.set_mtime(0);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn archive(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, link, data) in entries {
        raw_entry(&mut out, path, *kind, link, data, data.len() as u64);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_archives_are_refused_and_store_nothing() {
    use tar::EntryType::{Block, Char, Directory, Fifo, Link, Regular, Symlink};
    let f = fixture();
    let mut huge = Vec::new();
    raw_entry(&mut huge, "huge", Regular, "", b"", 1 << 40);
    huge.extend_from_slice(&[0; 1024]);
    let many: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let many_entries: Vec<(&str, tar::EntryType, &str, &[u8])> = many
        .iter()
        .map(|p| (p.as_str(), Regular, "", &b"x"[..]))
        .collect();
    let cases: Vec<(&str, Vec<u8>, ReasonCode)> = vec![
        (
            "absolute",
            archive(&[("/etc/cron.d/x", Regular, "", b"x")]),
            ReasonCode::ArchiveEntryEscapes,
        ),
        (
            "dotdot",
            archive(&[("a/../../x", Regular, "", b"x")]),
            ReasonCode::ArchiveEntryEscapes,
        ),
        (
            "symlink out",
            archive(&[("d/l", Symlink, "../../etc", b"")]),
            ReasonCode::ArchiveEntryEscapes,
        ),
        (
            "absolute symlink",
            archive(&[("l", Symlink, "/etc", b"")]),
            ReasonCode::ArchiveEntryEscapes,
        ),
        (
            "through a symlink",
            archive(&[
                ("d/", Directory, "", b""),
                ("l", Symlink, "d", b""),
                ("l/x", Regular, "", b"x"),
            ]),
            ReasonCode::ArchiveEntryEscapes,
        ),
        (
            "symlink chain out",
            archive(&[
                ("a/b/l", Symlink, "../../x", b""),
                ("x/", Directory, "", b""),
                ("n", Symlink, "a/b/l/../..", b""),
            ]),
            ReasonCode::ArchiveEntryEscapes,
        ),
        (
            "char device",
            archive(&[("a", Regular, "", b"x"), ("tty", Char, "", b"")]),
            ReasonCode::ArchiveEntryUnsupported,
        ),
        (
            "block device",
            archive(&[("sda", Block, "", b"")]),
            ReasonCode::ArchiveEntryUnsupported,
        ),
        (
            "fifo",
            archive(&[("p", Fifo, "", b"")]),
            ReasonCode::ArchiveEntryUnsupported,
        ),
        (
            "dangling hard link",
            archive(&[("h", Link, "missing", b"")]),
            ReasonCode::ArchiveEntryUnsupported,
        ),
        ("huge declared size", huge, ReasonCode::ArchiveTooLarge),
        (
            "too many entries",
            archive(&many_entries),
            ReasonCode::ArchiveTooLarge,
        ),
        (
            "not a tar",
            random_bytes(4096, 3),
            ReasonCode::ArchiveInvalid,
        ),
        (
            "text",
            b"hello, this is not an archive at all".repeat(20),
            ReasonCode::ArchiveInvalid,
        ),
    ];
    let limits = ArchiveLimits {
        max_entries: 10,
        ..ArchiveLimits::default()
    };
    for (name, bytes, expected) in cases {
        let error = import_tar(&f.blobs, std::io::Cursor::new(bytes), &limits)
            .await
            .unwrap_err();
        assert_eq!(error.reason(), expected, "{name}: {error}");
        assert!(
            f.blobs.list().await.unwrap().is_empty(),
            "{name} stored blobs"
        );
    }

    // What is allowed: a hard link to an earlier file is a copy, a symlink inside.
    let fine = archive(&[
        ("a.txt", Regular, "", b"hello"),
        ("d/b.txt", Link, "a.txt", b""),
        ("d/l", Symlink, "../a.txt", b""),
    ]);
    let version = import_tar(&f.blobs, std::io::Cursor::new(fine), &limits)
        .await
        .unwrap();
    assert_eq!(
        read_file(&f.blobs, &version.root, "d/b.txt").await.unwrap(),
        b"hello"
    );
    assert_eq!(version.stats.symlinks, 1);
}

fn blob_path(f: &Fixture, hash: &str) -> PathBuf {
    f.blob_dir.join("blobs").join(&hash[..2]).join(hash)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_deletes_only_unreachable_blobs_past_the_grace() {
    let f = fixture();
    let dir = f.base.join("ws");
    populate(&dir);
    let (old, _) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    write(&dir.join("run.sh"), b"only in the new version", 0o755);
    fs::remove_file(dir.join("big.bin")).unwrap();
    let (new, _) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    let total = f.blobs.list().await.unwrap().len() as u64;

    // Everything is younger than an hour: nothing goes.
    let stats = collect_garbage(
        &f.blobs,
        std::slice::from_ref(&new.root),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert_eq!((stats.deleted, stats.kept), (0, total));

    // A live root whose manifest is missing stops the collection before any delete.
    let bogus = "0".repeat(64);
    let error = collect_garbage(&f.blobs, &[new.root.clone(), bogus], Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(error.reason(), ReasonCode::BlobMissing);
    assert_eq!(f.blobs.list().await.unwrap().len() as u64, total);

    // No grace: the old version's own blobs go (its root, the old run.sh, the big
    // file's chunks and chunk list); the new version still restores.
    let stats = collect_garbage(&f.blobs, std::slice::from_ref(&new.root), Duration::ZERO)
        .await
        .unwrap();
    assert!(stats.deleted >= 5, "{stats:?}");
    assert_eq!(stats.deleted + stats.kept, total);
    assert!(stats.bytes_freed > 4 << 20, "{stats:?}");
    let target = f.base.join("target");
    restore(&f.blobs, &new.root, &target, None, None)
        .await
        .unwrap();
    assert_eq!(tree_of(&dir), tree_of(&target));
    assert_eq!(
        reason(restore(&f.blobs, &old.root, &f.base.join("old"), None, None).await),
        ReasonCode::BlobMissing
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_is_detected_and_the_workspace_is_left_alone() {
    let f = fixture();
    let dir = f.base.join("ws");
    write(&dir.join("a.txt"), b"version one", 0o644);
    let (one, _) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    write(&dir.join("a.txt"), b"version two", 0o644);
    write(&dir.join("b.txt"), b"also new", 0o644);
    let (two, _) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();

    // Corrupt the blob of version two's a.txt: same length, valid zstd, wrong bytes.
    let hash = blake3::hash(b"version two").to_hex().to_string();
    let path = blob_path(&f, &hash);
    fs::write(&path, zstd::bulk::compress(b"version 2!!", 1).unwrap()).unwrap();

    let target = f.base.join("target");
    restore(&f.blobs, &one.root, &target, None, None)
        .await
        .unwrap();
    let before = tree_of(&target);
    assert_eq!(
        reason(restore(&f.blobs, &two.root, &target, None, None).await),
        ReasonCode::BlobMissing
    );
    assert_eq!(
        tree_of(&target),
        before,
        "a failed restore changed the workspace"
    );
    assert_eq!(
        reason(read_file(&f.blobs, &two.root, "a.txt").await),
        ReasonCode::BlobMissing
    );

    // Garbage bytes, and a missing blob, are the same to a reader.
    fs::write(&path, b"not zstd").unwrap();
    assert_eq!(
        reason(read_file(&f.blobs, &two.root, "a.txt").await),
        ReasonCode::BlobMissing
    );
    fs::remove_file(&path).unwrap();
    assert_eq!(
        reason(read_file(&f.blobs, &two.root, "a.txt").await),
        ReasonCode::BlobMissing
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subset_keeps_the_chosen_files_with_their_digests() {
    use sha2::Digest;
    let f = fixture();
    let dir = f.base.join("ws");
    populate(&dir);
    let (version, _) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    let paths = vec!["src/deep/er/file.txt".to_owned(), "big.bin".to_owned()];
    let (root, subjects) = subset(&f.blobs, &version.root, &paths).await.unwrap();
    assert_eq!(subjects.len(), 2);
    assert_eq!(subjects[0].path, "big.bin");
    assert_eq!(subjects[0].size, 5 << 20);
    assert_eq!(
        subjects[0].sha256_hex,
        hex::encode(sha2::Sha256::digest(random_bytes(5 << 20, 42)))
    );
    let listed: Vec<String> = file_list(&f.blobs, &root)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(
        listed,
        [
            "big.bin",
            "src",
            "src/deep",
            "src/deep/er",
            "src/deep/er/file.txt"
        ]
    );

    let (_, all) = subset(&f.blobs, &version.root, &[]).await.unwrap();
    assert_eq!(all.len(), 7);
    for missing in ["nope", "src", "src/link-to-lib", "/big.bin"] {
        assert_eq!(
            reason(subset(&f.blobs, &version.root, &[missing.to_owned()]).await),
            ReasonCode::ReleasePathNotFound,
            "{missing}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_as_an_owner_creates_everything_as_that_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to write as another user");
        return;
    }
    let f = fixture();
    let dir = f.base.join("ws");
    populate(&dir);
    let (version, _) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    let target = f.base.join("target");
    mkdir(&target, 0o755);
    nix::unistd::chown(
        &target,
        Some(nix::unistd::Uid::from_raw(4321)),
        Some(nix::unistd::Gid::from_raw(4321)),
    )
    .unwrap();
    restore(&f.blobs, &version.root, &target, Some(4321), None)
        .await
        .unwrap();
    assert_eq!(tree_of(&dir), tree_of(&target));
    let mut stack = vec![target.clone()];
    while let Some(current) = stack.pop() {
        for entry in fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (4321, 4321), "{}", path.display());
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    // The server thread's own ids are back: a file it writes now is root's.
    write(&f.base.join("after"), b"x", 0o644);
    assert_eq!(fs::metadata(f.base.join("after")).unwrap().uid(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_trip_works_on_an_s3_compatible_server() {
    let moto = cordon_test_support::s3::S3Server::start("cordon-blobs");
    let blobs = BlobStore::s3(S3Config {
        endpoint: moto.endpoint(),
        bucket: "cordon-blobs".into(),
        region: "us-east-1".into(),
        access_key_id: "testing".into(),
        secret_access_key: "testing".into(),
        allow_http: true,
    })
    .unwrap();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("ws");
    populate(&dir);
    let (version, index) = snapshot(&blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    assert!(version.stats.blobs_written > 10);
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&dir.join("run.sh"), b"changed", 0o755);
    let (second, _) = snapshot(&blobs, &dir, Some(&index), &Limits::default())
        .await
        .unwrap();
    assert_eq!(second.stats.blobs_written, 2, "{:?}", second.stats);

    let target = temp.path().join("target");
    restore(&blobs, &version.root, &target, None, None)
        .await
        .unwrap();
    write(&dir.join("run.sh"), b"#!/bin/sh\necho hi\n", 0o755);
    assert_eq!(tree_of(&dir), tree_of(&target));

    // The same blob written again is not counted; GC sees the bucket's listing.
    let listed = blobs.list().await.unwrap().len() as u64;
    let stats = collect_garbage(&blobs, std::slice::from_ref(&version.root), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(stats.deleted, 2, "{stats:?}");
    assert_eq!(stats.kept + stats.deleted, listed);
    let again = temp.path().join("again");
    restore(&blobs, &version.root, &again, None, None)
        .await
        .unwrap();
    assert_eq!(tree_of(&target), tree_of(&again));
}

/// 1,000 files, 50 MB: prints snapshot and restore times. Timing needs an optimised
/// build, so it runs only when asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a timing run: cargo test --release -p cordon-artifacts -- --ignored --nocapture"]
async fn timing_of_a_thousand_files() {
    let f = fixture();
    let dir = f.base.join("ws");
    for i in 0..1000u64 {
        // Half compressible text, half random.
        let mut bytes = random_bytes(25_000, (i + 1) * 0x9e37_79b9);
        bytes.extend(
            std::iter::repeat_n(b"fn main() { println!(\"hello\"); }\n".iter().copied(), 800)
                .flatten(),
        );
        write(
            &dir.join(format!("d{}/f{i}.rs", i % 20)),
            &bytes[..50_000],
            0o644,
        );
    }
    let timed = std::time::Instant::now();
    let (version, index) = snapshot(&f.blobs, &dir, None, &Limits::default())
        .await
        .unwrap();
    eprintln!("first snapshot: {:?} {:?}", timed.elapsed(), version.stats);
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&dir.join("d3/f3.rs"), b"changed", 0o644);
    let timed = std::time::Instant::now();
    let (second, _) = snapshot(&f.blobs, &dir, Some(&index), &Limits::default())
        .await
        .unwrap();
    eprintln!(
        "incremental snapshot: {:?} {:?}",
        timed.elapsed(),
        second.stats
    );
    let mut fresh = Vec::new();
    for run in 0..5 {
        let target = f.base.join(format!("target{run}"));
        let timed = std::time::Instant::now();
        let (stats, _) = restore(&f.blobs, &version.root, &target, None, None)
            .await
            .unwrap();
        fresh.push(timed.elapsed());
        assert_eq!(stats.files_written, 1000);
    }
    eprintln!("restore into an empty directory: {fresh:?}");
    let target = f.base.join("target0");
    let (_, index) = restore(&f.blobs, &second.root, &target, None, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let timed = std::time::Instant::now();
    let (stats, _) = restore(&f.blobs, &version.root, &target, None, Some(&index))
        .await
        .unwrap();
    eprintln!(
        "restore over the other version with an index: {:?} {stats:?}",
        timed.elapsed()
    );
    let timed = std::time::Instant::now();
    let (stats, _) = restore(&f.blobs, &version.root, &f.base.join("target1"), None, None)
        .await
        .unwrap();
    eprintln!(
        "restore over itself without an index: {:?} {stats:?}",
        timed.elapsed()
    );
}
