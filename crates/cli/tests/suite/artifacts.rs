//! Workspace versions through the real binary: checkpoints and exact restores, diffs,
//! the tar handoff (and hostile archives), forks, a lost sandbox brought back from its
//! latest version, `kill -9`, the S3 blob store, and another tenant's view.
//!
//! Workspaces are compared with [`STATE`]: every entry's path, mode, type, size, owner
//! and symlink target, then every file's SHA-256, so "equal" means byte for byte and
//! mode for mode.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::sandbox::{Sandboxed, start_with_args};
use super::{Backend, Place, block_on, on_both_backends};

on_both_backends!(
    checkpoint_restore_exact,
    tar_handoff,
    fork,
    lost_sandbox_restores_latest_version,
    survives_kill_9,
    cross_tenant,
);

/// The state of /workspace, as text: directories (path, mode, owner), other entries
/// (path, mode, type, size, owner, target), then the files' SHA-256 digests.
const STATE: &str = "cd /workspace && export LC_ALL=C \
    && find . -mindepth 1 -type d -printf 'd %p %m %U:%G\\n' | sort \
    && find . -mindepth 1 ! -type d -printf '%y %p %m %s %U:%G %l\\n' | sort \
    && find . -type f -print0 | sort -z | xargs -0 -r sha256sum";

/// The files of the first version of [`checkpoint_restore_exact`]: path, mode, content.
const FILES: &[(&str, &str, &str)] = &[
    ("run.sh", "0755", "#!/bin/sh\necho run\n"),
    ("key.pem", "0600", "secret-key\n"),
    ("README.md", "0644", "hello\n"),
    ("deep/a/b/leaf.txt", "0644", "leaf\n"),
    ("empty.txt", "0644", ""),
    ("src/lib/util.py", "0644", "def f():\n    return 1\n"),
    ("tobedir", "0644", "old\n"),
    ("olddir/o.txt", "0644", "o\n"),
    ("gone/g.txt", "0644", "g\n"),
];
const BIG: u64 = 3 << 20;

/// A script that writes `files` (parents made first) with their modes.
fn write_files(files: &[(&str, &str, &str)]) -> String {
    let mut script = String::from("set -e; umask 022; cd /workspace\n");
    for (path, mode, content) in files {
        if let Some((dir, _)) = path.rsplit_once('/') {
            script.push_str(&format!("mkdir -p '{dir}'\n"));
        }
        script.push_str(&format!(
            "printf '%s' '{content}' > '{path}' && chmod {mode} '{path}'\n"
        ));
    }
    script
}

fn state(s: &Sandboxed, id: &str) -> String {
    s.ok(id, STATE)
}

/// `cordon checkpoint ID --summary S --json`: the session is then checkpointed; returns
/// the version it recorded.
#[track_caller]
fn checkpoint(s: &Sandboxed, id: &str, summary: &str) -> Value {
    let run = s
        .server
        .cli(&["checkpoint", id, "--summary", summary, "--json"]);
    run.success();
    let answer = run.json();
    assert_eq!(answer["id"], id, "{answer}");
    assert_eq!(answer["phase"], "checkpointed", "{answer}");
    let version = answer["workspace_version"].clone();
    assert_eq!(version["session_id"], id, "{answer}");
    assert_eq!(version["summary"], summary, "{answer}");
    assert_eq!(version["origin"], "checkpoint", "{answer}");
    version
}

fn resume(s: &Sandboxed, id: &str) {
    s.server.cli(&["session", "resume", id]).success();
}

/// `cordon version list ID --json`: the versions, newest first.
fn versions(s: &Sandboxed, id: &str) -> Vec<Value> {
    let run = s.server.cli(&["version", "list", id, "--json"]);
    run.success();
    let list = run.json();
    assert!(list.get("next").is_none(), "{list}");
    list["versions"].as_array().unwrap().clone()
}

fn ids(versions: &[Value]) -> Vec<&str> {
    versions.iter().map(|v| v["id"].as_str().unwrap()).collect()
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no `{key}` in {value}"))
}

/// (status, error code) of an answer.
fn refusal(status: u16, body: &[u8]) -> (u16, String) {
    let value: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    (
        status,
        value["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Every file under `<data-dir>/blobs`, sorted.
fn blob_files(s: &Sandboxed) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(&path, out);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(&s.server.place().data_dir().join("blobs"), &mut out);
    out.sort();
    out
}

/// A server with sandboxes (the test workload classes) on a fresh place.
fn start(backend: Backend) -> Sandboxed {
    start_with_args(Place::with_sandboxes(backend), &[], &[])
}

fn close(s: &Sandboxed, id: &str) {
    s.server.cli(&["session", "close", id, "--yes"]).success();
}

fn change(path: &str, kind: &str, before: Option<u64>, after: Option<u64>) -> Value {
    let mut change = json!({"path": path, "change": kind});
    if let Some(before) = before {
        change["size_before"] = json!(before);
    }
    if let Some(after) = after {
        change["size_after"] = json!(after);
    }
    change
}

fn checkpoint_restore_exact(backend: Backend) {
    let s = start(backend);
    let id = s.active_session("default");

    // Version 1: files of three modes, nested 0700 directories, an empty directory, an
    // empty file, 3 MiB of random bytes, a relative symlink.
    s.ok(&id, &write_files(FILES));
    s.ok(
        &id,
        "set -e; cd /workspace; mkdir emptydir; chmod 0700 deep deep/a deep/a/b; \
         dd if=/dev/urandom of=big.bin bs=1M count=3 status=none; \
         ln -s src/lib/util.py util-link",
    );
    let first_state = state(&s, &id);
    assert!(
        first_state.contains("d ./deep/a/b 700 1000:1000\n")
            && first_state.contains("f ./key.pem 600 11 1000:1000 \n")
            && first_state.contains("f ./run.sh 755 19 1000:1000 \n")
            && first_state.contains("f ./empty.txt 644 0 1000:1000 \n")
            && first_state.contains("l ./util-link 777 15 1000:1000 src/lib/util.py\n"),
        "{first_state}"
    );
    let v1 = checkpoint(&s, &id, "first");
    let v1_id = str_of(&v1, "id").to_owned();
    let small: u64 = FILES.iter().map(|(_, _, c)| c.len() as u64).sum();
    assert_eq!(v1["parent"], Value::Null, "{v1}");
    assert_eq!(
        (
            &v1["stats"]["files"],
            &v1["stats"]["dirs"],
            &v1["stats"]["symlinks"],
            &v1["stats"]["bytes"]
        ),
        (&json!(10), &json!(8), &json!(1), &json!(small + BIG)),
        "{v1}"
    );
    // Nine distinct small contents, nine directory manifests, the big file's chunk
    // list and at least one chunk; random bytes do not compress.
    let written = v1["stats"]["blobs_written"].as_u64().unwrap();
    assert!(written >= 20, "{v1}");
    assert!(
        v1["stats"]["bytes_written"].as_u64().unwrap() >= BIG,
        "{v1}"
    );
    assert_eq!(
        s.server.session(&id)["phase"],
        "checkpointed",
        "the checkpoint moved the phase"
    );

    // Version 2: an edit, a chmod of a file and of a directory, a deleted directory,
    // added files and directories, a file replaced by a directory, a directory by a
    // symlink, 4 KiB of the big file overwritten in place.
    resume(&s, &id);
    s.ok(
        &id,
        "set -e; umask 022; cd /workspace; printf 'hello, world\\n' > README.md; \
         chmod 0640 key.pem; chmod 0755 deep/a/b; rm -rf olddir; printf 'new\\n' > new.txt; \
         mkdir -p newdir/x; printf 'n\\n' > newdir/x/n.txt; \
         rm tobedir; mkdir tobedir; printf 'i\\n' > tobedir/inner.txt; \
         rm -rf gone; ln -s deep/a gone; \
         dd if=/dev/urandom of=big.bin bs=4096 count=1 seek=100 conv=notrunc status=none",
    );
    let second_state = state(&s, &id);
    let v2 = checkpoint(&s, &id, "second");
    let v2_id = str_of(&v2, "id").to_owned();
    assert_eq!(v2["parent"], v1_id.as_str(), "{v2}");
    assert_eq!(
        (
            &v2["stats"]["files"],
            &v2["stats"]["dirs"],
            &v2["stats"]["symlinks"]
        ),
        (&json!(10), &json!(9), &json!(2)),
        "{v2}"
    );
    assert_ne!(v2["root"], v1["root"]);

    // Listed newest first; one version is what the list says it is.
    let listed = versions(&s, &id);
    assert_eq!(ids(&listed), [v2_id.as_str(), v1_id.as_str()]);
    assert_eq!(listed[1], v1);
    let (status, shown) = s.json(
        Method::GET,
        &format!("/v1/sessions/{id}/versions/{v1_id}"),
        None,
    );
    assert_eq!((status, &shown), (200, &v1));

    // The diff, against the parent by default and explicitly.
    let expected = json!([
        change("README.md", "modified", Some(6), Some(13)),
        change("big.bin", "modified", Some(BIG), Some(BIG)),
        change("deep/a/b", "mode_changed", Some(0), Some(0)),
        change("gone", "type_changed", Some(0), Some(6)),
        change("gone/g.txt", "removed", Some(2), None),
        change("key.pem", "mode_changed", Some(11), Some(11)),
        change("new.txt", "added", None, Some(4)),
        change("newdir", "added", None, Some(0)),
        change("newdir/x", "added", None, Some(0)),
        change("newdir/x/n.txt", "added", None, Some(2)),
        change("olddir", "removed", Some(0), None),
        change("olddir/o.txt", "removed", Some(2), None),
        change("tobedir", "type_changed", Some(4), Some(0)),
        change("tobedir/inner.txt", "added", None, Some(2)),
    ]);
    for query in ["", &format!("?against={v1_id}")] {
        let (status, diff) = s.json(
            Method::GET,
            &format!("/v1/sessions/{id}/versions/{v2_id}/diff{query}"),
            None,
        );
        assert_eq!(status, 200, "{diff}");
        assert_eq!(
            (&diff["from"], &diff["to"]),
            (&json!(v1_id), &json!(v2_id)),
            "{diff}"
        );
        assert_eq!(diff["changes"], expected, "{diff:#}");
    }
    let run = s.server.cli(&["version", "diff", &id, &v2_id]);
    run.success();
    assert_eq!(
        run.stdout,
        "M README.md\nM big.bin\nm deep/a/b\nT gone\n- gone/g.txt\nm key.pem\n+ new.txt\n\
         + newdir\n+ newdir/x\n+ newdir/x/n.txt\n- olddir\n- olddir/o.txt\nT tobedir\n\
         + tobedir/inner.txt\n"
    );
    // The first version against nothing: everything added.
    let (_, diff) = s.json(
        Method::GET,
        &format!("/v1/sessions/{id}/versions/{v1_id}/diff"),
        None,
    );
    assert_eq!(diff["from"], Value::Null, "{diff}");
    assert_eq!(diff["changes"].as_array().unwrap().len(), 19, "{diff:#}");

    // Restore version 1 (the session is checkpointed): exactly the first state again.
    let run = s.server.cli(&["version", "restore", &id, &v1_id, "--json"]);
    run.success();
    let restored = run.json();
    // Written: README.md, big.bin, tobedir, olddir/o.txt, gone/g.txt; removed:
    // new.txt, newdir, the directory tobedir, the symlink gone; created: olddir, gone.
    assert_eq!(
        (
            &restored["files_written"],
            &restored["files_unchanged"],
            &restored["removed"],
            &restored["dirs_created"],
            &restored["symlinks_created"]
        ),
        (&json!(5), &json!(5), &json!(4), &json!(2), &json!(0)),
        "{restored}"
    );
    resume(&s, &id);
    assert_eq!(state(&s, &id), first_state);

    // And version 2 again, then 1 again: restores go both ways, a second restore of the
    // same version changes nothing.
    let run = s.server.cli(&["version", "restore", &id, &v2_id, "--json"]);
    run.success();
    assert_eq!(state(&s, &id), second_state);
    s.server.cli(&["version", "restore", &id, &v1_id]).success();
    let run = s.server.cli(&["version", "restore", &id, &v1_id, "--json"]);
    run.success();
    let again = run.json();
    assert_eq!(
        (
            &again["files_written"],
            &again["files_unchanged"],
            &again["removed"],
            &again["dirs_created"]
        ),
        (&json!(0), &json!(10), &json!(0), &json!(0)),
        "{again}"
    );
    assert_eq!(state(&s, &id), first_state);

    // Incremental: after a one-file edit the checkpoint writes that file's blob and the
    // root manifest, nothing else.
    s.ok(&id, "printf 'edited\\n' > /workspace/README.md");
    let v3 = checkpoint(&s, &id, "third");
    assert_eq!(v3["parent"], v2_id.as_str(), "{v3}");
    assert_eq!(
        (
            &v3["stats"]["files"],
            &v3["stats"]["blobs_written"],
            &v3["stats"]["bytes"]
        ),
        (&json!(10), &json!(2), &json!(small + BIG + 1)),
        "{v3}"
    );
    let (_, diff) = s.json(
        Method::GET,
        &format!(
            "/v1/sessions/{id}/versions/{}/diff?against={v1_id}",
            v3["id"].as_str().unwrap()
        ),
        None,
    );
    assert_eq!(
        diff["changes"],
        json!([change("README.md", "modified", Some(6), Some(7))]),
        "{diff}"
    );

    // Restore needs an active or checkpointed session.
    resume(&s, &id);
    s.server.cli(&["session", "suspend", &id]).success();
    let (status, body) = s.json(
        Method::POST,
        &format!("/v1/sessions/{id}/restore"),
        Some(json!({"version": v1_id})),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("SESSION_NOT_ACTIVE")),
        "{body}"
    );
    close(&s, &id);
}

/// One tar entry with raw header bytes (no path checks), then its data padded.
fn raw_entry(
    out: &mut Vec<u8>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
    declared: Option<u64>,
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    header.set_size(declared.unwrap_or(data.len() as u64));
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

/// An archive that starts with a harmless file of unique content, then `hostile`.
fn hostile(n: usize, hostile: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    raw_entry(
        &mut out,
        "harmless.txt",
        tar::EntryType::Regular,
        "",
        format!("harmless #{n}\n").as_bytes(),
        None,
    );
    hostile(&mut out);
    out.extend_from_slice(&[0; 1024]);
    out
}

/// Entries of an archive: (path, type, mode, size or link target).
fn tar_entries(bytes: &[u8]) -> Vec<String> {
    let mut archive = tar::Archive::new(bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            let path = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let detail = match header.entry_type() {
                tar::EntryType::Symlink => {
                    String::from_utf8(entry.link_name_bytes().unwrap().into_owned()).unwrap()
                }
                _ => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).unwrap();
                    data.len().to_string()
                }
            };
            format!(
                "{path} {:?} {:o} {detail}",
                header.entry_type(),
                header.mode().unwrap()
            )
        })
        .collect()
}

fn tar_handoff(backend: Backend) {
    let s = start(backend);
    let id = s.active_session("default");
    s.ok(
        &id,
        &write_files(&[
            ("bin/tool", "0755", "#!/bin/sh\necho tool\n"),
            ("notes/plan.md", "0600", "step 1\n"),
            ("a.txt", "0644", "a\n"),
        ]),
    );
    s.ok(
        &id,
        "set -e; cd /workspace; mkdir -m 0700 private; ln -s notes/plan.md plan; \
         dd if=/dev/urandom of=blob.bin bs=1M count=2 status=none",
    );
    let first_state = state(&s, &id);
    let v1 = checkpoint(&s, &id, "before the handoff");
    let v1_id = str_of(&v1, "id").to_owned();

    // Download through the CLI: a plain tar, depth first in name order.
    let local = tempfile::tempdir().unwrap();
    let archive = local.path().join("v1.tar");
    s.server
        .cli(&[
            "version",
            "download",
            &id,
            &v1_id,
            "-o",
            archive.to_str().unwrap(),
        ])
        .success();
    let bytes = std::fs::read(&archive).unwrap();
    assert_eq!(
        tar_entries(&bytes),
        [
            "a.txt Regular 644 2",
            "bin/ Directory 755 0",
            "bin/tool Regular 755 20",
            "blob.bin Regular 644 2097152",
            "notes/ Directory 755 0",
            "notes/plan.md Regular 600 7",
            "plan Symlink 777 notes/plan.md",
            "private/ Directory 700 0",
        ]
    );
    // The same version always gives the same bytes.
    let (status, again) = s.request(
        Method::GET,
        &format!("/v1/sessions/{id}/versions/{v1_id}/archive"),
        &[],
        None,
        None,
    );
    assert_eq!((status, again.len()), (200, bytes.len()));
    assert!(again == bytes, "a second download differs");

    // Uploaded back on top of the head: the same root, nothing new stored.
    let run = s.server.cli(&[
        "version",
        "upload",
        &id,
        archive.to_str().unwrap(),
        "--parent",
        &v1_id,
        "--summary",
        "handed back",
        "--json",
    ]);
    run.success();
    let v2 = run.json();
    let v2_id = str_of(&v2, "id").to_owned();
    assert_eq!(
        (
            &v2["root"],
            &v2["parent"],
            &v2["origin"],
            &v2["summary"],
            &v2["session_id"]
        ),
        (
            &v1["root"],
            &json!(v1_id),
            &json!("upload"),
            &json!("handed back"),
            &json!(id)
        ),
        "{v2}"
    );
    assert_eq!(
        (
            &v2["stats"]["files"],
            &v2["stats"]["dirs"],
            &v2["stats"]["symlinks"],
            &v2["stats"]["bytes"],
            &v2["stats"]["blobs_written"],
            &v2["stats"]["bytes_written"]
        ),
        (
            &v1["stats"]["files"],
            &v1["stats"]["dirs"],
            &v1["stats"]["symlinks"],
            &v1["stats"]["bytes"],
            &json!(0),
            &json!(0)
        ),
        "{v2}"
    );

    // A stale parent, or none once the session has versions: VERSION_CONFLICT.
    s.server
        .cli(&[
            "version",
            "upload",
            &id,
            archive.to_str().unwrap(),
            "--parent",
            &v1_id,
        ])
        .failure(6, "VERSION_CONFLICT");
    let (status, body) = s.request(
        Method::POST,
        &format!("/v1/sessions/{id}/versions"),
        &[],
        Some(bytes.clone()),
        None,
    );
    assert_eq!(refusal(status, &body), (409, "VERSION_CONFLICT".to_owned()));

    // A person's edited copy: uploaded, then restored into the workspace.
    let mut edited = Vec::new();
    raw_entry(
        &mut edited,
        "bin/",
        tar::EntryType::Directory,
        "",
        b"",
        None,
    );
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o750);
    header.set_size(17);
    header.set_path("bin/tool").unwrap();
    header.set_cksum();
    edited.extend_from_slice(header.as_bytes());
    edited.extend_from_slice(b"#!/bin/sh\necho x\n");
    edited.resize(edited.len().next_multiple_of(512), 0);
    raw_entry(
        &mut edited,
        "notes/review.md",
        tar::EntryType::Regular,
        "",
        b"looks good\n",
        None,
    );
    raw_entry(
        &mut edited,
        "tool",
        tar::EntryType::Symlink,
        "bin/tool",
        b"",
        None,
    );
    edited.extend_from_slice(&[0; 1024]);
    let (status, body) = s.request(
        Method::POST,
        &format!("/v1/sessions/{id}/versions?summary=reviewed"),
        &[("if-match", &format!("\"{v2_id}\""))],
        Some(edited),
        None,
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let v3: Value = serde_json::from_slice(&body).unwrap();
    let v3_id = str_of(&v3, "id").to_owned();
    assert_eq!(
        (
            &v3["parent"],
            &v3["summary"],
            &v3["stats"]["files"],
            &v3["stats"]["dirs"],
            &v3["stats"]["symlinks"],
            &v3["stats"]["bytes"]
        ),
        (
            &json!(v2_id),
            &json!("reviewed"),
            &json!(2),
            &json!(2),
            &json!(1),
            &json!(28)
        ),
        "{v3}"
    );
    // Uploading did not touch the workspace; restoring makes it exactly the archive
    // (notes/ was missing from it: made with 0755).
    resume(&s, &id);
    assert_eq!(state(&s, &id), first_state);
    s.server.cli(&["version", "restore", &id, &v3_id]).success();
    let review_state = state(&s, &id);
    let listing: Vec<&str> = review_state.lines().take(5).collect();
    assert_eq!(
        listing,
        [
            "d ./bin 755 1000:1000",
            "d ./notes 755 1000:1000",
            "f ./bin/tool 750 17 1000:1000 ",
            "f ./notes/review.md 644 11 1000:1000 ",
            "l ./tool 777 8 1000:1000 bin/tool",
        ],
        "{review_state}"
    );
    assert_eq!(s.ok(&id, "./tool"), "x\n");

    // Hostile archives: each refused with its code, and nothing stored.
    let head = versions(&s, &id);
    let blobs_before = blob_files(&s);
    assert!(!blobs_before.is_empty(), "no blobs under the data dir");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "an absolute path",
            hostile(1, |out| {
                raw_entry(
                    out,
                    "/etc/cron.d/x",
                    tar::EntryType::Regular,
                    "",
                    b"x",
                    None,
                )
            }),
            400,
            "ARCHIVE_ENTRY_ESCAPES",
        ),
        (
            "a `..` path",
            hostile(2, |out| {
                raw_entry(out, "../x", tar::EntryType::Regular, "", b"x", None)
            }),
            400,
            "ARCHIVE_ENTRY_ESCAPES",
        ),
        (
            "a `..` inside a path",
            hostile(3, |out| {
                raw_entry(out, "a/../../x", tar::EntryType::Regular, "", b"x", None)
            }),
            400,
            "ARCHIVE_ENTRY_ESCAPES",
        ),
        (
            "a symlink to /etc, then a file through it",
            hostile(4, |out| {
                raw_entry(out, "etc", tar::EntryType::Symlink, "/etc", b"", None);
                raw_entry(out, "etc/passwd", tar::EntryType::Regular, "", b"x", None);
            }),
            400,
            "ARCHIVE_ENTRY_ESCAPES",
        ),
        (
            "a symlink that climbs out",
            hostile(5, |out| {
                raw_entry(out, "d/up", tar::EntryType::Symlink, "../..", b"", None)
            }),
            400,
            "ARCHIVE_ENTRY_ESCAPES",
        ),
        (
            "a file through an inside symlink",
            hostile(6, |out| {
                raw_entry(out, "sub/", tar::EntryType::Directory, "", b"", None);
                raw_entry(out, "alias", tar::EntryType::Symlink, "sub", b"", None);
                raw_entry(out, "alias/x", tar::EntryType::Regular, "", b"x", None);
            }),
            400,
            "ARCHIVE_ENTRY_ESCAPES",
        ),
        (
            "a character device",
            hostile(7, |out| {
                raw_entry(out, "null", tar::EntryType::Char, "", b"", None)
            }),
            400,
            "ARCHIVE_ENTRY_UNSUPPORTED",
        ),
        (
            "a fifo",
            hostile(8, |out| {
                raw_entry(out, "pipe", tar::EntryType::Fifo, "", b"", None)
            }),
            400,
            "ARCHIVE_ENTRY_UNSUPPORTED",
        ),
        (
            "a hard link to nothing",
            hostile(9, |out| {
                raw_entry(out, "h", tar::EntryType::Link, "missing", b"", None)
            }),
            400,
            "ARCHIVE_ENTRY_UNSUPPORTED",
        ),
        (
            "a header declaring 100 GiB",
            hostile(10, |out| {
                raw_entry(
                    out,
                    "huge.bin",
                    tar::EntryType::Regular,
                    "",
                    b"",
                    Some(100 << 30),
                )
            }),
            413,
            "ARCHIVE_TOO_LARGE",
        ),
        (
            "garbage",
            b"this is not a tar archive, only text pretending to be one. ".repeat(40),
            400,
            "ARCHIVE_INVALID",
        ),
        (
            "a truncated archive",
            hostile(11, |out| {
                raw_entry(out, "cut.bin", tar::EntryType::Regular, "", b"", Some(4096));
                out.extend_from_slice(&[7; 512]);
            }),
            400,
            "ARCHIVE_INVALID",
        ),
    ];
    let head_id = ids(&head)[0].to_owned();
    for (what, archive, status, code) in cases {
        let (got, body) = s.request(
            Method::POST,
            &format!("/v1/sessions/{id}/versions"),
            &[("if-match", &head_id)],
            Some(archive),
            None,
        );
        assert_eq!(refusal(got, &body), (status, code.to_owned()), "{what}");
    }
    // Through the CLI too: exit code 6 and the code on stderr.
    let file = local.path().join("escape.tar");
    std::fs::write(
        &file,
        hostile(12, |out| {
            raw_entry(out, "../escape", tar::EntryType::Regular, "", b"x", None)
        }),
    )
    .unwrap();
    s.server
        .cli(&[
            "version",
            "upload",
            &id,
            file.to_str().unwrap(),
            "--parent",
            &head_id,
        ])
        .failure(6, "ARCHIVE_ENTRY_ESCAPES");
    assert_eq!(versions(&s, &id), head, "a refused archive left a version");
    assert_eq!(blob_files(&s), blobs_before, "a refused archive left blobs");
    assert_eq!(ids(&head), [v3_id.as_str(), v2_id.as_str(), v1_id.as_str()]);
    close(&s, &id);
}

/// `key create --role admin --json` in the caller's tenant: (key id, token).
fn admin_key(s: &Sandboxed, name: &str, tenant: Option<&str>) -> (String, String) {
    let mut args = vec!["key", "create", "--role", "admin", "--name", name, "--json"];
    if let Some(tenant) = tenant {
        args.extend(["--tenant", tenant]);
    }
    let run = s.server.cli(&args);
    run.success();
    let key = run.json();
    (
        str_of(&key, "id").to_owned(),
        str_of(&key, "token").to_owned(),
    )
}

fn fork(backend: Backend) {
    let s = start(backend);
    let run = s.server.cli(&[
        "session",
        "create",
        "--class",
        "default",
        "--env",
        "dev",
        "--label",
        "team=blue",
        "--json",
    ]);
    run.success();
    let source = str_of(&run.json(), "id").to_owned();
    s.server.cli(&["session", "activate", &source]).success();
    s.ok(
        &source,
        &write_files(&[
            ("main.py", "0755", "print(6 * 7)\n"),
            ("cfg/settings.toml", "0600", "debug = true\n"),
        ]),
    );
    s.ok(
        &source,
        "set -e; cd /workspace; mkdir -m 0700 cache; ln -s cfg/settings.toml settings; \
         dd if=/dev/urandom of=data.bin bs=1M count=2 status=none",
    );
    let source_state = state(&s, &source);
    let v1 = checkpoint(&s, &source, "fork me");
    let v1_id = str_of(&v1, "id").to_owned();
    // The source goes on after the checkpoint; the fork must not see that.
    resume(&s, &source);
    s.ok(
        &source,
        "echo later > /workspace/later.txt && rm /workspace/main.py",
    );

    // Forked by another key of the tenant: the new session is that key's.
    let (key_id, token) = admin_key(&s, "forker", None);
    let run = s
        .server
        .cli_as(&token, &["version", "fork", &source, &v1_id, "--json"]);
    run.success();
    let forked = run.json();
    let session = &forked["session"];
    let fork_id = str_of(session, "id").to_owned();
    assert_ne!(fork_id, source);
    let original = s.server.session(&source);
    assert_eq!(
        (
            &session["phase"],
            &session["owner"],
            &session["tenant_id"],
            &session["workload_class"],
            &session["environment"],
            &session["labels"]
        ),
        (
            &json!("active"),
            &json!(key_id),
            &original["tenant_id"],
            &json!("default"),
            &json!("dev"),
            &json!({"team": "blue"})
        ),
        "{forked:#}"
    );
    let version = &forked["version"];
    assert_eq!(
        (
            &version["session_id"],
            &version["origin"],
            &version["root"],
            &version["parent"],
            &version["stats"]["files"],
            &version["stats"]["bytes"],
            &version["stats"]["blobs_written"]
        ),
        (
            &json!(fork_id),
            &json!("fork"),
            &v1["root"],
            &Value::Null,
            &v1["stats"]["files"],
            &v1["stats"]["bytes"],
            &json!(0)
        ),
        "{forked:#}"
    );
    assert_eq!(s.server.session(&fork_id)["phase"], "active");
    // Its workspace is the version, exactly; its only version is the fork's.
    assert_eq!(state(&s, &fork_id), source_state);
    assert_eq!(versions(&s, &fork_id), std::slice::from_ref(version));
    // The two workspaces are independent.
    s.ok(&fork_id, "echo fork > /workspace/fork.txt");
    assert_eq!(
        s.ok(&source, "ls /workspace | tr '\\n' ' '"),
        "cache cfg data.bin later.txt settings "
    );
    assert_eq!(ids(&versions(&s, &source)), [v1_id.as_str()]);
    // A checkpoint of the fork descends from its fork version.
    let next = checkpoint(&s, &fork_id, "after the fork");
    assert_eq!(next["parent"], version["id"], "{next}");
    assert_eq!(next["stats"]["files"], 4, "{next}");

    // A version of another session cannot be forked through this one.
    let (status, body) = s.json(
        Method::POST,
        &format!(
            "/v1/sessions/{source}/versions/{}/fork",
            str_of(&next, "id")
        ),
        None,
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("VERSION_NOT_FOUND")),
        "{body}"
    );
    close(&s, &fork_id);
    close(&s, &source);
}

/// Execs answer SANDBOX_LOST (409) once the session's sandbox is gone; bounded.
#[track_caller]
fn wait_lost(s: &Sandboxed, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = s.json(
            Method::POST,
            &format!("/v1/sessions/{id}/exec"),
            Some(json!({"argv": ["true"]})),
        );
        if (status, body["error"]["code"].as_str()) == (409, Some("SANDBOX_LOST")) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the lost sandbox was not reported: {status} {body}\n{}",
            s.server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn lost_sandbox_restores_latest_version(backend: Backend) {
    let s = start(backend);
    let id = s.active_session("default");
    s.ok(
        &id,
        &write_files(&[
            ("app/run.sh", "0755", "#!/bin/sh\necho up\n"),
            ("app/.env", "0600", "MODE=dev\n"),
        ]),
    );
    s.ok(
        &id,
        "set -e; cd /workspace; mkdir -m 0700 empty; ln -s app/run.sh start; \
         dd if=/dev/urandom of=model.bin bs=1M count=2 status=none",
    );
    let saved = state(&s, &id);
    let v1 = checkpoint(&s, &id, "before the loss");
    resume(&s, &id);
    // Work after the checkpoint is in no version: it goes with the sandbox.
    s.ok(
        &id,
        "echo unsaved > /workspace/unsaved.txt; rm /workspace/start",
    );

    // Init killed under the running server: noticed on use, replaced by suspend and
    // resume, and the latest version is back.
    let old_init = s.init_pid(&id);
    kill9(old_init);
    wait_lost(&s, &id);
    s.server.cli(&["session", "suspend", &id]).success();
    s.server.cli(&["session", "resume", &id]).success();
    assert_ne!(s.init_pid(&id), old_init, "no fresh sandbox");
    assert_eq!(state(&s, &id), saved);
    assert_eq!(s.ok(&id, "./start"), "up\n");
    // Checkpointing the brought-back workspace records the same tree.
    let v2 = checkpoint(&s, &id, "after the loss");
    assert_eq!(
        (&v2["root"], &v2["parent"], &v2["stats"]["blobs_written"]),
        (&v1["root"], &v1["id"], &json!(0)),
        "{v2}"
    );

    // Killed and suspended before anything noticed: resume still replaces it.
    resume(&s, &id);
    let old_init = s.init_pid(&id);
    kill9(old_init);
    s.server.cli(&["session", "suspend", &id]).success();
    s.server.cli(&["session", "resume", &id]).success();
    assert_ne!(s.init_pid(&id), old_init, "no fresh sandbox");
    assert_eq!(state(&s, &id), saved);

    // Init killed while the server is down (found lost at start): the same, with the
    // newer version.
    s.ok(&id, "echo kept > /workspace/kept.txt");
    let kept = state(&s, &id);
    let v3 = checkpoint(&s, &id, "kept");
    resume(&s, &id);
    s.ok(&id, "rm -r /workspace/app");
    let old_init = s.init_pid(&id);
    let Sandboxed { server, .. } = s;
    let place = server.kill9();
    kill9(old_init);
    let s = start_with_args(place, &[], &[]);
    wait_lost(&s, &id);
    s.server.cli(&["session", "suspend", &id]).success();
    s.server.cli(&["session", "resume", &id]).success();
    assert_eq!(state(&s, &id), kept);
    let v4 = checkpoint(&s, &id, "after the restart");
    assert_eq!(
        (&v4["root"], &v4["parent"]),
        (&v3["root"], &v3["id"]),
        "{v4}"
    );
    close(&s, &id);
}

fn kill9(pid: i32) {
    let status = std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -9 {pid} failed");
}

fn survives_kill_9(backend: Backend) {
    let s = start(backend);
    let id = s.active_session("default");
    s.ok(
        &id,
        &write_files(&[("doc.md", "0644", "# doc\n"), ("bin/x", "0755", "x\n")]),
    );
    s.ok(
        &id,
        "cd /workspace && dd if=/dev/urandom of=r.bin bs=1M count=2 status=none",
    );
    let saved = state(&s, &id);
    let v1 = checkpoint(&s, &id, "durable");
    let v1_id = str_of(&v1, "id").to_owned();
    resume(&s, &id);
    s.ok(
        &id,
        "rm -r /workspace/bin && echo more >> /workspace/doc.md",
    );
    let v2 = checkpoint(&s, &id, "durable too");
    let v2_id = str_of(&v2, "id").to_owned();
    let before = versions(&s, &id);
    let archive_before = s.request(
        Method::GET,
        &format!("/v1/sessions/{id}/versions/{v1_id}/archive"),
        &[],
        None,
        None,
    );

    let Sandboxed { server, .. } = s;
    let place = server.kill9();
    let s = start_with_args(place, &[], &[]);
    assert_eq!(versions(&s, &id), before);
    assert_eq!(ids(&before), [v2_id.as_str(), v1_id.as_str()]);
    let archive_after = s.request(
        Method::GET,
        &format!("/v1/sessions/{id}/versions/{v1_id}/archive"),
        &[],
        None,
        None,
    );
    assert_eq!(archive_after.0, 200);
    assert!(archive_after == archive_before, "the archive changed");
    let (status, diff) = s.json(
        Method::GET,
        &format!("/v1/sessions/{id}/versions/{v2_id}/diff"),
        None,
    );
    assert_eq!(status, 200, "{diff}");
    assert_eq!(
        diff["changes"],
        json!([
            change("bin", "removed", Some(0), None),
            change("bin/x", "removed", Some(2), None),
            change("doc.md", "modified", Some(6), Some(11)),
        ]),
        "{diff}"
    );
    // The session is still checkpointed; restore works, and so does the sandbox.
    assert_eq!(s.server.session(&id)["phase"], "checkpointed");
    s.server.cli(&["version", "restore", &id, &v1_id]).success();
    resume(&s, &id);
    assert_eq!(state(&s, &id), saved);
    let v3 = checkpoint(&s, &id, "after the crash");
    assert_eq!(
        (&v3["root"], &v3["parent"]),
        (&v1["root"], &json!(v2_id)),
        "{v3}"
    );
    close(&s, &id);
}

/// A request: method, path, headers, raw body, JSON body.
type Call<'a> = (
    Method,
    String,
    Vec<(&'a str, &'a str)>,
    Option<Vec<u8>>,
    Option<Value>,
);

fn cross_tenant(backend: Backend) {
    let s = start(backend);
    let id = s.active_session("default");
    s.ok(&id, "echo mine > /workspace/mine.txt");
    let v1 = checkpoint(&s, &id, "private");
    let v1_id = str_of(&v1, "id").to_owned();
    let run = s.server.cli(&["tenant", "create", "intruders", "--json"]);
    run.success();
    let tenant = str_of(&run.json(), "id").to_owned();
    let (_, token) = admin_key(&s, "intruder", Some(&tenant));

    let http = reqwest::Client::new();
    let as_intruder = |method: Method,
                       path: String,
                       headers: &[(&str, &str)],
                       body: Option<Vec<u8>>,
                       json_body: Option<Value>| {
        let mut request = http
            .request(method, s.url(&path))
            .bearer_auth(&token)
            .timeout(Duration::from_secs(30));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        if let Some(value) = json_body {
            request = request.json(&value);
        }
        block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.bytes().await.unwrap().to_vec())
        })
    };
    let archive = hostile(0, |_| {});
    let cases: Vec<Call> = vec![
        (
            Method::GET,
            format!("/v1/sessions/{id}/versions"),
            vec![],
            None,
            None,
        ),
        (
            Method::GET,
            format!("/v1/sessions/{id}/versions/{v1_id}"),
            vec![],
            None,
            None,
        ),
        (
            Method::GET,
            format!("/v1/sessions/{id}/versions/{v1_id}/diff"),
            vec![],
            None,
            None,
        ),
        (
            Method::GET,
            format!("/v1/sessions/{id}/versions/{v1_id}/archive"),
            vec![],
            None,
            None,
        ),
        (
            Method::POST,
            format!("/v1/sessions/{id}/restore"),
            vec![],
            None,
            Some(json!({"version": v1_id})),
        ),
        (
            Method::POST,
            format!("/v1/sessions/{id}/versions/{v1_id}/fork"),
            vec![],
            None,
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/sessions/{id}/versions"),
            vec![("if-match", v1_id.as_str())],
            Some(archive.clone()),
            None,
        ),
        (
            Method::POST,
            format!("/v1/sessions/{id}/checkpoint"),
            vec![],
            None,
            Some(json!({"summary": "theirs"})),
        ),
    ];
    for (method, path, headers, body, json_body) in cases {
        let (status, bytes) = as_intruder(method.clone(), path.clone(), &headers, body, json_body);
        assert_eq!(
            refusal(status, &bytes),
            (404, "NOT_FOUND".to_owned()),
            "{method} {path}"
        );
    }
    // The CLI says the same (exit 5).
    s.server
        .cli_as(&token, &["version", "list", &id])
        .failure(5, "NOT_FOUND");
    s.server
        .cli_as(&token, &["version", "fork", &id, &v1_id])
        .failure(5, "NOT_FOUND");
    // Through a session of its own, the version id does not exist either.
    let run = s.server.cli_as(
        &token,
        &[
            "session", "create", "--class", "default", "--env", "dev", "--json",
        ],
    );
    run.success();
    let theirs = str_of(&run.json(), "id").to_owned();
    for path in [
        format!("/v1/sessions/{theirs}/versions/{v1_id}"),
        format!("/v1/sessions/{theirs}/versions/{v1_id}/archive"),
    ] {
        let (status, bytes) = as_intruder(Method::GET, path.clone(), &[], None, None);
        assert_eq!(
            refusal(status, &bytes),
            (404, "VERSION_NOT_FOUND".to_owned()),
            "{path}"
        );
    }
    let (status, bytes) = as_intruder(
        Method::POST,
        format!("/v1/sessions/{theirs}/versions/{v1_id}/fork"),
        &[],
        None,
        Some(json!({})),
    );
    assert_eq!(
        refusal(status, &bytes),
        (404, "VERSION_NOT_FOUND".to_owned())
    );
    let run = s.server.cli_as(&token, &["session", "list", "--json"]);
    run.success();
    assert_eq!(
        run.json()["items"].as_array().unwrap().len(),
        1,
        "a fork landed in the intruders' tenant"
    );

    // Nothing changed for the owner.
    assert_eq!(versions(&s, &id), std::slice::from_ref(&v1));
    assert_eq!(s.server.session(&id)["phase"], "checkpointed");
    close(&s, &id);
}

#[test]
fn s3_blob_store() {
    let bucket = "cordon-e2e";
    let moto = cordon_test_support::s3::S3Server::start(bucket);
    let endpoint = moto.endpoint();
    let s = start_with_args(
        Place::with_sandboxes(Backend::Sqlite),
        &[
            "--s3-bucket",
            bucket,
            "--s3-endpoint",
            &endpoint,
            "--s3-region",
            "us-east-1",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let id = s.active_session("default");
    s.ok(
        &id,
        &write_files(&[("s3/readme.txt", "0640", "stored remotely\n")]),
    );
    s.ok(
        &id,
        "set -e; cd /workspace; dd if=/dev/urandom of=big.bin bs=1M count=2 status=none; \
         ln -s s3/readme.txt readme",
    );
    let saved = state(&s, &id);
    let v1 = checkpoint(&s, &id, "to s3");
    let v1_id = str_of(&v1, "id").to_owned();
    assert!(v1["stats"]["blobs_written"].as_u64().unwrap() >= 5, "{v1}");
    resume(&s, &id);
    s.ok(&id, "rm -rf /workspace/* && echo other > /workspace/other");
    let run = s.server.cli(&["version", "restore", &id, &v1_id, "--json"]);
    run.success();
    assert_eq!(run.json()["removed"], 1, "{}", run.stdout);
    assert_eq!(state(&s, &id), saved);

    // The blobs are in the bucket, not in the data dir.
    let listing = moto
        .request("GET", &format!("/{bucket}?list-type=2"))
        .unwrap();
    assert!(listing.starts_with("HTTP/1.1 200"), "{listing}");
    let keys = listing.matches("<Key>blobs/").count() as u64;
    assert!(
        keys >= v1["stats"]["blobs_written"].as_u64().unwrap(),
        "{keys} objects under blobs/ for {v1}: {listing}"
    );
    assert!(
        blob_files(&s).is_empty(),
        "blobs were written to the data dir"
    );
    close(&s, &id);
}
