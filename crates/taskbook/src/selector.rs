//! Which nodes something applies to: `{group: web}`, `{selector: {role: web}}`,
//! `{names: [a, b]}`, `{facts: {os.family: debian}}` or `{all: true}`. Given
//! conditions are AND-ed; a selector with no condition at all selects every node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::objects::NodeGroupSpec;

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
    /// Fact paths (dotted, as tasks read them after `facts.`) and the value each must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
}

impl NodeSelector {
    /// Whether a node matches the name, label and fact conditions (a group is resolved
    /// by the caller, who knows the NodeGroups).
    pub fn matches(
        &self,
        node_name: &str,
        node_labels: &BTreeMap<String, String>,
        node_facts: &Value,
    ) -> bool {
        let by_name = self.names.is_empty() || self.names.iter().any(|n| n == node_name);
        let by_labels = self
            .selector
            .iter()
            .all(|(key, value)| node_labels.get(key) == Some(value));
        let by_facts = self
            .facts
            .iter()
            .all(|(path, wanted)| fact_matches(node_facts, path, wanted));
        by_name && by_labels && by_facts
    }

    /// Whether a node is selected, `group` being the NodeGroup this selector names
    /// (looked up by the caller). `all`, or no condition at all, selects every node.
    pub fn selects(
        &self,
        node_name: &str,
        node_labels: &BTreeMap<String, String>,
        node_facts: &Value,
        group: Option<&NodeGroupSpec>,
    ) -> bool {
        self.all
            || *self == NodeSelector::default()
            || (group.is_none_or(|group| group.contains(node_name, node_labels))
                && self.matches(node_name, node_labels, node_facts))
    }

    /// `--nodes a,b,role=web`: names and `key=value` labels, comma-separated.
    pub fn parse_command_line(text: &str) -> NodeSelector {
        let mut selector = NodeSelector::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some((key, value)) => {
                    selector.selector.insert(key.to_string(), value.to_string());
                }
                None => selector.names.push(part.to_string()),
            }
        }
        selector
    }
}

/// Facts compare as text, so `{facts: {cpu.count: "4"}}` and `{os.family: debian}` both read
/// naturally in YAML.
fn fact_matches(facts: &Value, path: &str, wanted: &str) -> bool {
    let found = path.split('.').try_fold(facts, |value, key| value.get(key));
    match found {
        Some(Value::String(text)) => text == wanted,
        Some(Value::Null) | None => false,
        Some(other) => other.to_string().as_str() == wanted,
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
        let none = Value::Null;
        assert!(selector.matches("a", &web, &none));
        assert!(!selector.matches("c", &web, &none));
        assert!(!selector.matches("a", &BTreeMap::new(), &none));
    }

    #[test]
    fn facts_match_by_path_as_text() {
        let selector = NodeSelector {
            facts: [
                ("os.family".to_string(), "debian".to_string()),
                ("cpu.count".to_string(), "4".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let labels = BTreeMap::new();
        let debian = serde_json::json!({"os": {"family": "debian"}, "cpu": {"count": 4}});
        let redhat = serde_json::json!({"os": {"family": "redhat"}, "cpu": {"count": 4}});
        assert!(selector.matches("a", &labels, &debian));
        assert!(!selector.matches("a", &labels, &redhat));
        assert!(!selector.matches("a", &labels, &Value::Null));
    }

    #[test]
    fn command_line_mixes_names_and_labels() {
        let selector = NodeSelector::parse_command_line("a, b,role=web");
        assert_eq!(selector.names, ["a", "b"]);
        assert_eq!(selector.selector["role"], "web");
    }
}
