use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::selector::NodeSelector;
use crate::taskbook::TaskBookRef;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CronJobSpec {
    /// Five fields, or six/seven with seconds and years.
    pub schedule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub taskbook: TaskBookRef,
    /// Overrides the TaskBook's own node selection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<NodeSelector>,
    #[serde(default)]
    pub concurrency: ConcurrencyPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline: Option<Duration>,
    #[serde(default = "default_history")]
    pub successful_jobs_history_limit: u32,
    #[serde(default = "default_history")]
    pub failed_jobs_history_limit: u32,
    #[serde(default)]
    pub suspend: bool,
}

fn default_history() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyPolicy {
    #[default]
    Allow,
    Forbid,
    Replace,
}
