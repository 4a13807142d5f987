//! The offline export of evidence: some entries of one tenant's log (all of it, or one
//! session's), the signed checkpoints that cover them, and the proofs that tie the two
//! together, in one JSON document that `cordon evidence verify` checks with nothing but
//! the deployment's public key.
//!
//! ```text
//! {"format":"cordon-evidence-bundle/v1","origin":"cordon.example/evidence/ten_1",
//!  "tenant":"ten_1","session":"ses_1","public_key":"cordon.example/evidence+1a2b3c4d+AX…",
//!  "checkpoints":[{"note":"…signed note…","consistency":[]},
//!                 {"note":"…","consistency":["<hex>",…]}],
//!  "entries":[{"index":4,"leaf":"{…}","fields":[{"name":…,"salt":…,"value":…}],
//!              "inclusion":["<hex>",…]}]}
//! ```
//!
//! Checkpoints ascend strictly in size, each with the consistency proof from the one
//! before it (the first has none). Every entry's inclusion proof is against the last
//! checkpoint. Hashes are lowercase hex. `public_key` only tells a reader which key to
//! fetch: verification uses the key the verifier is given, never this one. Errors name
//! checkpoints and entries by their position in the bundle, counting from 1.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CheckpointError, Verifier};
use crate::entry::{self, EntryError, SealedField};
use crate::merkle::{self, Hash};
use crate::tree::MerkleTree;

/// The value of `format` in bundles of this version.
pub const FORMAT: &str = "cordon-evidence-bundle/v1";

/// An evidence bundle as written to JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`FORMAT`].
    pub format: String,
    /// The log's origin, the first line of every checkpoint.
    pub origin: String,
    pub tenant: String,
    /// The session whose entries these are; `null` for a bundle of the whole tenant.
    /// Required in the JSON even when null, so that dropping it cannot widen a session
    /// bundle into a tenant bundle.
    #[serde(deserialize_with = "Option::deserialize")]
    pub session: Option<String>,
    /// The verifier key text of the signer. Informational only.
    pub public_key: String,
    pub checkpoints: Vec<BundleCheckpoint>,
    pub entries: Vec<BundleEntry>,
}

/// A signed checkpoint and its consistency with the previous one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleCheckpoint {
    /// The C2SP signed note.
    pub note: String,
    /// The consistency proof from the previous checkpoint's size to this one's, in hex;
    /// empty for the first checkpoint.
    pub consistency: Vec<String>,
}

/// One entry: its leaf, the fields still opened, and its inclusion proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleEntry {
    /// The leaf's index in the tenant's log.
    pub index: u64,
    /// The leaf text (canonical JSON, see [`crate::entry`]).
    pub leaf: String,
    /// The fields not shredded.
    pub fields: Vec<SealedField>,
    /// The inclusion proof against the last checkpoint, in hex.
    pub inclusion: Vec<String>,
}

/// What a verified bundle proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub origin: String,
    pub tenant: String,
    pub session: Option<String>,
    /// The number of entries, all verified.
    pub entries: usize,
    /// Fields committed to in the entries' leaves but shredded since.
    pub shredded_fields: usize,
    /// The number of checkpoints, all signed and consistent with each other.
    pub checkpoints: usize,
    /// The size of the last checkpoint.
    pub size: u64,
    /// The root hash of the last checkpoint, in hex.
    pub root_hex: String,
}

/// Names a checkpoint in messages: `checkpoint 2 (size 80)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointAt {
    /// Counting from 1, in bundle order.
    pub position: usize,
    /// The size the note claims, if it can be read at all.
    pub size: Option<u64>,
}

impl fmt::Display for CheckpointAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.size {
            Some(size) => write!(f, "checkpoint {} (size {size})", self.position),
            None => write!(f, "checkpoint {}", self.position),
        }
    }
}

/// Names an entry in messages: `entry 17 (index 4211)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryAt {
    /// Counting from 1, in bundle order.
    pub position: usize,
    /// The log index the bundle gives for it.
    pub index: u64,
}

impl fmt::Display for EntryAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {} (index {})", self.position, self.index)
    }
}

/// Why a bundle was refused (or could not be built), in words for the person running
/// the verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a readable evidence bundle: {0}")]
    Parse(String),
    #[error("unknown bundle format `{0}` (expected `{FORMAT}`)")]
    Format(String),
    #[error("the bundle holds no checkpoint, so none of it can be verified")]
    NoCheckpoints,
    #[error(
        "{at}: it carries no signature by key {key} (key id {key_id}): it was signed by another key or its signature line was altered"
    )]
    NotSigned {
        at: CheckpointAt,
        key: String,
        key_id: String,
    },
    #[error("{at}: signature does not verify with key {key} (the checkpoint was altered)")]
    BadSignature { at: CheckpointAt, key: String },
    #[error("{at}: malformed checkpoint: {reason}")]
    MalformedCheckpoint { at: CheckpointAt, reason: String },
    #[error("{at}: its origin `{found}` is not the bundle's origin `{expected}`")]
    WrongOrigin {
        at: CheckpointAt,
        found: String,
        expected: String,
    },
    #[error("{at}: sizes must ascend, but the checkpoint before it has size {previous}")]
    OutOfOrder { at: CheckpointAt, previous: u64 },
    #[error("{at}: the first checkpoint must come without a consistency proof")]
    FirstWithProof { at: CheckpointAt },
    #[error("{at}: consistency proof hash {hash} is not 64 lowercase hex digits")]
    MalformedConsistency { at: CheckpointAt, hash: usize },
    #[error(
        "{at} is not consistent with the checkpoint of size {previous} before it (the log was rewritten or the proof was altered)"
    )]
    Inconsistent { at: CheckpointAt, previous: u64 },
    #[error("{at} repeats the index of entry {first}")]
    DuplicateIndex { at: EntryAt, first: usize },
    #[error("{at}: inclusion proof hash {hash} is not 64 lowercase hex digits")]
    MalformedInclusion { at: EntryAt, hash: usize },
    #[error("{at}: its index is beyond the last checkpoint, of size {size}")]
    IndexBeyond { at: EntryAt, size: u64 },
    #[error(
        "{at}: its leaf is not included in the checkpoint of size {size} (the entry or the proof was altered)"
    )]
    NotIncluded { at: EntryAt, size: u64 },
    #[error("{at}: {source}")]
    Entry {
        at: EntryAt,
        #[source]
        source: EntryError,
    },
    #[error("{at}: it belongs to tenant `{found}`, not to the bundle's tenant `{expected}`")]
    WrongTenant {
        at: EntryAt,
        found: String,
        expected: String,
    },
    #[error("{at}: it belongs to {found}, not to the bundle's session `{expected}`")]
    WrongSession {
        at: EntryAt,
        /// `session `x`` or `no session`.
        found: String,
        expected: String,
    },
    #[error("the public key text is not a verifier key: {0}")]
    Key(String),
    #[error("cannot build the bundle: {0}")]
    Build(String),
}

/// The checkpoint body of a note, read without checking its signature: only to name
/// the checkpoint in messages and, in [`build`], after the signature was checked.
fn unverified_checkpoint(note: &str) -> Option<Checkpoint> {
    let (body, _) = note.split_once("\n\n")?;
    Checkpoint::parse_body(&format!("{body}\n")).ok()
}

fn verified_checkpoint(
    note: &str,
    position: usize,
    verifier: &Verifier,
) -> Result<Checkpoint, BundleError> {
    let at = CheckpointAt {
        position,
        size: unverified_checkpoint(note).map(|c| c.size),
    };
    verifier.verify(note).map_err(|e| match e {
        CheckpointError::NotSigned(key) => BundleError::NotSigned {
            at,
            key,
            key_id: verifier.key_id(),
        },
        CheckpointError::BadSignature(key) => BundleError::BadSignature { at, key },
        CheckpointError::Malformed(reason) | CheckpointError::Key(reason) => {
            BundleError::MalformedCheckpoint { at, reason }
        }
    })
}

/// Decodes hex hashes; on failure, the 1-based position of the bad one.
fn decode_hashes(hashes: &[String]) -> Result<Vec<Hash>, usize> {
    hashes
        .iter()
        .enumerate()
        .map(|(position, text)| {
            let lowercase = text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            hex::decode(text)
                .ok()
                .filter(|_| lowercase)
                .and_then(|bytes| Hash::try_from(bytes).ok())
                .ok_or(position + 1)
        })
        .collect()
}

fn encode_hashes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(hex::encode).collect()
}

fn describe_session(session: Option<&str>) -> String {
    match session {
        Some(session) => format!("session `{session}`"),
        None => "no session".to_owned(),
    }
}

/// Assembles a bundle and checks it as [`verify`] would.
///
/// - `entries`: (log index, leaf, opened fields) of the entries to export, in any order
///   (the bundle lists them by index);
/// - `tree`: the tenant's log, at least up to the last checkpoint (leaves appended
///   since are left out);
/// - `notes`: signed checkpoints of the log, sizes ascending, all signed by the key in
///   `public_key_text`. Of several notes of one size (all must match `tree`) only the
///   first is kept.
///
/// Entries are proven against the last checkpoint. The cost is O((entries + notes)
/// log² n) hashes for a log of n leaves, not O(n).
pub fn build(
    origin: &str,
    tenant: &str,
    session: Option<&str>,
    public_key_text: &str,
    mut entries: Vec<(u64, String, Vec<SealedField>)>,
    tree: &MerkleTree,
    notes: Vec<String>,
) -> Result<Bundle, BundleError> {
    let verifier =
        Verifier::from_text(public_key_text).map_err(|e| BundleError::Key(e.to_string()))?;
    let mut sizes: Vec<u64> = Vec::with_capacity(notes.len());
    let mut roots: Vec<Hash> = Vec::with_capacity(notes.len());
    for (position, note) in notes.iter().enumerate() {
        let checkpoint = verified_checkpoint(note, position + 1, &verifier)?;
        sizes.push(checkpoint.size);
        roots.push(checkpoint.root);
    }
    if let Some(pair) = sizes.windows(2).find(|pair| pair[0] > pair[1]) {
        return Err(BundleError::Build(format!(
            "checkpoint sizes must ascend, but size {} comes after {}",
            pair[1], pair[0]
        )));
    }
    let Some(&last_size) = sizes.last() else {
        return Err(BundleError::NoCheckpoints);
    };
    if last_size > tree.len() {
        return Err(BundleError::Build(format!(
            "the last checkpoint has size {last_size} but the log holds {} leaves",
            tree.len()
        )));
    }
    for (position, (&size, root)) in sizes.iter().zip(&roots).enumerate() {
        let head = tree
            .root(size)
            .map_err(|e| BundleError::Build(e.to_string()))?;
        if head != *root {
            return Err(BundleError::Build(format!(
                "checkpoint {} (size {size}) does not match the given leaf hashes",
                position + 1
            )));
        }
    }
    let mut checkpoints = Vec::with_capacity(notes.len());
    let mut previous_size: Option<u64> = None;
    for (note, size) in notes.into_iter().zip(sizes) {
        let consistency = match previous_size {
            None => Vec::new(),
            Some(previous) if previous == size => continue,
            Some(previous) => {
                let proof = tree
                    .consistency_proof(previous, size)
                    .map_err(|e| BundleError::Build(e.to_string()))?;
                encode_hashes(&proof)
            }
        };
        checkpoints.push(BundleCheckpoint { note, consistency });
        previous_size = Some(size);
    }
    entries.sort_by_key(|(index, _, _)| *index);
    let mut bundle_entries = Vec::with_capacity(entries.len());
    for (index, leaf, fields) in entries {
        let matches = index < last_size
            && tree
                .leaf(index)
                .is_some_and(|hash| hash == merkle::leaf_hash(leaf.as_bytes()));
        if !matches {
            return Err(BundleError::Build(format!(
                "the entry given for index {index} is not the leaf at that index of the log"
            )));
        }
        let inclusion = tree
            .inclusion_proof(index, last_size)
            .map_err(|e| BundleError::Build(e.to_string()))?;
        bundle_entries.push(BundleEntry {
            index,
            leaf,
            fields,
            inclusion: encode_hashes(&inclusion),
        });
    }
    let bundle = Bundle {
        format: FORMAT.to_owned(),
        origin: origin.to_owned(),
        tenant: tenant.to_owned(),
        session: session.map(str::to_owned),
        public_key: public_key_text.trim().to_owned(),
        checkpoints,
        entries: bundle_entries,
    };
    verify_bundle(&bundle, &verifier)?;
    Ok(bundle)
}

/// Parses and verifies a bundle's JSON with `verifier`, the key the user trusts.
pub fn verify(bytes: &[u8], verifier: &Verifier) -> Result<Report, BundleError> {
    let bundle: Bundle =
        serde_json::from_slice(bytes).map_err(|e| BundleError::Parse(e.to_string()))?;
    verify_bundle(&bundle, verifier)
}

/// Verifies a parsed bundle with `verifier`; see the module documentation.
pub fn verify_bundle(bundle: &Bundle, verifier: &Verifier) -> Result<Report, BundleError> {
    if bundle.format != FORMAT {
        return Err(BundleError::Format(bundle.format.clone()));
    }
    let mut previous: Option<Checkpoint> = None;
    for (position, item) in bundle.checkpoints.iter().enumerate() {
        let checkpoint = verified_checkpoint(&item.note, position + 1, verifier)?;
        let at = CheckpointAt {
            position: position + 1,
            size: Some(checkpoint.size),
        };
        if checkpoint.origin != bundle.origin {
            return Err(BundleError::WrongOrigin {
                at,
                found: checkpoint.origin,
                expected: bundle.origin.clone(),
            });
        }
        let proof =
            decode_hashes(&item.consistency).map_err(|hash| BundleError::MalformedConsistency {
                at: at.clone(),
                hash,
            })?;
        match &previous {
            None if !proof.is_empty() => return Err(BundleError::FirstWithProof { at }),
            None => {}
            Some(before) if before.size >= checkpoint.size => {
                return Err(BundleError::OutOfOrder {
                    at,
                    previous: before.size,
                });
            }
            Some(before) => merkle::verify_consistency(
                before.size,
                checkpoint.size,
                &proof,
                &before.root,
                &checkpoint.root,
            )
            .map_err(|_| BundleError::Inconsistent {
                at,
                previous: before.size,
            })?,
        }
        previous = Some(checkpoint);
    }
    let Some(last) = previous else {
        return Err(BundleError::NoCheckpoints);
    };

    let mut positions_by_index: BTreeMap<u64, usize> = BTreeMap::new();
    let mut shredded_fields = 0;
    for (position, item) in bundle.entries.iter().enumerate() {
        let at = EntryAt {
            position: position + 1,
            index: item.index,
        };
        if let Some(&first) = positions_by_index.get(&item.index) {
            return Err(BundleError::DuplicateIndex { at, first });
        }
        positions_by_index.insert(item.index, position + 1);
        let proof =
            decode_hashes(&item.inclusion).map_err(|hash| BundleError::MalformedInclusion {
                at: at.clone(),
                hash,
            })?;
        if item.index >= last.size {
            return Err(BundleError::IndexBeyond {
                at,
                size: last.size,
            });
        }
        let leaf_hash = merkle::leaf_hash(item.leaf.as_bytes());
        merkle::verify_inclusion(&leaf_hash, item.index, last.size, &proof, &last.root).map_err(
            |_| BundleError::NotIncluded {
                at: at.clone(),
                size: last.size,
            },
        )?;
        let parsed =
            entry::check(&item.leaf, &item.fields).map_err(|source| BundleError::Entry {
                at: at.clone(),
                source,
            })?;
        if parsed.tenant != bundle.tenant {
            return Err(BundleError::WrongTenant {
                at,
                found: parsed.tenant,
                expected: bundle.tenant.clone(),
            });
        }
        if let Some(expected) = &bundle.session
            && parsed.session.as_ref() != Some(expected)
        {
            return Err(BundleError::WrongSession {
                at,
                found: describe_session(parsed.session.as_deref()),
                expected: expected.clone(),
            });
        }
        shredded_fields += parsed.field_names.len() - item.fields.len();
    }
    Ok(Report {
        origin: bundle.origin.clone(),
        tenant: bundle.tenant.clone(),
        session: bundle.session.clone(),
        entries: bundle.entries.len(),
        shredded_fields,
        checkpoints: bundle.checkpoints.len(),
        size: last.size,
        root_hex: hex::encode(last.root),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Signer;
    use crate::entry::{Draft, Sealed, seal};
    use serde_json::json;

    const ORIGIN: &str = "cordon.test/evidence/ten_1";
    const KEY_NAME: &str = "cordon.test/evidence";
    const CHECKPOINT_SIZES: [usize; 4] = [12, 25, 40, 50];

    struct Log {
        signer: Signer,
        sealed: Vec<Sealed>,
        leaves: Vec<Hash>,
        notes: Vec<String>,
    }

    fn session_of(i: usize) -> Option<String> {
        match i % 4 {
            0 => None,
            1 | 2 => Some("ses_a".into()),
            _ => Some("ses_b".into()),
        }
    }

    /// A log of 50 entries: every fourth tenant-level, the rest in sessions `ses_a` and
    /// `ses_b`, with checkpoints at [`CHECKPOINT_SIZES`].
    fn log() -> Log {
        let (signer, _) = Signer::generate(KEY_NAME).unwrap();
        let mut salt = 0u128;
        let sealed: Vec<Sealed> = (0..50)
            .map(|i| {
                let draft = Draft {
                    tenant: "ten_1".into(),
                    session: session_of(i),
                    kind: if i % 2 == 0 {
                        "exec"
                    } else {
                        "egress.decision"
                    }
                    .into(),
                    actor: format!("usr_{}", i % 3),
                    at: format!("2026-11-28T11:00:{:02}.{:06}Z", i, i * 7),
                    fields: BTreeMap::from([
                        ("argv_digest".to_owned(), json!(format!("cmd {i}"))),
                        ("exit_code".to_owned(), json!(i % 3)),
                        ("detail".to_owned(), json!({"n": i, "ok": i % 5 != 0})),
                    ]),
                };
                seal(&draft, || {
                    salt += 1;
                    salt.to_be_bytes()
                })
            })
            .collect();
        let leaves: Vec<Hash> = sealed.iter().map(|s| s.leaf_hash).collect();
        let notes = CHECKPOINT_SIZES
            .iter()
            .map(|&size| {
                signer
                    .sign(&Checkpoint {
                        origin: ORIGIN.into(),
                        size: size as u64,
                        root: merkle::root(&leaves[..size]),
                        extensions: vec![format!("time 2026-11-28T12:{size:02}:00Z")],
                    })
                    .unwrap()
            })
            .collect();
        Log {
            signer,
            sealed,
            leaves,
            notes,
        }
    }

    fn entries_of(log: &Log, session: Option<&str>) -> Vec<(u64, String, Vec<SealedField>)> {
        log.sealed
            .iter()
            .enumerate()
            .filter(|(i, _)| session.is_none() || session_of(*i).as_deref() == session)
            .map(|(i, s)| (i as u64, s.leaf.clone(), s.fields.clone()))
            .collect()
    }

    fn session_bundle(log: &Log) -> Bundle {
        build(
            ORIGIN,
            "ten_1",
            Some("ses_a"),
            &log.signer.verifier().to_text(),
            entries_of(log, Some("ses_a")),
            &MerkleTree::from_leaves(log.leaves.iter().copied()),
            log.notes.clone(),
        )
        .unwrap()
    }

    fn verify_json(bundle: &Bundle, log: &Log) -> Result<Report, BundleError> {
        verify(
            serde_json::to_string(bundle).unwrap().as_bytes(),
            &log.signer.verifier(),
        )
    }

    #[test]
    fn a_session_bundle_verifies() {
        let log = log();
        let bundle = session_bundle(&log);
        assert_eq!(bundle.entries.len(), 25);
        assert!(bundle.checkpoints[0].consistency.is_empty());
        assert!(
            bundle.checkpoints[1..]
                .iter()
                .all(|c| !c.consistency.is_empty())
        );
        let report = verify_json(&bundle, &log).unwrap();
        assert_eq!(
            report,
            Report {
                origin: ORIGIN.into(),
                tenant: "ten_1".into(),
                session: Some("ses_a".into()),
                entries: 25,
                shredded_fields: 0,
                checkpoints: 4,
                size: 50,
                root_hex: hex::encode(merkle::root(&log.leaves)),
            }
        );
    }

    #[test]
    fn a_tenant_bundle_holds_every_session() {
        let log = log();
        let bundle = build(
            ORIGIN,
            "ten_1",
            None,
            &log.signer.verifier().to_text(),
            entries_of(&log, None),
            &MerkleTree::from_leaves(log.leaves.iter().copied()),
            log.notes.clone(),
        )
        .unwrap();
        let json = serde_json::to_string(&bundle).unwrap();
        assert!(json.contains(r#""session":null"#));
        assert_eq!(verify_json(&bundle, &log).unwrap().entries, 50);
        // Without `session`, a session bundle would read as a tenant bundle: refused.
        let session = serde_json::to_string(&session_bundle(&log)).unwrap();
        let widened = session.replace(r#""session":"ses_a","#, "");
        assert!(matches!(
            verify(widened.as_bytes(), &log.signer.verifier()),
            Err(BundleError::Parse(_))
        ));
    }

    #[test]
    fn shredding_fields_and_dropping_entries_still_verify() {
        let log = log();
        let mut bundle = session_bundle(&log);
        bundle.entries[3].fields.remove(1);
        bundle.entries[7].fields.clear();
        bundle.entries.remove(10);
        bundle.entries.swap(0, 5);
        let report = verify_json(&bundle, &log).unwrap();
        assert_eq!(report.entries, 24);
        assert_eq!(report.shredded_fields, 4);
        // A bundle with only the checkpoints proves the log's growth.
        bundle.entries.clear();
        assert_eq!(verify_json(&bundle, &log).unwrap().checkpoints, 4);
    }

    #[test]
    fn reordered_or_missing_checkpoints_fail() {
        let log = log();
        let bundle = session_bundle(&log);
        // Swapped, a checkpoint's proof no longer starts where the one before it ends.
        let mut swapped = bundle.clone();
        swapped.checkpoints.swap(1, 2);
        let error = verify_json(&swapped, &log).unwrap_err();
        assert_eq!(
            error.to_string(),
            "checkpoint 2 (size 40) is not consistent with the checkpoint of size 12 before it (the log was rewritten or the proof was altered)"
        );
        let mut repeated = bundle.clone();
        repeated
            .checkpoints
            .insert(2, bundle.checkpoints[1].clone());
        let error = verify_json(&repeated, &log).unwrap_err();
        assert_eq!(
            error.to_string(),
            "checkpoint 3 (size 25): sizes must ascend, but the checkpoint before it has size 25"
        );
        // Without the last checkpoint the inclusion proofs point at a tree nobody signed.
        let mut truncated = bundle.clone();
        truncated.checkpoints.pop();
        let error = verify_json(&truncated, &log).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("not included in the checkpoint of size 40"),
            "{error}"
        );
        // Dropping a middle checkpoint breaks the chain of consistency proofs.
        let mut gap = bundle.clone();
        gap.checkpoints.remove(1);
        assert!(matches!(
            verify_json(&gap, &log),
            Err(BundleError::Inconsistent { previous: 12, .. })
        ));
        let mut none = bundle;
        none.checkpoints.clear();
        assert_eq!(verify_json(&none, &log), Err(BundleError::NoCheckpoints));
    }

    #[test]
    fn another_key_fails() {
        let log = log();
        let bundle = session_bundle(&log);
        let (other, _) = Signer::generate(KEY_NAME).unwrap();
        let error = verify(
            serde_json::to_string(&bundle).unwrap().as_bytes(),
            &other.verifier(),
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with(&format!(
                "checkpoint 1 (size 12): it carries no signature by key {KEY_NAME} (key id {})",
                other.verifier().key_id()
            )),
            "{error}"
        );
        // The bundle's own `public_key` plays no part in verification.
        let mut renamed = bundle;
        renamed.public_key = other.verifier().to_text();
        assert!(verify_json(&renamed, &log).is_ok());
        assert!(verify_bundle(&renamed, &other.verifier()).is_err());
    }

    #[test]
    fn errors_say_which_entry_and_why() {
        let log = log();
        let bundle = session_bundle(&log);
        let mut altered = bundle.clone();
        altered.entries[2].fields[0].value = r#""cmd 999""#.into();
        assert_eq!(
            verify_json(&altered, &log).unwrap_err().to_string(),
            "entry 3 (index 5): field `argv_digest` does not match its commitment (altered value)"
        );
        let mut moved = bundle.clone();
        moved.entries[4].index += 1;
        assert_eq!(
            verify_json(&moved, &log).unwrap_err().to_string(),
            "entry 5 (index 10): its leaf is not included in the checkpoint of size 50 (the entry or the proof was altered)"
        );
        let mut repeated = bundle.clone();
        let copy = repeated.entries[1].clone();
        repeated.entries.push(copy);
        assert_eq!(
            verify_json(&repeated, &log).unwrap_err().to_string(),
            "entry 26 (index 2) repeats the index of entry 2"
        );
        let mut beyond = bundle.clone();
        beyond.entries[0].index = 50;
        assert!(matches!(
            verify_json(&beyond, &log),
            Err(BundleError::IndexBeyond { size: 50, .. })
        ));
        let mut upper = bundle.clone();
        upper.entries[0].inclusion[1] = upper.entries[0].inclusion[1].to_uppercase();
        assert!(matches!(
            verify_json(&upper, &log),
            Err(BundleError::MalformedInclusion { hash: 2, .. })
        ));
        let mut other_tenant = bundle.clone();
        other_tenant.tenant = "ten_2".into();
        assert_eq!(
            verify_json(&other_tenant, &log).unwrap_err().to_string(),
            "entry 1 (index 1): it belongs to tenant `ten_1`, not to the bundle's tenant `ten_2`"
        );
        let mut other_origin = bundle.clone();
        other_origin.origin = "cordon.test/evidence/ten_2".into();
        assert!(matches!(
            verify_json(&other_origin, &log),
            Err(BundleError::WrongOrigin { .. })
        ));
        let mut format = bundle;
        format.format = "cordon-evidence-bundle/v2".into();
        assert!(matches!(
            verify_json(&format, &log),
            Err(BundleError::Format(_))
        ));
    }

    #[test]
    fn a_rewritten_log_is_inconsistent() {
        let log = log();
        // The same key signs a head over a log whose entry 3 was replaced.
        let mut forked = log.leaves.clone();
        forked[3] = merkle::leaf_hash(b"rewritten");
        let note = log
            .signer
            .sign(&Checkpoint {
                origin: ORIGIN.into(),
                size: 50,
                root: merkle::root(&forked),
                extensions: vec![],
            })
            .unwrap();
        let mut bundle = session_bundle(&log);
        bundle.checkpoints[3].note = note;
        let error = verify_json(&bundle, &log).unwrap_err();
        assert_eq!(
            error.to_string(),
            "checkpoint 4 (size 50) is not consistent with the checkpoint of size 40 before it (the log was rewritten or the proof was altered)"
        );
    }

    #[test]
    fn build_refuses_what_would_not_verify() {
        let log = log();
        let key = log.signer.verifier().to_text();
        let build_with = |session: Option<&str>,
                          entries: Vec<(u64, String, Vec<SealedField>)>,
                          leaves: &[Hash],
                          notes: Vec<String>| {
            let tree = MerkleTree::from_leaves(leaves.iter().copied());
            build(ORIGIN, "ten_1", session, &key, entries, &tree, notes)
        };
        // Another session's entry in a session bundle.
        let error = build_with(
            Some("ses_a"),
            entries_of(&log, Some("ses_b")),
            &log.leaves,
            log.notes.clone(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "entry 1 (index 3): it belongs to session `ses_b`, not to the bundle's session `ses_a`"
        );
        let tenant_level = vec![(0, log.sealed[0].leaf.clone(), vec![])];
        assert!(
            build_with(Some("ses_a"), tenant_level, &log.leaves, log.notes.clone())
                .unwrap_err()
                .to_string()
                .contains("it belongs to no session")
        );
        // Leaves beyond the last checkpoint.
        assert!(matches!(
            build_with(None, vec![], &log.leaves[..49], log.notes.clone()),
            Err(BundleError::Build(_))
        ));
        // A leaf that is not at its index.
        let misplaced = vec![(1, log.sealed[0].leaf.clone(), vec![])];
        assert!(matches!(
            build_with(None, misplaced, &log.leaves, log.notes.clone()),
            Err(BundleError::Build(_))
        ));
        // A repeated size is kept once.
        let mut repeated = log.notes.clone();
        repeated.insert(1, log.notes[1].clone());
        repeated.insert(0, log.notes[0].clone());
        let bundle = build_with(None, vec![], &log.leaves, repeated).unwrap();
        assert_eq!(bundle.checkpoints.len(), 4);
        // Notes out of order, or none.
        let mut reversed = log.notes.clone();
        reversed.reverse();
        assert!(build_with(None, vec![], &log.leaves, reversed).is_err());
        assert_eq!(
            build_with(None, vec![], &log.leaves, vec![]),
            Err(BundleError::NoCheckpoints)
        );
        // A checkpoint that does not match the leaves.
        let mut other_leaves = log.leaves.clone();
        other_leaves[0] = merkle::leaf_hash(b"other");
        assert!(matches!(
            build_with(None, vec![], &other_leaves, log.notes.clone()),
            Err(BundleError::Build(m)) if m.contains("checkpoint 1 (size 12)")
        ));
        assert!(matches!(
            build(
                ORIGIN,
                "ten_1",
                None,
                "nonsense",
                vec![],
                &MerkleTree::from_leaves(log.leaves.iter().copied()),
                log.notes.clone()
            ),
            Err(BundleError::Key(_))
        ));
    }

    /// Another character of the same class where there is one, so that most mutations
    /// still parse and reach the verifier.
    fn substitute(c: char) -> char {
        match c {
            '0'..='8' | 'a'..='e' | 'g'..='y' | 'A'..='Y' => char::from(c as u8 + 1),
            '9' => '0',
            'f' => 'a',
            'z' => 'g',
            'Z' => 'A',
            '+' => '/',
            '/' => '+',
            _ => 'x',
        }
    }

    #[test]
    fn every_altered_character_fails() {
        let log = log();
        let mut bundle = session_bundle(&log);
        // A smaller bundle keeps the loop fast and still covers every kind of string:
        // a shredded field, entries near both ends, every checkpoint.
        bundle.entries = vec![
            bundle.entries[0].clone(),
            bundle.entries[12].clone(),
            bundle.entries[24].clone(),
        ];
        bundle.entries[1].fields.remove(0);
        let json = serde_json::to_string(&bundle).unwrap();
        let verifier = log.signer.verifier();
        verify(json.as_bytes(), &verifier).unwrap();

        // The informational public key is the one place where a change is harmless.
        let key_start = json.find(r#""public_key":""#).unwrap() + r#""public_key":""#.len();
        let key_end = key_start + json[key_start..].find('"').unwrap();

        let (mut parse_errors, mut verify_errors) = (0, 0);
        for (offset, c) in json.char_indices() {
            if (key_start..key_end).contains(&offset) {
                continue;
            }
            let mut altered = json.clone();
            altered.replace_range(offset..offset + c.len_utf8(), &substitute(c).to_string());
            match verify(altered.as_bytes(), &verifier) {
                Ok(_) => panic!(
                    "changing {c:?} at byte {offset} went unnoticed: …{}…",
                    &altered[offset.saturating_sub(40)..(offset + 40).min(altered.len())]
                ),
                Err(BundleError::Parse(_)) => parse_errors += 1,
                Err(_) => verify_errors += 1,
            }
        }
        // About 4300 and 1000 at the time of writing.
        assert!(
            verify_errors > 3000 && parse_errors > 500,
            "{verify_errors} verification errors, {parse_errors} parse errors"
        );
    }
}
