use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::selector::NodeSelector;

/// A check minions run at an interval; it emits `event` when it fires or clears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconSpec {
    #[serde(default)]
    pub nodes: NodeSelector,
    pub interval: Duration,
    pub check: BeaconCheck,
    pub event: String,
}

impl Default for BeaconSpec {
    fn default() -> Self {
        BeaconSpec {
            nodes: NodeSelector::default(),
            interval: Duration::from_secs(30),
            check: BeaconCheck::Command { cmd: String::new() },
            event: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BeaconCheck {
    DiskUsage {
        path: String,
        above_percent: f64,
    },
    Load {
        above: f64,
    },
    FileChanged {
        path: String,
    },
    Service {
        name: String,
    },
    Process {
        name: String,
    },
    Http {
        url: String,
        #[serde(default = "default_status")]
        expect_status: u16,
    },
    Command {
        cmd: String,
    },
}

fn default_status() -> u16 {
    200
}

/// A Beacon as the master hands it to a node that runs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeaconAssignment {
    pub namespace: String,
    pub name: String,
    pub interval: Duration,
    pub check: BeaconCheck,
    pub event: String,
}

/// The type of the event a beacon sends when its check clears again.
pub fn cleared_event_type(event: &str) -> String {
    format!("{event}.cleared")
}
