//! The committed form of an evidence entry. The log's leaf holds the entry's metadata in
//! clear and, for each payload field, only a salted commitment:
//!
//! ```text
//! {"actor":"usr_1","at":"2026-11-28T11:00:00.000001Z","fields":{"argv":"sha256:9f…"},
//!  "kind":"exec","session":"ses_1","tenant":"ten_1","v":1}
//! ```
//!
//! (one line in reality: canonical JSON, see [`crate::canonical`]). A field's
//! commitment is `"sha256:" + hex(SHA-256(salt || canonical(value)))` with a fresh
//! 16-byte salt per field. The salt and value are kept next to the leaf; deleting both
//! *shreds* the field while the leaf, and so every proof over it, stays valid. Without the
//! salt, a shredded low-entropy value cannot be guessed back from its commitment.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canonical::to_canonical;
use crate::merkle::{Hash, leaf_hash};

/// The leaf format version written in `"v"`.
const LEAF_VERSION: u64 = 1;
/// Prefixes every field commitment in a leaf.
const COMMITMENT_PREFIX: &str = "sha256:";

/// An entry as the server assembles it, before sealing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    pub tenant: String,
    /// The session the entry belongs to; `None` for a tenant-level entry.
    pub session: Option<String>,
    /// What happened, e.g. `exec` or `egress.decision`.
    pub kind: String,
    /// Who did it (a user, key or session id).
    pub actor: String,
    /// When, as RFC 3339 UTC with microseconds; written as given.
    pub at: String,
    /// The payload; each value can later be shredded on its own.
    pub fields: BTreeMap<String, Value>,
}

/// One payload field with what opens its commitment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedField {
    pub name: String,
    /// 16 random bytes, 32 lowercase hex digits.
    pub salt: String,
    /// The value as canonical JSON text.
    pub value: String,
}

/// A sealed entry: the leaf to append to the log and the openings to store beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The leaf, canonical JSON.
    pub leaf: String,
    /// `merkle::leaf_hash` of the leaf's bytes.
    pub leaf_hash: Hash,
    /// One per draft field, in name order.
    pub fields: Vec<SealedField>,
}

/// Why an entry does not check out. Field names are quoted so that the message can be
/// shown as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("its leaf is malformed: {0}")]
    Malformed(String),
    #[error("its leaf is not in canonical form (it was re-encoded or altered)")]
    NotCanonical,
    #[error("field `{0}` is not committed to in its leaf")]
    UnknownField(String),
    #[error("field `{0}` is given more than once")]
    DuplicateField(String),
    #[error("field `{0}` has a malformed salt (expected 32 lowercase hex digits)")]
    BadSalt(String),
    #[error("field `{0}` has a value that is not canonical JSON")]
    BadValue(String),
    #[error("field `{0}` does not match its commitment (altered value)")]
    Mismatch(String),
}

/// What a checked leaf says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLeaf {
    pub tenant: String,
    pub session: Option<String>,
    pub kind: String,
    pub actor: String,
    pub at: String,
    /// Every field the leaf commits to, opened or shredded, in name order.
    pub field_names: Vec<String>,
}

fn commitment(salt: &[u8], canonical_value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(canonical_value.as_bytes());
    format!("{COMMITMENT_PREFIX}{}", hex::encode(hasher.finalize()))
}

/// Seals `draft`. `salt` is called once per field, in field name order, and must return
/// fresh random bytes (the server passes its CSPRNG; tests pass a counter).
pub fn seal(draft: &Draft, mut salt: impl FnMut() -> [u8; 16]) -> Sealed {
    let mut commitments = Map::new();
    let mut fields = Vec::with_capacity(draft.fields.len());
    for (name, value) in &draft.fields {
        let salt_bytes = salt();
        let canonical_value = to_canonical(value);
        commitments.insert(
            name.clone(),
            Value::String(commitment(&salt_bytes, &canonical_value)),
        );
        fields.push(SealedField {
            name: name.clone(),
            salt: hex::encode(salt_bytes),
            value: canonical_value,
        });
    }
    let mut leaf = Map::new();
    leaf.insert("v".into(), Value::from(LEAF_VERSION));
    leaf.insert("tenant".into(), Value::String(draft.tenant.clone()));
    leaf.insert(
        "session".into(),
        draft.session.clone().map_or(Value::Null, Value::String),
    );
    leaf.insert("kind".into(), Value::String(draft.kind.clone()));
    leaf.insert("actor".into(), Value::String(draft.actor.clone()));
    leaf.insert("at".into(), Value::String(draft.at.clone()));
    leaf.insert("fields".into(), Value::Object(commitments));
    let leaf = to_canonical(&Value::Object(leaf));
    Sealed {
        leaf_hash: leaf_hash(leaf.as_bytes()),
        leaf,
        fields,
    }
}

fn take_string(leaf: &mut Map<String, Value>, key: &str) -> Result<String, EntryError> {
    match leaf.remove(key) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(EntryError::Malformed(format!("`{key}` is not a string"))),
        None => Err(EntryError::Malformed(format!("`{key}` is missing"))),
    }
}

fn is_lower_hex(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a leaf and the fields opened beside it: the leaf is canonical JSON of the
/// expected shape, and every given field matches its commitment. Fields the leaf commits
/// to but that are not given are shredded, which is allowed.
pub fn check(leaf: &str, fields: &[SealedField]) -> Result<ParsedLeaf, EntryError> {
    let parsed: Value =
        serde_json::from_str(leaf).map_err(|e| EntryError::Malformed(format!("not JSON: {e}")))?;
    if to_canonical(&parsed) != leaf {
        return Err(EntryError::NotCanonical);
    }
    let Value::Object(mut members) = parsed else {
        return Err(EntryError::Malformed("not a JSON object".into()));
    };
    match members.remove("v") {
        Some(Value::Number(version)) if version.as_u64() == Some(LEAF_VERSION) => {}
        Some(other) => {
            return Err(EntryError::Malformed(format!(
                "unknown leaf version {other}"
            )));
        }
        None => return Err(EntryError::Malformed("`v` is missing".into())),
    }
    let tenant = take_string(&mut members, "tenant")?;
    let session = match members.remove("session") {
        Some(Value::String(session)) => Some(session),
        Some(Value::Null) => None,
        Some(_) => {
            return Err(EntryError::Malformed(
                "`session` is neither a string nor null".into(),
            ));
        }
        None => return Err(EntryError::Malformed("`session` is missing".into())),
    };
    let kind = take_string(&mut members, "kind")?;
    let actor = take_string(&mut members, "actor")?;
    let at = take_string(&mut members, "at")?;
    let commitments = match members.remove("fields") {
        Some(Value::Object(commitments)) => commitments,
        Some(_) => return Err(EntryError::Malformed("`fields` is not an object".into())),
        None => return Err(EntryError::Malformed("`fields` is missing".into())),
    };
    if let Some(extra) = members.keys().next() {
        return Err(EntryError::Malformed(format!("unknown member `{extra}`")));
    }
    let mut committed: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in commitments {
        let well_formed = value.as_str().and_then(|text| {
            text.strip_prefix(COMMITMENT_PREFIX)
                .filter(|digest| is_lower_hex(digest, 64))
                .map(|_| text.to_owned())
        });
        let Some(text) = well_formed else {
            return Err(EntryError::Malformed(format!(
                "the commitment of field `{name}` is not `sha256:` and 64 hex digits"
            )));
        };
        committed.insert(name, text);
    }
    let mut opened: BTreeSet<&str> = BTreeSet::new();
    for field in fields {
        let Some(expected) = committed.get(&field.name) else {
            return Err(EntryError::UnknownField(field.name.clone()));
        };
        if !opened.insert(&field.name) {
            return Err(EntryError::DuplicateField(field.name.clone()));
        }
        if !is_lower_hex(&field.salt, 32) {
            return Err(EntryError::BadSalt(field.name.clone()));
        }
        let salt = hex::decode(&field.salt).map_err(|_| EntryError::BadSalt(field.name.clone()))?;
        let canonical_value = serde_json::from_str::<Value>(&field.value)
            .ok()
            .map(|value| to_canonical(&value));
        if canonical_value.as_deref() != Some(field.value.as_str()) {
            return Err(EntryError::BadValue(field.name.clone()));
        }
        if &commitment(&salt, &field.value) != expected {
            return Err(EntryError::Mismatch(field.name.clone()));
        }
    }
    Ok(ParsedLeaf {
        tenant,
        session,
        kind,
        actor,
        at,
        field_names: committed.into_keys().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn draft() -> Draft {
        Draft {
            tenant: "ten_1".into(),
            session: Some("ses_1".into()),
            kind: "exec".into(),
            actor: "usr_1".into(),
            at: "2026-11-28T11:00:00.000001Z".into(),
            fields: BTreeMap::from([
                ("argv".to_owned(), json!(["ls", "-l"])),
                ("exit_code".to_owned(), json!(0)),
                ("note".to_owned(), json!({"b": 1, "a": "x\n"})),
            ]),
        }
    }

    fn counter() -> impl FnMut() -> [u8; 16] {
        let mut next = 0u8;
        move || {
            next += 1;
            [next; 16]
        }
    }

    #[test]
    fn seals_to_the_documented_leaf() {
        let sealed = seal(&draft(), counter());
        let salt_1 = [1u8; 16];
        let mut expected = Sha256::new();
        expected.update(salt_1);
        expected.update(br#"["ls","-l"]"#);
        let argv = format!("sha256:{}", hex::encode(expected.finalize()));
        assert!(sealed.leaf.starts_with(&format!(
            r#"{{"actor":"usr_1","at":"2026-11-28T11:00:00.000001Z","fields":{{"argv":"{argv}","exit_code":"sha256:"#
        )));
        assert!(
            sealed
                .leaf
                .ends_with(r#""},"kind":"exec","session":"ses_1","tenant":"ten_1","v":1}"#),
            "{}",
            sealed.leaf
        );
        assert_eq!(sealed.leaf_hash, leaf_hash(sealed.leaf.as_bytes()));
        let names: Vec<&str> = sealed.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["argv", "exit_code", "note"]);
        assert_eq!(sealed.fields[0].salt, "01".repeat(16));
        assert_eq!(sealed.fields[2].value, r#"{"a":"x\n","b":1}"#);
    }

    #[test]
    fn checks_opened_and_shredded_fields() {
        let sealed = seal(&draft(), counter());
        let parsed = check(&sealed.leaf, &sealed.fields).unwrap();
        assert_eq!(
            parsed,
            ParsedLeaf {
                tenant: "ten_1".into(),
                session: Some("ses_1".into()),
                kind: "exec".into(),
                actor: "usr_1".into(),
                at: "2026-11-28T11:00:00.000001Z".into(),
                field_names: vec!["argv".into(), "exit_code".into(), "note".into()],
            }
        );
        // Shredding any subset keeps the entry valid.
        assert!(check(&sealed.leaf, &sealed.fields[1..2]).is_ok());
        assert!(check(&sealed.leaf, &[]).is_ok());
        // A tenant-level entry has a null session.
        let tenant_level = seal(
            &Draft {
                session: None,
                ..draft()
            },
            counter(),
        );
        assert!(tenant_level.leaf.contains(r#""session":null"#));
        assert_eq!(check(&tenant_level.leaf, &[]).unwrap().session, None);
    }

    #[test]
    fn refuses_altered_fields() {
        let sealed = seal(&draft(), counter());
        let with = |change: &dyn Fn(&mut SealedField)| {
            let mut fields = sealed.fields.clone();
            change(&mut fields[1]);
            check(&sealed.leaf, &fields)
        };
        assert_eq!(
            with(&|f| f.value = "1".into()),
            Err(EntryError::Mismatch("exit_code".into()))
        );
        assert_eq!(
            with(&|f| f.salt = "03".repeat(16)),
            Err(EntryError::Mismatch("exit_code".into()))
        );
        assert_eq!(
            with(&|f| f.salt = "0A".repeat(16)),
            Err(EntryError::BadSalt("exit_code".into()))
        );
        assert_eq!(
            with(&|f| f.value = " 0".into()),
            Err(EntryError::BadValue("exit_code".into()))
        );
        assert_eq!(
            with(&|f| f.name = "argv".into()),
            Err(EntryError::DuplicateField("argv".into()))
        );
        assert_eq!(
            with(&|f| f.name = "exit".into()),
            Err(EntryError::UnknownField("exit".into()))
        );
    }

    #[test]
    fn refuses_altered_or_reencoded_leaves() {
        let sealed = seal(&draft(), counter());
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(&sealed.leaf).unwrap())
                .unwrap();
        assert_eq!(check(&pretty, &[]), Err(EntryError::NotCanonical));
        let duplicated = sealed.leaf.replacen(r#""v":1"#, r#""v":1,"v":1"#, 1);
        assert_eq!(check(&duplicated, &[]), Err(EntryError::NotCanonical));
        for (leaf, why) in [
            (sealed.leaf.replace(r#""v":1"#, r#""v":2"#), "version"),
            (
                sealed.leaf.replace(r#""v":1"#, r#""v":1,"w":1"#),
                "unknown member",
            ),
            (sealed.leaf.replace(r#""kind":"exec","#, ""), "missing"),
            (
                sealed
                    .leaf
                    .replace(r#""session":"ses_1""#, r#""session":1"#),
                "session",
            ),
            ("[]".to_owned(), "object"),
        ] {
            assert!(
                matches!(check(&leaf, &[]), Err(EntryError::Malformed(m)) if m.contains(why)),
                "{leaf}"
            );
        }
    }
}
