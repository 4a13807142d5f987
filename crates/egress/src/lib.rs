//! The egress gateway.
pub mod addr;
pub mod dns;
pub mod sni;
