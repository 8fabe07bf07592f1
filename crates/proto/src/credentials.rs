//! What a client needs to reach the master: where it is, the cluster CA to trust, and
//! its own certificate and key. The admin's file (`admin.yaml`) and a node's identity
//! both hold one.

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCredentials {
    /// `host:port`, tried in order.
    pub master_endpoints: Vec<String>,
    pub ca_cert_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Never prints the key.
impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("master_endpoints", &self.master_endpoints)
            .finish_non_exhaustive()
    }
}
