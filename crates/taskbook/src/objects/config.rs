use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::taskbook::Rollout;
use crate::vars::Vars;

/// Cluster-wide defaults for the master, minions and runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigSpec {
    /// The lowest level of variable precedence.
    #[serde(default, skip_serializing_if = "Vars::is_empty")]
    pub vars: Vars,
    /// The rollout used by steps that do not set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Replaces the masters' `--keep-jobs` and `--keep-jobs-for`, so every master of
    /// the cluster keeps the same history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_retention: Option<JobRetention>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ttl: Option<Duration>,
    /// How many events the cluster keeps (the oldest go first); default 10,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_events: Option<u32>,
    /// What a node's step may take beyond its tasks' own `timeout`s (default 1h): past
    /// it the master gives the node's step up as unreachable and the job goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_timeout: Option<Duration>,
}

/// Job history is bounded by count and by age, so it never fills a disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRetention {
    #[serde(default = "JobRetention::default_max_jobs")]
    pub max_jobs: u32,
    #[serde(default = "JobRetention::default_max_age")]
    pub max_age: Duration,
}

impl JobRetention {
    fn default_max_jobs() -> u32 {
        1000
    }
    fn default_max_age() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
}

impl Default for JobRetention {
    fn default() -> Self {
        JobRetention {
            max_jobs: Self::default_max_jobs(),
            max_age: Self::default_max_age(),
        }
    }
}
