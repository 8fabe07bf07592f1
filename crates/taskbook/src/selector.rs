//! Which nodes something applies to: `{group: web}`, `{selector: {role: web}}`,
//! `{names: [a, b]}` or `{all: true}`. Given conditions are AND-ed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSelector {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

impl NodeSelector {
    /// Whether a node matches the name and label conditions (a group is resolved by
    /// the caller, who knows the NodeGroups).
    pub fn matches(&self, node_name: &str, node_labels: &BTreeMap<String, String>) -> bool {
        let by_name = self.names.is_empty() || self.names.iter().any(|n| n == node_name);
        let by_labels = self
            .selector
            .iter()
            .all(|(key, value)| node_labels.get(key) == Some(value));
        by_name && by_labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_are_anded() {
        let selector = NodeSelector {
            selector: [("role".to_string(), "web".to_string())].into(),
            names: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        let web = [("role".to_string(), "web".to_string())].into();
        assert!(selector.matches("a", &web));
        assert!(!selector.matches("c", &web));
        assert!(!selector.matches("a", &BTreeMap::new()));
    }
}
