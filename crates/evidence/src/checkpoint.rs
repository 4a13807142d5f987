//! Signed checkpoints: a C2SP `tlog-checkpoint` body (origin, tree size, base64 root
//! hash, optional extension lines) inside a C2SP `signed-note`, signed with ed25519.
//!
//! ```text
//! cordon.example/evidence/ten_0190...
//! 42
//! 8Rr7m3+...=
//!
//! — cordon.example/evidence AAAAAbase64(key id || signature)
//! ```
//!
//! The key id is the first four bytes of SHA-256(key name || "\n" || 0x01 || public
//! key), 0x01 naming ed25519, so a verifier picks its line by name and key id and
//! ignores signatures of keys it does not know.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// The signature algorithm byte of ed25519 in signed notes.
const ED25519_ALGORITHM: u8 = 0x01;
/// Starts every signature line: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    #[error("no signature by key `{0}` with this key id")]
    NotSigned(String),
    #[error(
        "the signature by `{0}` does not verify: the checkpoint was altered or signed by another key"
    )]
    BadSignature(String),
    #[error("key: {0}")]
    Key(String),
}

fn malformed(what: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed(what.into())
}

/// A tree head at one size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Names the log, e.g. `cordon.example/evidence/<tenant id>`; one line, not empty.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// Extra lines after the root (for example the time), each non-empty.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note body: origin, size, root, extensions, each ending in a newline.
    pub fn body(&self) -> Result<String, CheckpointError> {
        let line_ok = |line: &str| !line.is_empty() && !line.contains('\n');
        if !line_ok(&self.origin) || !self.extensions.iter().all(|e| line_ok(e)) {
            return Err(malformed(
                "origin and extension lines must be single, non-empty lines",
            ));
        }
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for line in &self.extensions {
            body.push_str(line);
            body.push('\n');
        }
        Ok(body)
    }

    /// Parses a note body.
    pub fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
        let text = body
            .strip_suffix('\n')
            .ok_or_else(|| malformed("the body must end with a newline"))?;
        let mut lines = text.split('\n');
        let origin = lines
            .next()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| malformed("no origin line"))?;
        let size_line = lines.next().ok_or_else(|| malformed("no tree size line"))?;
        let canonical = !size_line.is_empty()
            && size_line.bytes().all(|b| b.is_ascii_digit())
            && (size_line == "0" || !size_line.starts_with('0'));
        let size = size_line
            .parse::<u64>()
            .ok()
            .filter(|_| canonical)
            .ok_or_else(|| {
                malformed("the tree size must be a decimal number without leading zeros")
            })?;
        let root_line = lines.next().ok_or_else(|| malformed("no root hash line"))?;
        let root: Hash = STANDARD
            .decode(root_line)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| malformed("the root hash must be 32 bytes in base64"))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(malformed("empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }
}

fn key_id(name: &str, public_key: &[u8]) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update(b"\n");
    hasher.update([ED25519_ALGORITHM]);
    hasher.update(public_key);
    let digest: [u8; 32] = hasher.finalize().into();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    let valid = !name.is_empty() && !name.contains('+') && !name.chars().any(char::is_whitespace);
    if valid {
        Ok(())
    } else {
        Err(CheckpointError::Key(format!(
            "key name `{name}` must be non-empty, without spaces or `+`"
        )))
    }
}

/// Signs checkpoints with a deployment key.
pub struct Signer {
    name: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh key pair; returns the signer and its PKCS#8 document (to seal and store).
    pub fn generate(name: &str) -> Result<(Signer, Vec<u8>), CheckpointError> {
        check_key_name(name)?;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| CheckpointError::Key("random number generator failed".into()))?;
        let signer = Signer::from_pkcs8(name, pkcs8.as_ref())?;
        Ok((signer, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Signer, CheckpointError> {
        check_key_name(name)?;
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| CheckpointError::Key(format!("not an ed25519 PKCS#8 key: {e}")))?;
        Ok(Signer {
            name: name.to_owned(),
            key,
        })
    }

    /// The public half, for verifiers.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            public_key: self.key.public_key().as_ref().to_vec(),
        }
    }

    /// A bare ed25519 signature over `message`, for the DSSE envelopes of releases.
    ///
    /// The key also signs checkpoint bodies. The two cannot be taken for each other: a
    /// note body has at least three newline-terminated lines, while the DSSE messages
    /// we sign and accept (`crate::dsse`) hold only canonical JSON, which has no newline.
    pub fn sign_bytes(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).as_ref().to_vec()
    }

    /// The signed note: the body, a blank line, and this key's signature line.
    pub fn sign(&self, checkpoint: &Checkpoint) -> Result<String, CheckpointError> {
        let body = checkpoint.body()?;
        let signature = self.key.sign(body.as_bytes());
        let mut blob = key_id(&self.name, self.key.public_key().as_ref()).to_vec();
        blob.extend_from_slice(signature.as_ref());
        Ok(format!(
            "{body}\n{SIGNATURE_PREFIX}{} {}\n",
            self.name,
            STANDARD.encode(blob)
        ))
    }
}

/// Verifies signed checkpoints offline with a public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub name: String,
    pub public_key: Vec<u8>,
}

impl Verifier {
    /// The verifier key in the text form of signed notes: `name+keyid+base64(0x01 || key)`.
    pub fn to_text(&self) -> String {
        let id = key_id(&self.name, &self.public_key);
        let mut key = vec![ED25519_ALGORITHM];
        key.extend_from_slice(&self.public_key);
        format!(
            "{}+{}+{}",
            self.name,
            id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            STANDARD.encode(key)
        )
    }

    /// The key id in hex (8 digits), as in [`Verifier::to_text`].
    pub fn key_id(&self) -> String {
        hex::encode(key_id(&self.name, &self.public_key))
    }

    /// Whether `signature` is this key's ed25519 signature over `message`.
    pub fn verify_bytes(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.public_key)
            .verify(message, signature)
            .is_ok()
    }

    /// Parses [`Verifier::to_text`]'s form, checking that the key id matches.
    pub fn from_text(text: &str) -> Result<Verifier, CheckpointError> {
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CheckpointError::Key("expected name+keyid+key".into()));
        };
        check_key_name(name)?;
        let key = STANDARD
            .decode(key)
            .map_err(|_| CheckpointError::Key("the key is not base64".into()))?;
        let Some((&ED25519_ALGORITHM, public_key)) = key.split_first() else {
            return Err(CheckpointError::Key("not an ed25519 key".into()));
        };
        if public_key.len() != 32 {
            return Err(CheckpointError::Key("an ed25519 key has 32 bytes".into()));
        }
        let verifier = Verifier {
            name: name.to_owned(),
            public_key: public_key.to_vec(),
        };
        let expected: String = key_id(name, public_key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if id != expected {
            return Err(CheckpointError::Key(
                "the key id does not match the key".into(),
            ));
        }
        Ok(verifier)
    }

    /// Checks a signed note and returns its checkpoint. Signature lines of other keys
    /// are ignored; one valid line of this key is required.
    pub fn verify(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        let (body, signatures) = note
            .split_once("\n\n")
            .ok_or_else(|| malformed("no blank line before the signatures"))?;
        let body = format!("{body}\n");
        let signatures = signatures
            .strip_suffix('\n')
            .ok_or_else(|| malformed("the note must end with a newline"))?;
        let id = key_id(&self.name, &self.public_key);
        let mut found = false;
        for line in signatures.split('\n') {
            let rest = line
                .strip_prefix(SIGNATURE_PREFIX)
                .ok_or_else(|| malformed("a signature line must start with an em dash"))?;
            let (name, blob) = rest
                .split_once(' ')
                .ok_or_else(|| malformed("a signature line needs a key name and a signature"))?;
            let blob = STANDARD
                .decode(blob)
                .map_err(|_| malformed("a signature is not base64"))?;
            if name != self.name || blob.len() < 4 || blob[..4] != id {
                continue;
            }
            found = true;
            UnparsedPublicKey::new(&ED25519, &self.public_key)
                .verify(body.as_bytes(), &blob[4..])
                .map_err(|_| CheckpointError::BadSignature(self.name.clone()))?;
        }
        if !found {
            return Err(CheckpointError::NotSigned(self.name.clone()));
        }
        Checkpoint::parse_body(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, root};

    fn checkpoint() -> Checkpoint {
        let leaves: Vec<Hash> = (0u8..5).map(|i| leaf_hash(&[i])).collect();
        Checkpoint {
            origin: "cordon.test/evidence/ten_1".into(),
            size: 5,
            root: root(&leaves),
            extensions: vec!["time 2026-11-28T11:00:00Z".into()],
        }
    }

    #[test]
    fn signs_verifies_and_round_trips_the_key() {
        let (signer, pkcs8) = Signer::generate("cordon.test/evidence").unwrap();
        let note = signer.sign(&checkpoint()).unwrap();
        assert!(
            note.contains("\n\n\u{2014} cordon.test/evidence "),
            "{note}"
        );
        let verifier = Verifier::from_text(&signer.verifier().to_text()).unwrap();
        assert_eq!(verifier.verify(&note).unwrap(), checkpoint());
        // The same key loaded again signs verifiably.
        let again = Signer::from_pkcs8("cordon.test/evidence", &pkcs8).unwrap();
        assert_eq!(
            verifier
                .verify(&again.sign(&checkpoint()).unwrap())
                .unwrap(),
            checkpoint()
        );
    }

    #[test]
    fn any_flipped_byte_fails() {
        let (signer, _) = Signer::generate("cordon.test/evidence").unwrap();
        let verifier = signer.verifier();
        let note = signer.sign(&checkpoint()).unwrap();
        let bytes = note.as_bytes();
        for i in 0..bytes.len() {
            let mut altered = bytes.to_vec();
            altered[i] ^= 0x01;
            let Ok(text) = String::from_utf8(altered) else {
                continue;
            };
            assert!(
                verifier.verify(&text).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn other_keys_are_refused_and_other_lines_ignored() {
        let (signer, _) = Signer::generate("cordon.test/evidence").unwrap();
        let (other, _) = Signer::generate("cordon.test/evidence").unwrap();
        let note = signer.sign(&checkpoint()).unwrap();
        assert_eq!(
            other.verifier().verify(&note),
            Err(CheckpointError::NotSigned("cordon.test/evidence".into()))
        );
        // A second signature line by another key does not disturb the first.
        let (witness, _) = Signer::generate("witness.test").unwrap();
        let cosigned = witness.sign(&checkpoint()).unwrap();
        let line = cosigned.rsplit_once("\n\n").unwrap().1;
        let both = format!("{note}{line}");
        assert_eq!(signer.verifier().verify(&both).unwrap(), checkpoint());
        assert_eq!(witness.verifier().verify(&both).unwrap(), checkpoint());
    }

    #[test]
    fn malformed_bodies_and_keys_are_refused() {
        for body in [
            "",
            "o\n5\n",
            "o\n05\nAAAA\n",
            "o\n5\nnot base64\n",
            "\n5\nAAAA\n",
            "o\n5\nAAAA",
        ] {
            assert!(Checkpoint::parse_body(body).is_err(), "{body:?}");
        }
        assert!(Signer::generate("has space").is_err());
        assert!(Verifier::from_text("name+00000000+AQ==").is_err());
        let (signer, _) = Signer::generate("k").unwrap();
        let text = signer.verifier().to_text();
        let wrong_id = text.replacen('+', "+ff", 1);
        assert!(Verifier::from_text(&wrong_id).is_err());
    }
}
