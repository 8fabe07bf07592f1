use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::selector::NodeSelector;
use crate::taskbook::TaskBookRef;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    pub event: EventMatch,
    #[serde(default)]
    pub condition: TriggerCondition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Duration>,
    pub run: TriggerRun,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventMatch {
    #[serde(rename = "type")]
    pub event_type: String,
    /// Fields of the event's data that must be equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

/// Fire when `count` matching events arrived within `within`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerCondition {
    #[serde(default = "one")]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within: Option<Duration>,
}

fn one() -> u32 {
    1
}

impl Default for TriggerCondition {
    fn default() -> Self {
        TriggerCondition {
            count: 1,
            within: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerRun {
    pub taskbook: TaskBookRef,
    #[serde(default)]
    pub on: TriggerTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeSelector>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerTarget {
    /// The node the event came from.
    #[default]
    EventNode,
    /// The nodes named by `run.nodes`.
    Nodes,
}
