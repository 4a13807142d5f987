//! TLS for credential injection: the deployment's egress CA (generated once, its key
//! sealed under the master key), leaf certificates minted per host for the sandbox side,
//! and the verifying client config for the upstream side.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::secrets::MasterKey;

/// The name the sealed CA is stored under (`Store::deployment_value_or_insert`).
pub const CA_STORE_NAME: &str = "egress-ca/v1";
const CA_SEAL_CONTEXT: &str = "cordon/egress-ca/v1";
/// Leaf certificates kept per gateway before the cache is cleared.
const LEAF_CACHE_LIMIT: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("stored egress CA is unreadable: {0}")]
    Stored(String),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("{0}")]
    Secret(#[from] crate::secrets::SecretError),
}

/// The CA as stored: certificate in PEM, private key sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredCa {
    common_name: String,
    cert_pem: String,
    sealed_key_hex: String,
}

/// A freshly generated CA, serialized for the store (its key sealed under `master`).
pub fn generate_ca(master: &MasterKey) -> Result<Vec<u8>, TlsError> {
    let key = KeyPair::generate()?;
    let serial: u64 = rand_u64()?;
    let common_name = format!("Cordon egress CA {serial:016x}");
    let params = ca_params(&common_name);
    let cert = params.self_signed(&key)?;
    let stored = StoredCa {
        common_name,
        cert_pem: cert.pem(),
        sealed_key_hex: hex::encode(master.seal(CA_SEAL_CONTEXT, key.serialize_pem().as_bytes())?),
    };
    serde_json::to_vec(&stored).map_err(|e| TlsError::Stored(e.to_string()))
}

fn rand_u64() -> Result<u64, TlsError> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TlsError::Stored("random number generator failed".into()))?;
    Ok(u64::from_le_bytes(bytes))
}

fn ca_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name.push(DnType::OrganizationName, "Cordon");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    params
}

/// The egress CA, loaded: mints leaf certificates for hosts the gateway intercepts.
pub struct EgressCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<HashMap<String, Arc<rustls::ServerConfig>>>,
}

impl std::fmt::Debug for EgressCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressCa").finish_non_exhaustive()
    }
}

impl EgressCa {
    /// Loads the CA stored by [`generate_ca`].
    pub fn load(stored: &[u8], master: &MasterKey) -> Result<Self, TlsError> {
        let stored: StoredCa =
            serde_json::from_slice(stored).map_err(|e| TlsError::Stored(e.to_string()))?;
        let sealed =
            hex::decode(&stored.sealed_key_hex).map_err(|e| TlsError::Stored(e.to_string()))?;
        let key_pem = master.open(CA_SEAL_CONTEXT, &sealed)?;
        let key_pem = String::from_utf8(key_pem).map_err(|e| TlsError::Stored(e.to_string()))?;
        let key = KeyPair::from_pem(&key_pem)?;
        let cert_der = pem_certificates(&stored.cert_pem)
            .into_iter()
            .next()
            .ok_or_else(|| TlsError::Stored("no certificate in the stored CA".into()))?;
        Ok(Self {
            issuer: Issuer::new(ca_params(&stored.common_name), key),
            cert_pem: stored.cert_pem,
            cert_der,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate in PEM: what sandboxes trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server config presenting a certificate for `host`, minted once and cached.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        if let Some(config) = self.lock_leaves().get(host) {
            return Ok(Arc::clone(config));
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(30);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let chain = vec![cert.der().clone(), self.cert_der.clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let mut leaves = self.lock_leaves();
        if leaves.len() >= LEAF_CACHE_LIMIT {
            leaves.clear();
        }
        leaves.insert(host.to_owned(), Arc::clone(&config));
        Ok(config)
    }

    fn lock_leaves(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<rustls::ServerConfig>>> {
        self.leaves
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM text.
pub fn pem_certificates(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// The client config for upstream connections: the Mozilla roots (webpki-roots) plus any
/// extra roots the deployment configures (tests pass their own CA this way).
pub fn upstream_client_config(
    extra_roots_pem: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_roots_pem {
        let certs = pem_certificates(pem);
        if certs.is_empty() {
            return Err(TlsError::Stored(
                "the extra upstream roots hold no certificate".into(),
            ));
        }
        for cert in certs {
            roots.add(cert)?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_round_trips_through_its_sealed_form_and_mints_leaves() {
        let master = MasterKey::from_bytes(&[1; 32]).unwrap();
        let stored = generate_ca(&master).unwrap();
        let text = String::from_utf8(stored.clone()).unwrap();
        assert!(!text.contains("PRIVATE KEY"));
        let ca = EgressCa::load(&stored, &master).unwrap();
        assert!(ca.cert_pem().contains("BEGIN CERTIFICATE"));
        let first = ca.server_config("api.example.com").unwrap();
        let again = ca.server_config("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let wrong = MasterKey::from_bytes(&[2; 32]).unwrap();
        assert!(EgressCa::load(&stored, &wrong).is_err());
    }
}
