//! The egress gateway: the only way out of a sandbox.
//!
//! - [`gateway::Gateway`] serves each session's listeners (a forward proxy, transparent
//!   ports 80 and 443, a DNS resolver), all created inside the sandbox's network
//!   namespace, so a connection's session is known from the socket that accepted it.
//! - [`policy`] decides by service class and rule; [`addr`] refuses non-public
//!   addresses; [`http`] reads HTTP/1.1 strictly; [`sni`] reads a ClientHello's server
//!   name; [`dns`] is the in-sandbox resolver's wire format.
//! - [`secrets`] seals secret values under the master key; [`tls`] holds the egress CA
//!   that intercepts TLS when a credential must be injected.
//!
//! Knows nothing of the store, the API or the sandbox runtime: `control` composes them.

pub mod addr;
pub mod dns;
pub mod gateway;
pub mod http;
pub mod policy;
pub mod secrets;
pub mod sni;
pub mod tls;

pub use gateway::{
    Credential, EgressEnv, Entry, Gateway, GatewayConfig, GatewayError, PROXY_PORT, PolicySnapshot,
    REASON_HEADER, SessionKey, SessionListeners, SessionView,
};
pub use policy::{EgressPolicy, PolicyError};
pub use secrets::{MasterKey, SecretError};
pub use tls::EgressCa;
