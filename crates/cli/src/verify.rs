//! The offline verifiers, `cordon evidence verify` and `cordon release verify`: they
//! check an exported evidence bundle or a downloaded release with nothing but the
//! deployment's public key (its verifier text, `name+keyid+base64`), and contact no
//! server.
//!
//! A release archive is an uncompressed tar holding `release.dsse.json` (the signed
//! in-toto statement) and the released files under `files/`. Every entry must be one of
//! those, a regular file or a directory, with a path that stays inside the archive.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path};

use anyhow::{Context, anyhow, bail};
use cordon_evidence::Verifier;
use cordon_evidence::bundle::{self, Bundle, BundleError};
use cordon_evidence::dsse;

/// The envelope's name at the top of a release archive.
const ENVELOPE_NAME: &str = "release.dsse.json";
/// The directory of the released files in a release archive.
const FILES_DIR: &str = "files";

fn read_verifier(public_key_path: &Path) -> anyhow::Result<Verifier> {
    let text = std::fs::read_to_string(public_key_path)
        .with_context(|| format!("cannot read the public key {}", public_key_path.display()))?;
    Verifier::from_text(text.trim()).map_err(|e| {
        anyhow!(
            "{} does not hold a Cordon public key (`name+keyid+base64`): {e}",
            public_key_path.display()
        )
    })
}

/// Verifies an evidence bundle and returns a summary for people.
pub fn evidence_verify(bundle_path: &Path, public_key_path: &Path) -> anyhow::Result<String> {
    let verifier = read_verifier(public_key_path)?;
    let bytes = std::fs::read(bundle_path)
        .with_context(|| format!("cannot read the bundle {}", bundle_path.display()))?;
    let failed = |error: BundleError| {
        anyhow!(
            "the evidence bundle {} does not verify: {error}",
            bundle_path.display()
        )
    };
    let parsed: Bundle =
        serde_json::from_slice(&bytes).map_err(|e| failed(BundleError::Parse(e.to_string())))?;
    let report = bundle::verify_bundle(&parsed, &verifier).map_err(failed)?;

    let scope = match &report.session {
        Some(session) => format!("session {session} of tenant {}", report.tenant),
        None => format!("tenant {} (all sessions)", report.tenant),
    };
    let mut summary = format!(
        "evidence bundle verified with key {} (key id {})\n\
         log:         {}\n\
         scope:       {scope}\n\
         checkpoints: {}, signed and consistent; the last of size {} with root {}\n\
         entries:     {} included in the last checkpoint, {} field(s) shredded\n",
        verifier.name,
        verifier.key_id(),
        report.origin,
        report.checkpoints,
        report.size,
        report.root_hex,
        report.entries,
        report.shredded_fields,
    );
    if parsed.public_key != verifier.to_text() {
        summary.push_str(&format!(
            "note:        the bundle names the key {}, but only the key given was used\n",
            parsed.public_key
        ));
    }
    Ok(summary)
}

/// The path of an archive entry as its normal components, refusing any that could
/// point outside the archive.
fn archive_components(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut components = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => {
                let part = part
                    .to_str()
                    .ok_or_else(|| anyhow!("archive entry {} is not UTF-8", path.display()))?;
                components.push(part.to_owned());
            }
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                bail!(
                    "archive entry {} points outside the archive; refusing it",
                    path.display()
                )
            }
        }
    }
    Ok(components)
}

/// Verifies a release archive and returns a summary for people.
pub fn release_verify(archive_path: &Path, public_key_path: &Path) -> anyhow::Result<String> {
    let verifier = read_verifier(public_key_path)?;
    let archive = File::open(archive_path)
        .with_context(|| format!("cannot open the release {}", archive_path.display()))?;
    let unreadable = || format!("cannot read the release archive {}", archive_path.display());
    let mut archive = tar::Archive::new(archive);
    let mut envelope: Option<String> = None;
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for entry in archive.entries().with_context(unreadable)? {
        let mut entry = entry.with_context(unreadable)?;
        let path = entry.path().with_context(unreadable)?.into_owned();
        let entry_type = entry.header().entry_type();
        if entry_type.is_pax_global_extensions() {
            // Archive-wide metadata (git archive writes one), not a member.
            continue;
        }
        let components = archive_components(&path)?;
        let in_files = components.first().map(String::as_str) == Some(FILES_DIR);
        if entry_type.is_dir() {
            if components.is_empty() || in_files {
                continue;
            }
            bail!(
                "archive entry {} is neither {ENVELOPE_NAME} nor under {FILES_DIR}/",
                path.display()
            );
        }
        if !entry_type.is_file() {
            bail!(
                "archive entry {} is a {:?}, not a regular file or directory; refusing it",
                path.display(),
                entry_type
            );
        }
        let mut contents = Vec::new();
        entry
            .read_to_end(&mut contents)
            .with_context(|| format!("cannot read {} from the archive", path.display()))?;
        if components == [ENVELOPE_NAME] {
            if envelope.is_some() {
                bail!("the archive holds {ENVELOPE_NAME} twice");
            }
            envelope = Some(
                String::from_utf8(contents)
                    .map_err(|_| anyhow!("{ENVELOPE_NAME} in the archive is not UTF-8 text"))?,
            );
        } else if in_files && components.len() > 1 {
            let name = components[1..].join("/");
            if files.insert(name.clone(), contents).is_some() {
                bail!("the archive holds file `{name}` twice");
            }
        } else {
            bail!(
                "archive entry {} is neither {ENVELOPE_NAME} nor under {FILES_DIR}/",
                path.display()
            );
        }
    }
    let envelope = envelope.ok_or_else(|| {
        anyhow!(
            "the release archive {} holds no {ENVELOPE_NAME}",
            archive_path.display()
        )
    })?;
    let report = dsse::verify_release(&envelope, &verifier, &files).map_err(|error| {
        anyhow!(
            "the release {} does not verify: {error}",
            archive_path.display()
        )
    })?;
    let mut summary = format!(
        "release verified with key {} (key id {})\npredicate:   {}\nfiles:       {}\n",
        report.key,
        verifier.key_id(),
        report.predicate_type,
        report.subjects.len(),
    );
    for subject in &report.subjects {
        summary.push_str(&format!("  {}  {}\n", subject.sha256, subject.name));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cordon_evidence::dsse::Subject;
    use cordon_evidence::{Checkpoint, Signer, entry, merkle};
    use serde_json::json;

    fn release_files() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("bin/cordon", b"\x7fELF the binary"),
            ("README.md", b"# Cordon\n"),
        ]
    }

    fn envelope(signer: &Signer) -> String {
        let subjects: Vec<Subject> = release_files()
            .into_iter()
            .map(|(name, bytes)| Subject::of(name, bytes))
            .collect();
        let statement = dsse::statement(
            &subjects,
            "https://cordon.dev/release/v1",
            json!({"version": "0.1.0"}),
        );
        dsse::sign_envelope(&statement, signer).unwrap()
    }

    fn append(builder: &mut tar::Builder<File>, path: &str, bytes: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, bytes).unwrap();
    }

    /// Writes a release archive; `extra` adds raw members after the regular ones.
    fn archive(
        dir: &Path,
        name: &str,
        envelope: &str,
        files: &[(&str, &[u8])],
        extra: impl FnOnce(&mut tar::Builder<File>),
    ) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut builder = tar::Builder::new(File::create(&path).unwrap());
        let mut dir_header = tar::Header::new_gnu();
        dir_header.set_entry_type(tar::EntryType::Directory);
        dir_header.set_mode(0o755);
        dir_header.set_size(0);
        builder
            .append_data(&mut dir_header, "files/", std::io::empty())
            .unwrap();
        append(&mut builder, ENVELOPE_NAME, envelope.as_bytes());
        for (file, bytes) in files {
            append(&mut builder, &format!("files/{file}"), bytes);
        }
        extra(&mut builder);
        builder.finish().unwrap();
        path
    }

    fn key_file(dir: &Path, signer: &Signer) -> std::path::PathBuf {
        let path = dir.join("cordon.pub");
        std::fs::write(&path, format!("{}\n", signer.verifier().to_text())).unwrap();
        path
    }

    #[test]
    fn a_release_archive_verifies_and_tampering_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, _) = Signer::generate("cordon.test/release").unwrap();
        let key = key_file(dir.path(), &signer);
        let envelope = envelope(&signer);

        let good = archive(dir.path(), "good.tar", &envelope, &release_files(), |_| {});
        let summary = release_verify(&good, &key).unwrap();
        assert!(
            summary.starts_with("release verified with key cordon.test/release"),
            "{summary}"
        );
        assert!(summary.contains("  README.md\n") && summary.contains("  bin/cordon\n"));

        let mut altered = release_files();
        altered[0].1 = b"\x7fELF a backdoor";
        let bad = archive(dir.path(), "altered.tar", &envelope, &altered, |_| {});
        let error = release_verify(&bad, &key).unwrap_err().to_string();
        assert!(error.contains("file `bin/cordon` was altered"), "{error}");

        let extra = archive(dir.path(), "extra.tar", &envelope, &release_files(), |b| {
            append(b, "files/bin/helper", b"#!/bin/sh\n");
        });
        let error = release_verify(&extra, &key).unwrap_err().to_string();
        assert!(
            error.contains("file `bin/helper` is not part of the signed release"),
            "{error}"
        );

        let (other, _) = Signer::generate("cordon.test/release").unwrap();
        let other_key = dir.path().join("other.pub");
        std::fs::write(&other_key, other.verifier().to_text()).unwrap();
        let error = release_verify(&good, &other_key).unwrap_err().to_string();
        assert!(error.contains("no signature by key"), "{error}");
    }

    #[test]
    fn odd_archive_members_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, _) = Signer::generate("cordon.test/release").unwrap();
        let key = key_file(dir.path(), &signer);
        let envelope = envelope(&signer);

        let link = archive(dir.path(), "link.tar", &envelope, &release_files(), |b| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            b.append_link(&mut header, "files/passwd", "/etc/passwd")
                .unwrap();
        });
        let error = release_verify(&link, &key).unwrap_err().to_string();
        assert!(error.contains("not a regular file or directory"), "{error}");

        // The builder refuses `..`, so write the name into the header by hand.
        let escape = archive(dir.path(), "escape.tar", &envelope, &release_files(), |b| {
            let mut header = tar::Header::new_old();
            let name = b"files/../../x";
            header.as_old_mut().name[..name.len()].copy_from_slice(name);
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(1);
            header.set_mode(0o644);
            header.set_cksum();
            b.append(&header, &b"x"[..]).unwrap();
        });
        let error = release_verify(&escape, &key).unwrap_err().to_string();
        assert!(error.contains("points outside the archive"), "{error}");

        let stray = archive(dir.path(), "stray.tar", &envelope, &release_files(), |b| {
            append(b, "NOTES", b"unsigned");
        });
        let error = release_verify(&stray, &key).unwrap_err().to_string();
        assert!(
            error.contains("neither release.dsse.json nor under files/"),
            "{error}"
        );

        let twice = archive(dir.path(), "twice.tar", &envelope, &release_files(), |b| {
            append(b, "files/./README.md", b"# Cordon\n");
        });
        let error = release_verify(&twice, &key).unwrap_err().to_string();
        assert!(error.contains("holds file `README.md` twice"), "{error}");
    }

    #[test]
    fn an_evidence_bundle_verifies_and_tampering_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (signer, _) = Signer::generate("cordon.test/evidence").unwrap();
        let key = key_file(dir.path(), &signer);
        let mut counter = 0u8;
        let sealed: Vec<entry::Sealed> = (0..5)
            .map(|i| {
                let draft = entry::Draft {
                    tenant: "ten_1".into(),
                    session: Some("ses_1".into()),
                    kind: "exec".into(),
                    actor: "usr_1".into(),
                    at: format!("2026-11-28T11:00:0{i}.000000Z"),
                    fields: [("argv_digest".to_owned(), json!(format!("cmd {i}")))].into(),
                };
                entry::seal(&draft, || {
                    counter += 1;
                    [counter; 16]
                })
            })
            .collect();
        let leaves: Vec<merkle::Hash> = sealed.iter().map(|s| s.leaf_hash).collect();
        let note = signer
            .sign(&Checkpoint {
                origin: "cordon.test/evidence/ten_1".into(),
                size: 5,
                root: merkle::root(&leaves),
                extensions: vec![],
            })
            .unwrap();
        let bundle = bundle::build(
            "cordon.test/evidence/ten_1",
            "ten_1",
            Some("ses_1"),
            &signer.verifier().to_text(),
            sealed
                .iter()
                .enumerate()
                .map(|(i, s)| (i as u64, s.leaf.clone(), s.fields.clone()))
                .collect(),
            &cordon_evidence::MerkleTree::from_leaves(leaves.iter().copied()),
            vec![note],
        )
        .unwrap();
        let path = dir.path().join("bundle.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&bundle).unwrap()).unwrap();
        let summary = evidence_verify(&path, &key).unwrap();
        assert!(summary.contains("entries:     5 included"), "{summary}");

        let mut altered = bundle;
        altered.entries[2].fields[0].value = "\"cmd 9\"".into();
        std::fs::write(&path, serde_json::to_vec(&altered).unwrap()).unwrap();
        let error = evidence_verify(&path, &key).unwrap_err().to_string();
        assert!(
            error.ends_with(
                "entry 3 (index 2): field `argv_digest` does not match its commitment (altered value)"
            ),
            "{error}"
        );
    }
}
