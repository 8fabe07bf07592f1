//! The Beacons this node runs: each checks at its interval and reports to the master
//! only when its check fires or clears, never every interval. The master sends the
//! whole set on each session and on every change; a beacon whose definition did not
//! change keeps running, with its state, so a reconnect does not fire it again.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;
use weft_proto::vpnapi::BeaconEvent;
use weft_taskbook::objects::BeaconAssignment;

use crate::beacon_checks::Probe;

/// Checks never run more often than this, whatever the Beacon says.
pub const MIN_BEACON_INTERVAL: Duration = Duration::from_secs(1);
/// A command or HTTP check gives up after its interval, and after this at the most.
const MAX_CHECK_TIME: Duration = Duration::from_secs(30);

type BeaconKey = (String, String);

/// Where a beacon's transitions go (the session's outbox).
pub type Report = std::sync::Arc<dyn Fn(BeaconEvent) + Send + Sync>;

pub struct BeaconRunner {
    running: HashMap<BeaconKey, (BeaconAssignment, JoinHandle<()>)>,
    report: Report,
}

impl BeaconRunner {
    pub fn new(report: Report) -> Self {
        BeaconRunner {
            running: HashMap::new(),
            report,
        }
    }

    /// Runs exactly `assignments`: new and changed beacons start, gone ones stop.
    pub fn apply(&mut self, assignments: Vec<BeaconAssignment>) {
        let mut wanted: HashMap<BeaconKey, BeaconAssignment> = assignments
            .into_iter()
            .map(|a| ((a.namespace.clone(), a.name.clone()), a))
            .collect();
        self.running.retain(|key, (running, task)| {
            let same = wanted.get(key) == Some(running);
            if same {
                wanted.remove(key);
            } else {
                task.abort();
            }
            same
        });
        for (key, assignment) in wanted {
            tracing::info!(beacon = %format!("{}/{}", key.0, key.1), interval = ?assignment.interval.0, "beacon runs");
            let task = tokio::spawn(run_beacon(assignment.clone(), self.report.clone()));
            self.running.insert(key, (assignment, task));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

impl Drop for BeaconRunner {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

async fn run_beacon(assignment: BeaconAssignment, report: Report) {
    let interval = assignment.interval.0.max(MIN_BEACON_INTERVAL);
    let mut probe = Some(Probe::new(
        assignment.check.clone(),
        interval.min(MAX_CHECK_TIME),
    ));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A check starts out as "all is well": one that fires at once is news.
    let mut fired = false;
    loop {
        ticks.tick().await;
        let Some(mut current) = probe.take() else {
            return;
        };
        // Checks read files, run commands and wait on sockets: off the async threads.
        let observed = tokio::task::spawn_blocking(move || {
            let observation = current.observe();
            (current, observation)
        })
        .await;
        let Ok((current, observation)) = observed else {
            return;
        };
        probe = Some(current);
        if observation.fired == fired {
            continue;
        }
        fired = observation.fired;
        tracing::info!(beacon = %format!("{}/{}", assignment.namespace, assignment.name), fired, data = %serde_json::Value::Object(observation.data.clone()), "beacon changed state");
        report(BeaconEvent {
            namespace: assignment.namespace.clone(),
            beacon: assignment.name.clone(),
            fired,
            data_json: Value::Object(observation.data).to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use weft_taskbook::duration::Duration as SpecDuration;
    use weft_taskbook::objects::BeaconCheck;

    fn beacon(name: &str, cmd: &str) -> BeaconAssignment {
        BeaconAssignment {
            namespace: "prod".into(),
            name: name.into(),
            interval: SpecDuration(Duration::from_secs(1)),
            check: BeaconCheck::Command { cmd: cmd.into() },
            event: "probe.failed".into(),
        }
    }

    #[tokio::test]
    async fn a_beacon_reports_transitions_only_and_survives_an_unchanged_resend() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("broken");
        let reported = Arc::new(Mutex::new(Vec::new()));
        let sink = reported.clone();
        let mut runner = BeaconRunner::new(Arc::new(move |event: BeaconEvent| {
            sink.lock().unwrap().push(event.fired);
        }));
        let check = format!("test ! -e {}", flag.display());
        runner.apply(vec![beacon("flag", &check)]);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        std::fs::write(&flag, "").unwrap();
        // The same set again (a reconnect): the beacon keeps its state.
        runner.apply(vec![beacon("flag", &check)]);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        std::fs::remove_file(&flag).unwrap();
        tokio::time::sleep(Duration::from_millis(2000)).await;
        assert_eq!(*reported.lock().unwrap(), [true, false]);
        runner.apply(Vec::new());
        assert!(runner.is_empty());
    }
}
