use serde::{Deserialize, Serialize};

/// A name separation for teams or projects. `default` and `system` always exist;
/// `system` holds cluster-wide events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}
