use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::vars::Vars;

/// A node as registered by Join; labels live in its metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_vpn_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_public_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_vpn_pub_key: Option<String>,
    /// Variables for this node alone ("node vars" in the precedence order).
    #[serde(default, skip_serializing_if = "Vars::is_empty")]
    pub vars: Vars,
}

/// Nodes by label selector (AND-ed) and/or by explicit name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeGroupSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vars::is_empty")]
    pub vars: Vars,
}

impl NodeGroupSpec {
    /// A group's members: its label selector's matches plus its named nodes.
    pub fn contains(&self, node_name: &str, node_labels: &BTreeMap<String, String>) -> bool {
        self.nodes.iter().any(|name| name == node_name)
            || (!self.selector.is_empty()
                && self
                    .selector
                    .iter()
                    .all(|(key, value)| node_labels.get(key) == Some(value)))
    }
}
