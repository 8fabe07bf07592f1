use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::selector::NodeSelector;
use crate::vars::Vars;

/// The spec of both ClusterVariables (global, bound into namespaces) and Variables
/// (within one namespace): static values plus computed ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariablesSpec {
    /// Only for these nodes; every node when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeSelector>,
    #[serde(default, skip_serializing_if = "Vars::is_empty")]
    pub vars: Vars,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub computed: BTreeMap<String, ComputedVariable>,
}

/// A value computed from a command on a named node, or from a template over other variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputedVariable {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterVariablesBindingSpec {
    pub cluster_variables: String,
    pub namespaces: Vec<String>,
}
