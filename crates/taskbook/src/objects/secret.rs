use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Secret values; read in tasks as `secrets.NAME.KEY`. Debug output never shows them.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.data.keys().map(|k| (k, "********")))
            .finish()
    }
}

/// One key of one Secret, where a spec needs a secret value (webhook HMAC, ssh key).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    pub secret: String,
    pub key: String,
}
