//! Signed releases: an in-toto Statement v1 naming the released files by SHA-256, in a
//! DSSE envelope signed with the deployment's ed25519 key (the one that signs
//! checkpoints).
//!
//! ```text
//! {"payload":"<base64 of the canonical statement>",
//!  "payloadType":"application/vnd.in-toto+json",
//!  "signatures":[{"keyid":"1a2b3c4d","sig":"<base64 ed25519 signature>"}]}
//! ```
//!
//! The signature is over DSSE's pre-authentication encoding, `DSSEv1 <len(type)> <type>
//! <len(payload)> <payload>`, lengths in ASCII decimal. `keyid` is the hex key id of
//! [`Verifier::key_id`]; as DSSE says, it is only a hint and not signed. We sign and
//! accept only payloads in canonical JSON: besides making them reproducible, that keeps
//! these messages apart from checkpoint notes signed by the same key (see
//! [`Signer::sign_bytes`]).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::canonical::to_canonical;
use crate::checkpoint::{Signer, Verifier};

/// The `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The DSSE payload type of in-toto statements.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// A released file: its path in the release and its SHA-256 in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub sha256: String,
}

impl Subject {
    /// The subject for `bytes` released under `name`.
    pub fn of(name: &str, bytes: &[u8]) -> Subject {
        Subject {
            name: name.to_owned(),
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }
}

/// What a verified release holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseReport {
    /// The name of the key that signed it.
    pub key: String,
    pub predicate_type: String,
    pub predicate: Value,
    /// Every released file, each present with the signed digest, in name order.
    pub subjects: Vec<Subject>,
}

/// How the released files differ from the signed statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileProblem {
    /// Named in the statement, absent from the files.
    Missing(String),
    /// Present with another digest.
    Altered {
        path: String,
        expected: String,
        found: String,
    },
    /// Present but not named in the statement.
    Unexpected(String),
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileProblem::Missing(path) => {
                write!(f, "file `{path}` is part of the signed release but missing")
            }
            FileProblem::Altered {
                path,
                expected,
                found,
            } => write!(
                f,
                "file `{path}` was altered: its sha256 is {found}, the signed release says {expected}"
            ),
            FileProblem::Unexpected(path) => {
                write!(f, "file `{path}` is not part of the signed release")
            }
        }
    }
}

fn join_problems(problems: &[FileProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why an envelope or a release was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsseError {
    #[error("not a DSSE envelope: {0}")]
    Malformed(String),
    #[error("the envelope's payload type is `{0}`, not `{PAYLOAD_TYPE}`")]
    PayloadType(String),
    #[error(
        "the envelope carries no signature by key {key} (key id {key_id}): it was signed by another key"
    )]
    NotSigned { key: String, key_id: String },
    #[error("the signature by key {key} does not verify: the envelope was altered")]
    BadSignature { key: String },
    #[error("the signed statement is not valid: {0}")]
    Statement(String),
    #[error("the files do not match the signed release: {}", join_problems(.0))]
    Files(Vec<FileProblem>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    payload: String,
    #[serde(rename = "payloadType")]
    payload_type: String,
    signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EnvelopeSignature {
    #[serde(default)]
    keyid: String,
    sig: String,
}

/// An in-toto Statement v1 about `subjects`.
pub fn statement(subjects: &[Subject], predicate_type: &str, predicate: Value) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|s| json!({"name": s.name, "digest": {"sha256": s.sha256}}))
        .collect();
    json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": predicate_type,
        "predicate": predicate,
    })
}

/// DSSE's pre-authentication encoding of a payload, the bytes that are signed.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut message = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    message.extend_from_slice(payload);
    message
}

fn statement_problem(what: impl Into<String>) -> DsseError {
    DsseError::Statement(what.into())
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks the statement's shape and returns its predicate type and subjects.
fn read_statement(statement: &Value) -> Result<(String, Vec<Subject>), DsseError> {
    if statement.get("_type").and_then(Value::as_str) != Some(STATEMENT_TYPE) {
        return Err(statement_problem(format!(
            "its `_type` is not `{STATEMENT_TYPE}`"
        )));
    }
    let predicate_type = statement
        .get("predicateType")
        .and_then(Value::as_str)
        .ok_or_else(|| statement_problem("it has no `predicateType` string"))?;
    let listed = statement
        .get("subject")
        .and_then(Value::as_array)
        .ok_or_else(|| statement_problem("it has no `subject` list"))?;
    let mut subjects = Vec::with_capacity(listed.len());
    let mut names = BTreeSet::new();
    for (position, subject) in listed.iter().enumerate() {
        let name = subject
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| statement_problem(format!("subject {} has no name", position + 1)))?;
        let sha256 = subject
            .get("digest")
            .and_then(|digest| digest.get("sha256"))
            .and_then(Value::as_str)
            .filter(|digest| is_sha256_hex(digest))
            .ok_or_else(|| {
                statement_problem(format!(
                    "subject `{name}` has no sha256 digest of 64 lowercase hex digits"
                ))
            })?;
        if !names.insert(name) {
            return Err(statement_problem(format!(
                "subject `{name}` is listed twice"
            )));
        }
        subjects.push(Subject {
            name: name.to_owned(),
            sha256: sha256.to_owned(),
        });
    }
    Ok((predicate_type.to_owned(), subjects))
}

/// Signs `statement` (checked to be an in-toto Statement v1) into a DSSE envelope.
pub fn sign_envelope(statement: &Value, signer: &Signer) -> Result<String, DsseError> {
    read_statement(statement)?;
    let payload = to_canonical(statement);
    let signature = signer.sign_bytes(&pae(PAYLOAD_TYPE, payload.as_bytes()));
    let envelope = Envelope {
        payload: STANDARD.encode(payload),
        payload_type: PAYLOAD_TYPE.to_owned(),
        signatures: vec![EnvelopeSignature {
            keyid: signer.verifier().key_id(),
            sig: STANDARD.encode(signature),
        }],
    };
    serde_json::to_string(&envelope).map_err(|e| DsseError::Malformed(e.to_string()))
}

/// Checks that `envelope` holds an in-toto statement signed by `verifier`'s key and
/// returns the statement. Signatures by other keys are ignored; one by this key must
/// verify.
pub fn verify_envelope(envelope: &str, verifier: &Verifier) -> Result<Value, DsseError> {
    let envelope: Envelope =
        serde_json::from_str(envelope).map_err(|e| DsseError::Malformed(e.to_string()))?;
    if envelope.payload_type != PAYLOAD_TYPE {
        return Err(DsseError::PayloadType(envelope.payload_type));
    }
    let payload = STANDARD
        .decode(&envelope.payload)
        .map_err(|_| DsseError::Malformed("the payload is not base64".into()))?;
    let message = pae(&envelope.payload_type, &payload);
    let key_id = verifier.key_id();
    let verified = envelope.signatures.iter().any(|signature| {
        STANDARD
            .decode(&signature.sig)
            .is_ok_and(|sig| verifier.verify_bytes(&message, &sig))
    });
    if !verified {
        return Err(if envelope.signatures.iter().any(|s| s.keyid == key_id) {
            DsseError::BadSignature {
                key: verifier.name.clone(),
            }
        } else {
            DsseError::NotSigned {
                key: verifier.name.clone(),
                key_id,
            }
        });
    }
    let statement = std::str::from_utf8(&payload)
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(text).ok().map(|v| (text, v)))
        .filter(|(text, value)| to_canonical(value) == *text)
        .map(|(_, value)| value)
        .ok_or_else(|| statement_problem("the payload is not canonical JSON"))?;
    read_statement(&statement)?;
    Ok(statement)
}

/// Verifies a release: the envelope is signed by `verifier`'s key, and `files` (path to
/// contents) are exactly the statement's subjects with their digests.
pub fn verify_release(
    envelope: &str,
    verifier: &Verifier,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<ReleaseReport, DsseError> {
    let statement = verify_envelope(envelope, verifier)?;
    let (predicate_type, mut subjects) = read_statement(&statement)?;
    subjects.sort();
    let mut problems = Vec::new();
    for subject in &subjects {
        match files.get(&subject.name) {
            None => problems.push(FileProblem::Missing(subject.name.clone())),
            Some(bytes) => {
                let found = hex::encode(Sha256::digest(bytes));
                if found != subject.sha256 {
                    problems.push(FileProblem::Altered {
                        path: subject.name.clone(),
                        expected: subject.sha256.clone(),
                        found,
                    });
                }
            }
        }
    }
    let named: BTreeSet<&str> = subjects.iter().map(|s| s.name.as_str()).collect();
    for path in files.keys() {
        if !named.contains(path.as_str()) {
            problems.push(FileProblem::Unexpected(path.clone()));
        }
    }
    if !problems.is_empty() {
        return Err(DsseError::Files(problems));
    }
    Ok(ReleaseReport {
        key: verifier.name.clone(),
        predicate_type,
        predicate: statement.get("predicate").cloned().unwrap_or(Value::Null),
        subjects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREDICATE_TYPE: &str = "https://cordon.dev/release/v1";

    fn files() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("bin/cordon".to_owned(), b"\x7fELF binary".to_vec()),
            ("README.md".to_owned(), b"# Cordon\n".to_vec()),
            ("empty".to_owned(), Vec::new()),
        ])
    }

    fn signed(signer: &Signer) -> String {
        let subjects: Vec<Subject> = files()
            .iter()
            .map(|(name, bytes)| Subject::of(name, bytes))
            .collect();
        let statement = statement(
            &subjects,
            PREDICATE_TYPE,
            json!({"version": "0.1.0", "commit": "d7e9bee"}),
        );
        sign_envelope(&statement, signer).unwrap()
    }

    fn parts(envelope: &str) -> (Vec<u8>, Vec<u8>) {
        let envelope: Envelope = serde_json::from_str(envelope).unwrap();
        (
            STANDARD.decode(envelope.payload).unwrap(),
            STANDARD.decode(&envelope.signatures[0].sig).unwrap(),
        )
    }

    fn reassemble(payload: &[u8], sig: &[u8], keyid: &str) -> String {
        serde_json::to_string(&Envelope {
            payload: STANDARD.encode(payload),
            payload_type: PAYLOAD_TYPE.into(),
            signatures: vec![EnvelopeSignature {
                keyid: keyid.into(),
                sig: STANDARD.encode(sig),
            }],
        })
        .unwrap()
    }

    #[test]
    fn pae_matches_the_dsse_specification() {
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn a_signed_release_verifies() {
        let (signer, _) = Signer::generate("cordon.test/release").unwrap();
        let envelope = signed(&signer);
        let value: Value = serde_json::from_str(&envelope).unwrap();
        assert_eq!(value["payloadType"], PAYLOAD_TYPE);
        assert_eq!(value["signatures"][0]["keyid"], signer.verifier().key_id());
        let statement = verify_envelope(&envelope, &signer.verifier()).unwrap();
        assert_eq!(statement["_type"], STATEMENT_TYPE);
        assert_eq!(
            statement["subject"][0],
            json!({"name": "README.md", "digest": {"sha256": hex::encode(Sha256::digest(b"# Cordon\n"))}})
        );
        let report = verify_release(&envelope, &signer.verifier(), &files()).unwrap();
        assert_eq!(report.key, "cordon.test/release");
        assert_eq!(report.predicate_type, PREDICATE_TYPE);
        assert_eq!(report.predicate["version"], "0.1.0");
        let names: Vec<&str> = report.subjects.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["README.md", "bin/cordon", "empty"]);
    }

    #[test]
    fn any_flipped_payload_or_signature_byte_fails() {
        let (signer, _) = Signer::generate("cordon.test/release").unwrap();
        let verifier = signer.verifier();
        let (payload, sig) = parts(&signed(&signer));
        let keyid = verifier.key_id();
        for i in 0..payload.len() {
            let mut altered = payload.clone();
            altered[i] ^= 0x01;
            assert_eq!(
                verify_envelope(&reassemble(&altered, &sig, &keyid), &verifier),
                Err(DsseError::BadSignature {
                    key: "cordon.test/release".into()
                }),
                "payload byte {i}"
            );
        }
        for i in 0..sig.len() {
            let mut altered = sig.clone();
            altered[i] ^= 0x80;
            assert!(
                verify_envelope(&reassemble(&payload, &altered, &keyid), &verifier).is_err(),
                "signature byte {i}"
            );
        }
        // A truncated signature, and none at all.
        assert!(verify_envelope(&reassemble(&payload, &sig[..63], &keyid), &verifier).is_err());
        let unsigned = serde_json::to_string(&Envelope {
            payload: STANDARD.encode(&payload),
            payload_type: PAYLOAD_TYPE.into(),
            signatures: vec![],
        })
        .unwrap();
        assert!(matches!(
            verify_envelope(&unsigned, &verifier),
            Err(DsseError::NotSigned { .. })
        ));
    }

    #[test]
    fn changed_extra_and_missing_files_are_named() {
        let (signer, _) = Signer::generate("cordon.test/release").unwrap();
        let envelope = signed(&signer);
        let verifier = signer.verifier();

        let mut changed = files();
        changed.insert("bin/cordon".into(), b"\x7fELF backdoor".to_vec());
        let error = verify_release(&envelope, &verifier, &changed).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("the files do not match the signed release: file `bin/cordon` was altered: its sha256 is "),
            "{message}"
        );

        let mut extra = files();
        extra.insert("bin/helper".into(), b"#!/bin/sh".to_vec());
        assert_eq!(
            verify_release(&envelope, &verifier, &extra)
                .unwrap_err()
                .to_string(),
            "the files do not match the signed release: file `bin/helper` is not part of the signed release"
        );

        let mut missing = files();
        missing.remove("empty");
        missing.insert("other".into(), vec![]);
        assert_eq!(
            verify_release(&envelope, &verifier, &missing),
            Err(DsseError::Files(vec![
                FileProblem::Missing("empty".into()),
                FileProblem::Unexpected("other".into()),
            ]))
        );
    }

    #[test]
    fn another_key_or_type_is_refused() {
        let (signer, _) = Signer::generate("cordon.test/release").unwrap();
        let (other, _) = Signer::generate("cordon.test/release").unwrap();
        let envelope = signed(&signer);
        assert_eq!(
            verify_release(&envelope, &other.verifier(), &files()),
            Err(DsseError::NotSigned {
                key: "cordon.test/release".into(),
                key_id: other.verifier().key_id(),
            })
        );
        // Another key's signature next to ours (here over another payload) is ignored.
        let mut value: Value = serde_json::from_str(&envelope).unwrap();
        let ours = value["signatures"][0].clone();
        let other_statement = statement(&[], PREDICATE_TYPE, json!({}));
        let theirs =
            serde_json::from_str::<Value>(&sign_envelope(&other_statement, &other).unwrap())
                .unwrap()["signatures"][0]
                .clone();
        value["signatures"] = json!([theirs, ours]);
        let both = value.to_string();
        assert!(verify_release(&both, &signer.verifier(), &files()).is_ok());
        assert_eq!(
            verify_release(&both, &other.verifier(), &files()),
            Err(DsseError::BadSignature {
                key: "cordon.test/release".into()
            })
        );

        value["payloadType"] = json!("application/json");
        assert_eq!(
            verify_envelope(&value.to_string(), &signer.verifier()),
            Err(DsseError::PayloadType("application/json".into()))
        );

        // Properly signed, but not an in-toto statement or not canonical.
        let sign_raw = |payload: &[u8]| {
            let sig = signer.sign_bytes(&pae(PAYLOAD_TYPE, payload));
            reassemble(payload, &sig, &signer.verifier().key_id())
        };
        let not_in_toto = to_canonical(&json!({"_type": "https://example.com/v1", "subject": []}));
        assert!(matches!(
            verify_envelope(&sign_raw(not_in_toto.as_bytes()), &signer.verifier()),
            Err(DsseError::Statement(m)) if m.contains("_type")
        ));
        let spaced = format!(
            "{{\"_type\": \"{STATEMENT_TYPE}\", \"subject\": [], \"predicateType\": \"x\"}}"
        );
        assert!(matches!(
            verify_envelope(&sign_raw(spaced.as_bytes()), &signer.verifier()),
            Err(DsseError::Statement(m)) if m.contains("canonical")
        ));
        // Nor does sign_envelope sign such a statement.
        assert!(sign_envelope(&json!({"_type": "x"}), &signer).is_err());
        let twice = statement(
            &[Subject::of("a", b"1"), Subject::of("a", b"2")],
            PREDICATE_TYPE,
            json!({}),
        );
        assert!(sign_envelope(&twice, &signer).is_err());
    }
}
