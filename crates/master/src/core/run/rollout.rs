//! How a step reaches its nodes: in batches (`barrier`: a batch ends before the next
//! starts; `window`: a node starts as soon as one finishes), with pauses, stopping past
//! `max_fail_percent` or when the job is cancelled. Knows nothing of stores or sessions:
//! it is given how to run and how to skip one node.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};
use weft_taskbook::rollout::plan_batches;
use weft_taskbook::taskbook::{Rollout, RolloutMode};

use crate::core::job::NodeStepState;

/// Whether `failed` of a step's `total` nodes is more than the rollout allows.
pub fn over_max_fail(rollout: &Rollout, failed: usize, total: usize) -> bool {
    rollout
        .max_fail_percent
        .is_some_and(|max| failed as f64 * 100.0 / total.max(1) as f64 > max)
}

/// Rolls a step out over `nodes`: `run_node` runs it on one and returns how it ended;
/// `skip_node` records a node that never starts (the rollout stopped, or `cancelled`
/// says so). Returns each node's final state.
pub async fn roll_out<Run, Ran>(
    nodes: &[String],
    rollout: &Rollout,
    cancelled: impl Fn() -> bool,
    skip_node: impl Fn(&str),
    run_node: Run,
) -> Vec<(String, NodeStepState)>
where
    Run: Fn(String) -> Ran,
    Ran: Future<Output = NodeStepState>,
{
    let sizes = plan_batches(nodes.len(), &rollout.batch);
    let pause = rollout.pause.map(|p| p.0).unwrap_or(Duration::ZERO);
    let failed = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let one_node = |node: String| {
        let (failed, stop, cancelled, skip_node, run_node) =
            (&failed, &stop, &cancelled, &skip_node, &run_node);
        async move {
            if stop.load(Ordering::SeqCst) || cancelled() {
                skip_node(&node);
                return (node, NodeStepState::Skipped);
            }
            let state = run_node(node.clone()).await;
            if matches!(state, NodeStepState::Failed | NodeStepState::Unreachable)
                && over_max_fail(
                    rollout,
                    failed.fetch_add(1, Ordering::SeqCst) + 1,
                    nodes.len(),
                )
            {
                stop.store(true, Ordering::SeqCst);
            }
            (node, state)
        }
    };
    match rollout.mode {
        RolloutMode::Barrier => {
            let mut outcomes = Vec::new();
            let mut rest = nodes;
            for (batch_index, size) in sizes.iter().enumerate() {
                let (batch, later) = rest.split_at(*size);
                rest = later;
                if batch_index > 0 && !pause.is_zero() && !stop.load(Ordering::SeqCst) {
                    tokio::time::sleep(pause).await;
                }
                outcomes.extend(join_all(batch.iter().cloned().map(one_node)).await);
            }
            outcomes
        }
        RolloutMode::Window => {
            // The window is the ramp's first size until that many nodes have finished,
            // then its second size, and so on: a ramp [1, 10] is a canary that must
            // finish before ten go at once.
            let width_after: Vec<usize> = sizes
                .iter()
                .flat_map(|size| std::iter::repeat_n(*size, *size))
                .collect();
            let mut running = FuturesUnordered::new();
            let mut outcomes = Vec::new();
            for (position, node) in nodes.iter().enumerate() {
                while running.len() >= width_after[outcomes.len().min(width_after.len() - 1)] {
                    outcomes.extend(running.next().await);
                }
                if position >= sizes[0] && !pause.is_zero() && !stop.load(Ordering::SeqCst) {
                    // Keep taking results while the pause runs.
                    let pause = tokio::time::sleep(pause);
                    tokio::pin!(pause);
                    loop {
                        tokio::select! {
                            _ = &mut pause => break,
                            Some(outcome) = running.next(), if !running.is_empty() => outcomes.push(outcome),
                        }
                    }
                }
                running.push(one_node(node.clone()));
            }
            while let Some(outcome) = running.next().await {
                outcomes.push(outcome);
            }
            outcomes
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Nodes played in memory: each takes `work`, those in `failing` fail. Returns how
    /// many ran at once when each node started (in start order), the skipped nodes, and
    /// every node's final state.
    async fn roll(
        rollout: &str,
        node_count: usize,
        work: Duration,
        failing: &[usize],
    ) -> (Vec<usize>, Vec<String>, Vec<(String, NodeStepState)>) {
        let rollout = rollout_of(rollout);
        let nodes: Vec<String> = (0..node_count).map(|i| format!("n{i}")).collect();
        let running = AtomicUsize::new(0);
        let started = Mutex::new(Vec::new());
        let skipped = Mutex::new(Vec::new());
        let outcomes = roll_out(
            &nodes,
            &rollout,
            || false,
            |node| skipped.lock().unwrap().push(node.to_string()),
            |node| {
                let (running, started) = (&running, &started);
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    started.lock().unwrap().push(now);
                    tokio::time::sleep(work).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    let index: usize = node[1..].parse().unwrap();
                    match failing.contains(&index) {
                        true => NodeStepState::Failed,
                        false => NodeStepState::Ok,
                    }
                }
            },
        )
        .await;
        (
            started.into_inner().unwrap(),
            skipped.into_inner().unwrap(),
            outcomes,
        )
    }

    fn rollout_of(text: &str) -> Rollout {
        let source = format!(
            "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {{name: t}}\nspec:\n  steps:\n    - rollout: {text}\n      tasks: [{{ping: {{}}}}]\n"
        );
        weft_taskbook::TaskBook::from_source(&source, std::path::Path::new("t.yml"))
            .unwrap()
            .steps[0]
            .rollout
            .clone()
            .unwrap()
    }

    #[tokio::test]
    async fn a_window_widens_with_its_ramp_and_never_past_it() {
        let (concurrency, skipped, outcomes) = roll(
            "{batch: [1, 3], mode: window}",
            7,
            Duration::from_millis(40),
            &[],
        )
        .await;
        assert_eq!(concurrency.len(), 7);
        // The canary runs alone, and the next node starts only once it finished.
        assert_eq!(concurrency[..2], [1, 1], "{concurrency:?}");
        assert!(concurrency.iter().all(|c| *c <= 3), "{concurrency:?}");
        assert_eq!(concurrency.iter().max(), Some(&3), "{concurrency:?}");
        assert!(skipped.is_empty());
        assert_eq!(outcomes.len(), 7);
    }

    #[tokio::test]
    async fn barrier_batches_follow_a_percentage() {
        let (concurrency, _, _) = roll("{batch: \"50%\"}", 4, Duration::from_millis(20), &[]).await;
        assert_eq!(concurrency.iter().max(), Some(&2), "{concurrency:?}");
    }

    #[tokio::test]
    async fn the_rollout_stops_past_max_fail_percent_and_the_rest_never_start() {
        let rollout = "{batch: 1, max_fail_percent: 20}";
        let (started, skipped, _) = roll(rollout, 5, Duration::from_millis(5), &[1]).await;
        // One failure of five is 20%, not over the limit: all five run.
        assert_eq!(started.len(), 5);
        assert!(skipped.is_empty());
        let (started, skipped, outcomes) =
            roll(rollout, 5, Duration::from_millis(5), &[0, 1]).await;
        assert_eq!(
            started.len(),
            2,
            "two of five failed (40%): the other three never start"
        );
        assert_eq!(skipped, ["n2", "n3", "n4"]);
        let states: Vec<NodeStepState> = outcomes.iter().map(|(_, state)| *state).collect();
        assert_eq!(
            states,
            [
                NodeStepState::Failed,
                NodeStepState::Failed,
                NodeStepState::Skipped,
                NodeStepState::Skipped,
                NodeStepState::Skipped
            ]
        );
        let (started, _, _) = roll("{batch: 1}", 5, Duration::from_millis(5), &[0, 1]).await;
        assert_eq!(
            started.len(),
            5,
            "without max_fail_percent the others go on"
        );
    }

    #[tokio::test]
    async fn a_cancelled_rollout_starts_no_more_nodes() {
        let nodes: Vec<String> = (0..3).map(|i| format!("n{i}")).collect();
        let ran = AtomicUsize::new(0);
        let outcomes = roll_out(
            &nodes,
            &rollout_of("{batch: 1}"),
            || ran.load(Ordering::SeqCst) > 0,
            |_| {},
            |_| {
                ran.fetch_add(1, Ordering::SeqCst);
                async { NodeStepState::Ok }
            },
        )
        .await;
        let states: Vec<NodeStepState> = outcomes.iter().map(|(_, state)| *state).collect();
        assert_eq!(
            states,
            [
                NodeStepState::Ok,
                NodeStepState::Skipped,
                NodeStepState::Skipped
            ]
        );
    }
}
