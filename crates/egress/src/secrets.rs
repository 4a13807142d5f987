//! Secrets at rest: sealed with ChaCha20-Poly1305 under the deployment's master key, each
//! bound (as associated data) to what it belongs to, so a sealed value copied onto another
//! record does not open.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// The environment variable that carries the master key (64 hex digits) instead of the
/// key file.
pub const MASTER_KEY_ENV: &str = "CORDON_MASTER_KEY";
/// The key file's name under the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("master key: {0}")]
    MasterKey(String),
    #[error(
        "the sealed value does not open under this master key (wrong key, or the value was moved or altered)"
    )]
    Open,
    #[error("random number generator failed")]
    Random,
}

/// The 256-bit key every secret and the egress CA's private key are sealed under.
pub struct MasterKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, SecretError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes)
            .map_err(|_| SecretError::MasterKey("not a valid key".into()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }

    /// Parses 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, SecretError> {
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| SecretError::MasterKey("expected 64 hex digits".into()))?;
        Self::from_bytes(&bytes)
    }

    /// The key from `CORDON_MASTER_KEY` if set, else from `<data_dir>/master.key`,
    /// generated (mode 0600) on first start. A key file readable by group or others is
    /// refused.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SecretError> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return Self::from_hex(&text);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match fs::metadata(&path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(SecretError::MasterKey(format!(
                        "{} is readable by others (mode {:o}); chmod 600 it",
                        path.display(),
                        meta.permissions().mode() & 0o777
                    )));
                }
                let text = fs::read_to_string(&path)
                    .map_err(|e| SecretError::MasterKey(format!("read {}: {e}", path.display())))?;
                Self::from_hex(&text)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| SecretError::Random)?;
                let write = || -> std::io::Result<()> {
                    // create_new: two processes racing cannot both write a key.
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path)?;
                    file.write_all(format!("{}\n", hex::encode(bytes)).as_bytes())?;
                    file.sync_all()?;
                    fs::File::open(data_dir)?.sync_all()
                };
                match write() {
                    Ok(()) => Self::from_bytes(&bytes),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(data_dir)
                    }
                    Err(e) => Err(SecretError::MasterKey(format!(
                        "create {}: {e}",
                        path.display()
                    ))),
                }
            }
            Err(e) => Err(SecretError::MasterKey(format!(
                "stat {}: {e}",
                path.display()
            ))),
        }
    }

    /// Seals `plaintext`: a random nonce followed by the ciphertext and tag.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| SecretError::Random)?;
        let mut sealed = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| SecretError::Open)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`MasterKey::seal`] sealed with the same `context`.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::Open);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Open)?;
        let mut buffer = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buffer)
            .map_err(|_| SecretError::Open)?;
        Ok(plain.to_vec())
    }
}

/// The associated data a secret's value is sealed with.
pub fn secret_context(tenant: &str, secret: &str) -> String {
    format!("cordon/secret/v1/{tenant}/{secret}")
}

/// Fills an injection format (`Bearer {secret}`) with the value.
pub fn render_header(format: &str, value: &str) -> String {
    format.replace("{secret}", value)
}

/// Checks an injection rule: a header name that is a valid token and not one the gateway
/// owns or that frames the message, and a format with exactly one `{secret}`.
pub fn validate_injection(header_name: &str, format: &str) -> Result<(), String> {
    let name = header_name.to_ascii_lowercase();
    let token = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!(
            "header name `{header_name}` is not a valid HTTP header name"
        ));
    }
    const RESERVED: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "proxy-authorization",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
    ];
    if RESERVED.contains(&name.as_str()) || name.starts_with("x-cordon-") {
        return Err(format!("header `{header_name}` cannot carry a secret"));
    }
    if format.matches("{secret}").count() != 1 {
        return Err("the format must contain `{secret}` exactly once".into());
    }
    if format.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err("the format must not contain line breaks".into());
    }
    Ok(())
}

/// Whether a secret value can go into a header: visible ASCII and spaces, no line breaks.
pub fn valid_secret_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 8192
        && value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_context() {
        let key = MasterKey::from_bytes(&[7; 32]).unwrap();
        let sealed = key.seal("a", b"hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("a", &sealed).unwrap(), b"hunter2");
        assert!(key.open("b", &sealed).is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(key.open("a", &flipped).is_err());
        let other = MasterKey::from_bytes(&[8; 32]).unwrap();
        assert!(other.open("a", &sealed).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load_or_create(dir.path()).unwrap();
        let sealed = first.seal("x", b"v").unwrap();
        let mode = fs::metadata(dir.path().join(MASTER_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(second.open("x", &sealed).unwrap(), b"v");
        fs::set_permissions(
            dir.path().join(MASTER_KEY_FILE),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        assert!(MasterKey::load_or_create(dir.path()).is_err());
    }

    #[test]
    fn injection_rules_are_checked() {
        assert!(validate_injection("Authorization", "Bearer {secret}").is_ok());
        assert!(validate_injection("X-Api-Key", "{secret}").is_ok());
        assert!(validate_injection("Host", "{secret}").is_err());
        assert!(validate_injection("x-cordon-reason", "{secret}").is_err());
        assert!(validate_injection("Bad Name", "{secret}").is_err());
        assert!(validate_injection("a", "no placeholder").is_err());
        assert!(validate_injection("a", "{secret}\r\nX: y").is_err());
        assert!(!valid_secret_value("a\nb"));
        assert!(valid_secret_value("sk-123"));
    }
}
