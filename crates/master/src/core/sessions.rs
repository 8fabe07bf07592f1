//! The nodes connected right now, each through one session, and the steps each is
//! running. A job hands a node a step and reads what comes back; when the session ends
//! every step it was running ends with `Lost`, so no job waits on a node that left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::{mpsc, watch};
use weft_taskbook::report::TaskResult;
use weft_taskbook::Vars;

use super::job::StepAssignment;

/// What the master sends a node.
#[derive(Debug, Clone)]
pub enum ToNode {
    RunStep(Arc<StepAssignment>),
    /// The node's whole set of Beacons, as JSON.
    Beacons(Arc<String>),
}

/// What a node reports about one step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEvent {
    Result {
        sequence: u32,
        result: Box<TaskResult>,
    },
    Done {
        failed: bool,
        registered: Vars,
    },
    /// The session ended before the step did.
    Lost(String),
}

#[derive(Debug, thiserror::Error)]
#[error("node `{0}` is not connected")]
pub struct NotConnected(pub String);

type StepKey = (String, u32);

struct Session {
    session_id: u64,
    to_node: mpsc::UnboundedSender<ToNode>,
    /// Set to true to end the session from the master's side (node removed, replaced).
    closed: watch::Sender<bool>,
    steps: HashMap<StepKey, mpsc::UnboundedSender<StepEvent>>,
}

impl Session {
    fn end(self, reason: &str) {
        let _ = self.closed.send(true);
        for (_, waiter) in self.steps {
            let _ = waiter.send(StepEvent::Lost(reason.to_string()));
        }
    }
}

/// What the transport holds for the session it serves.
pub struct SessionHandle {
    pub session_id: u64,
    pub to_node: mpsc::UnboundedReceiver<ToNode>,
    /// Becomes true when the master ends the session.
    pub closed: watch::Receiver<bool>,
}

#[derive(Default)]
pub struct NodeSessions {
    sessions: Mutex<HashMap<String, Session>>,
    next_session_id: AtomicU64,
}

impl NodeSessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A node connected. A session it still had (a half-open connection) ends first.
    pub fn open(&self, node_name: &str) -> SessionHandle {
        let session_id = self.next_session_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (to_node, to_node_rx) = mpsc::unbounded_channel();
        let (closed, closed_rx) = watch::channel(false);
        let session = Session {
            session_id,
            to_node,
            closed,
            steps: HashMap::new(),
        };
        if let Some(old) = self.lock().insert(node_name.to_string(), session) {
            old.end("the node reconnected during the step");
        }
        SessionHandle {
            session_id,
            to_node: to_node_rx,
            closed: closed_rx,
        }
    }

    /// The session ended; a newer session of the same node is left alone.
    pub fn close(&self, node_name: &str, session_id: u64, reason: &str) {
        let mut sessions = self.lock();
        if sessions.get(node_name).map(|s| s.session_id) == Some(session_id) {
            let session = sessions.remove(node_name).expect("checked above");
            drop(sessions);
            session.end(reason);
        }
    }

    /// Ends the node's session, if any (the node was removed).
    pub fn kick(&self, node_name: &str, reason: &str) {
        let removed = self.lock().remove(node_name);
        if let Some(session) = removed {
            session.end(reason);
        }
    }

    /// Ends every session (this master stopped leading: the nodes go to the leader).
    pub fn kick_all(&self, reason: &str) {
        let sessions = std::mem::take(&mut *self.lock());
        for session in sessions.into_values() {
            session.end(reason);
        }
    }

    /// Sends the node a message that needs no answer; `false` when it is not connected.
    pub fn send(&self, node_name: &str, message: ToNode) -> bool {
        self.lock()
            .get(node_name)
            .is_some_and(|session| session.to_node.send(message).is_ok())
    }

    pub fn online_nodes(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn is_online(&self, node_name: &str) -> bool {
        self.lock().contains_key(node_name)
    }

    pub fn online_count(&self) -> usize {
        self.lock().len()
    }

    /// Sends the node a step; its results arrive on the returned receiver.
    pub fn dispatch(
        &self,
        node_name: &str,
        assignment: Arc<StepAssignment>,
    ) -> Result<mpsc::UnboundedReceiver<StepEvent>, NotConnected> {
        let mut sessions = self.lock();
        let session = sessions
            .get_mut(node_name)
            .ok_or_else(|| NotConnected(node_name.to_string()))?;
        let (waiter, events) = mpsc::unbounded_channel();
        let key = (assignment.job_id.clone(), assignment.step_index);
        if session.to_node.send(ToNode::RunStep(assignment)).is_err() {
            return Err(NotConnected(node_name.to_string()));
        }
        session.steps.insert(key, waiter);
        Ok(events)
    }

    /// The job stopped waiting for the node's step (its deadline passed): what the
    /// node reports on it from now on is late.
    pub fn abandon_step(&self, node_name: &str, job_id: &str, step_index: u32) {
        if let Some(session) = self.lock().get_mut(node_name) {
            session.steps.remove(&(job_id.to_string(), step_index));
        }
    }

    /// Hands a node's report to the job waiting for it. Returns the event back when no
    /// job waits (the master restarted since, or the job gave the node up).
    pub fn deliver(
        &self,
        node_name: &str,
        session_id: u64,
        job_id: &str,
        step_index: u32,
        event: StepEvent,
    ) -> Option<StepEvent> {
        let mut sessions = self.lock();
        let Some(session) = sessions
            .get_mut(node_name)
            .filter(|s| s.session_id == session_id)
        else {
            return Some(event);
        };
        let key = (job_id.to_string(), step_index);
        let done = matches!(event, StepEvent::Done { .. });
        let waiter = if done {
            session.steps.remove(&key)
        } else {
            session.steps.get(&key).cloned()
        };
        match waiter {
            Some(waiter) => waiter.send(event).err().map(|unsent| unsent.0),
            None => Some(event),
        }
    }
}

/// A token bucket: how many messages a session may send, in bursts of `burst` and
/// `per_second` on average. A node over it is not a weft minion doing its work (whose
/// busiest moment, a reconnect that sends again what the master may have missed, fits
/// in a burst), so its session ends.
#[derive(Debug, Clone)]
pub struct MessageBudget {
    burst: f64,
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl MessageBudget {
    pub fn new(burst: u32, per_second: u32, now: Instant) -> Self {
        MessageBudget {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            tokens: f64::from(burst),
            refilled_at: now,
        }
    }

    /// Spends one message; `false` when none is left.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.refilled_at = self.refilled_at.max(now);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// What the budget allows, for the message that ends a session over it.
    pub fn describe(&self) -> String {
        format!(
            "{} messages a second on average, {} at once",
            self.per_second, self.burst
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn assignment(job_id: &str) -> Arc<StepAssignment> {
        Arc::new(StepAssignment {
            job_id: job_id.into(),
            ..StepAssignment::default()
        })
    }

    #[tokio::test]
    async fn reports_reach_the_waiting_job_and_a_closed_session_loses_its_steps() {
        let sessions = NodeSessions::default();
        let mut handle = sessions.open("web-1");
        let mut events = sessions.dispatch("web-1", assignment("j1")).unwrap();
        assert!(matches!(
            handle.to_node.recv().await,
            Some(ToNode::RunStep(_))
        ));

        let done = StepEvent::Done {
            failed: false,
            registered: Vars::new(),
        };
        assert_eq!(
            sessions.deliver("web-1", handle.session_id, "j1", 0, done.clone()),
            None
        );
        assert_eq!(events.recv().await, Some(done.clone()));
        // Nobody waits for that step any more.
        assert_eq!(
            sessions.deliver("web-1", handle.session_id, "j1", 0, done.clone()),
            Some(done.clone())
        );

        // A step given up on: what the node says of it is late.
        let _given_up = sessions.dispatch("web-1", assignment("j0")).unwrap();
        sessions.abandon_step("web-1", "j0", 0);
        assert_eq!(
            sessions.deliver("web-1", handle.session_id, "j0", 0, done.clone()),
            Some(done)
        );

        let mut events = sessions.dispatch("web-1", assignment("j2")).unwrap();
        sessions.close("web-1", handle.session_id, "connection lost");
        assert_eq!(
            events.recv().await,
            Some(StepEvent::Lost("connection lost".into()))
        );
        assert!(!sessions.is_online("web-1"));
        assert!(sessions.dispatch("web-1", assignment("j3")).is_err());
    }

    #[tokio::test]
    async fn a_reconnect_replaces_the_old_session_which_cannot_close_the_new_one() {
        let sessions = NodeSessions::default();
        let old = sessions.open("web-1");
        let mut events = sessions.dispatch("web-1", assignment("j1")).unwrap();
        let new = sessions.open("web-1");
        assert!(*old.closed.borrow());
        assert!(matches!(events.recv().await, Some(StepEvent::Lost(_))));
        sessions.close("web-1", old.session_id, "late close");
        assert!(sessions.is_online("web-1"));
        sessions.kick("web-1", "removed");
        assert!(*new.closed.borrow());
        assert!(!sessions.is_online("web-1"));
    }

    #[test]
    fn a_message_budget_allows_its_burst_then_its_rate_and_refills() {
        let start = Instant::now();
        let mut budget = MessageBudget::new(10, 5, start);
        assert!((0..10).all(|_| budget.take(start)));
        assert!(!budget.take(start), "the burst is spent");
        // A fifth of a second brings one message back, at five a second.
        let later = start + Duration::from_millis(200);
        assert!(budget.take(later));
        assert!(!budget.take(later));
        // A long quiet refills the burst, never more.
        let much_later = later + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| budget.take(much_later)).count(), 10);
        // A clock read out of order takes nothing back.
        assert!(!budget.take(start));
    }
}
