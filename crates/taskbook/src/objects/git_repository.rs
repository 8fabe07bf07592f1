use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::objects::SecretKeyRef;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitRepositorySpec {
    /// `file://`, `https://` or `ssh://` (with `ssh_key`).
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SecretKeyRef>,
    /// TaskBooks in the repository to run when a new commit lands.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_push: Vec<OnPush>,
}

fn default_branch() -> String {
    "main".to_string()
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnPush {
    pub path: String,
}
