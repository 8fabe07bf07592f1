use serde::{Deserialize, Serialize};

use crate::vars::Vars;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSpec {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_node: Option<String>,
    #[serde(default, skip_serializing_if = "Vars::is_empty")]
    pub data: Vars,
    /// RFC 3339.
    #[serde(default)]
    pub time: String,
}
