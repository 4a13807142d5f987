//! Starting the egress runtime for `cordon serve`: the master key, the deployment's CA
//! (made once, stored sealed, shared by every node), the policy file, the gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use cordon_control::Egress;
use cordon_control::egress::{StoreEgressEnv, empty_snapshot, file_snapshot};
use cordon_egress::tls::{CA_STORE_NAME, generate_ca};
use cordon_egress::{EgressCa, EgressPolicy, Gateway, GatewayConfig, MasterKey};
use cordon_store::Store;
use sha2::{Digest, Sha256};

use crate::serve::{EgressMode, ServerConfig};

/// The egress runtime per the settings, or `None` when egress is off.
pub async fn start(
    store: &Arc<dyn Store>,
    config: &ServerConfig,
    control_plane: SocketAddr,
) -> anyhow::Result<Option<Egress>> {
    let settings = &config.egress;
    if settings.mode == EgressMode::Off {
        tracing::info!("egress is off: sandboxes have no network but their loopback");
        return Ok(None);
    }
    let master = Arc::new(
        MasterKey::load_or_create(&config.data_dir).context("cannot load the master key")?,
    );
    let fresh = generate_ca(&master).context("cannot generate the egress CA")?;
    let stored = store
        .deployment_value_or_insert(CA_STORE_NAME, &fresh)
        .await
        .context("cannot store the egress CA")?;
    let ca = EgressCa::load(&stored, &master)
        .context("cannot open the stored egress CA (is this the deployment's master key?)")?;
    let file_policy = match &settings.policy_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the egress policy {}", path.display()))?;
            let policy = EgressPolicy::from_json(&text)
                .with_context(|| format!("invalid egress policy in {}", path.display()))?;
            file_snapshot(policy, &hex::encode(Sha256::digest(text.as_bytes())))
        }
        None => empty_snapshot(),
    };
    let upstream_roots_pem = match &settings.upstream_ca {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the upstream CA {}", path.display()))?,
        ),
        None => None,
    };
    let mut resolve = std::collections::HashMap::new();
    for (host, ip) in &settings.resolve {
        resolve
            .entry(host.clone())
            .or_insert_with(Vec::new)
            .push(*ip);
    }
    let gateway_config = GatewayConfig {
        upstream_roots_pem,
        resolve,
        protected: vec![control_plane],
        ..GatewayConfig::default()
    };
    let version = file_policy.version.clone();
    let env = Arc::new(StoreEgressEnv::new(Arc::clone(store), master, file_policy));
    let gateway = Gateway::new(env.clone(), gateway_config, Arc::new(ca))
        .context("cannot start the egress gateway")?;
    tracing::info!(policy = %version, "egress gateway on");
    Ok(Some(Egress { gateway, env }))
}
