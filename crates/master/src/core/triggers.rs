//! Triggers: the leader follows the event log and runs a Trigger's TaskBook when its
//! events arrive `count` times within `within`, at most once per `cooldown`.
//!
//! At least once: the last event handled is a cursor in the store, written with the
//! Triggers' state after the runs an event started, so a master that stops (or loses
//! the lead) mid-way leaves the event to the next leader rather than dropping it. A
//! Trigger counts, cools down and fires per source node when it runs on the event's
//! node (a full disk on one node does not hold back the cleanup on another), and per
//! Trigger when it runs on fixed nodes. A Trigger never fires on an event its own runs
//! caused; it says so with a `trigger.loop_prevented` event instead.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use weft_taskbook::objects::{AnyObject, Kind, Object, TriggerSpec, TriggerTarget};

use futures_util::StreamExt;
use weft_taskbook::selector::NodeSelector;
use weft_taskbook::Vars;

use super::events::{
    type_matches, types, EventLog, EventRecord, NewEvent, EVENTS_PREFIX, SYSTEM_NAMESPACE,
};
use super::job::JobOrigin;
use super::objects::{ObjectError, ObjectRegistry};
use super::record::{decode, encode, CorruptRecord};
use super::run::{JobEvent, JobRunner, RunRequest, RunScope};
use crate::store::{Entry, Operation, Precondition, Store, StoreError};

const STATE_PREFIX: &str = "/trigger-state/";
const CURSOR_KEY: &str = "/trigger-cursor";
/// Matches kept per scope, so a Trigger's state stays small whatever arrives.
const MAX_RECENT: usize = 1000;

/// What one Trigger remembers, per scope (a node's name, or "" for the whole Trigger).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TriggerState {
    #[serde(default)]
    pub scopes: BTreeMap<String, ScopeState>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScopeState {
    /// When matching events arrived, oldest first, since the last firing.
    #[serde(default)]
    pub recent_unix_ms: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fired_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job_id: Option<String>,
    #[serde(default)]
    pub fired: u64,
    /// Firings the cooldown held back.
    #[serde(default)]
    pub held_back: u64,
}

/// What a matching event does to a Trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Counted; not enough of them yet.
    Counted {
        seen: usize,
        needed: u32,
    },
    /// Enough, but the last run was too recent.
    CoolingDown {
        remaining: Duration,
    },
    /// The event came from this Trigger's own run.
    Loop,
    Fire,
}

/// Whether `event` is one `trigger` (in `trigger_namespace`) reacts to: its type and
/// fields, from the Trigger's own namespace or the cluster's `system` one.
pub fn matches(trigger_namespace: &str, trigger: &TriggerSpec, event: &EventRecord) -> bool {
    (event.namespace == trigger_namespace || event.namespace == SYSTEM_NAMESPACE)
        && type_matches(&trigger.event.event_type, &event.event_type)
        && trigger.event.fields.iter().all(|(field, wanted)| {
            let actual = match field.as_str() {
                "node" | "source_node" => event.source_node.clone().map(Value::String),
                _ => event.data.get(field).cloned(),
            };
            match actual {
                Some(Value::String(text)) => text == *wanted,
                Some(other) => serde_json::from_str::<Value>(wanted).is_ok_and(|w| w == other),
                None => false,
            }
        })
}

/// The scope an event counts in (see the module's comment).
pub fn scope_of(trigger: &TriggerSpec, event: &EventRecord) -> String {
    match trigger.run.on {
        TriggerTarget::EventNode => event.source_node.clone().unwrap_or_default(),
        TriggerTarget::Nodes => String::new(),
    }
}

/// Counts the event in `scope` and decides; `now_ms` is the event's time, so the
/// outcome does not depend on how late the leader reads it.
pub fn decide(
    trigger_id: &str,
    trigger: &TriggerSpec,
    scope: &mut ScopeState,
    event: &EventRecord,
) -> Decision {
    if event
        .cause
        .as_ref()
        .is_some_and(|c| c.trigger == trigger_id)
    {
        return Decision::Loop;
    }
    let now_ms = event.time_unix_ms;
    if let Some(within) = trigger.condition.within {
        let oldest = now_ms.saturating_sub(within.0.as_millis() as u64);
        scope.recent_unix_ms.retain(|at| *at >= oldest);
    }
    scope.recent_unix_ms.push(now_ms);
    if scope.recent_unix_ms.len() > MAX_RECENT {
        scope.recent_unix_ms.remove(0);
    }
    let needed = trigger.condition.count.max(1);
    if scope.recent_unix_ms.len() < needed as usize {
        return Decision::Counted {
            seen: scope.recent_unix_ms.len(),
            needed,
        };
    }
    if let (Some(cooldown), Some(last)) = (trigger.cooldown, scope.last_fired_unix_ms) {
        let ready_ms = last + cooldown.0.as_millis() as u64;
        if now_ms < ready_ms {
            scope.held_back += 1;
            scope.recent_unix_ms.clear();
            return Decision::CoolingDown {
                remaining: Duration::from_millis(ready_ms - now_ms),
            };
        }
    }
    scope.recent_unix_ms.clear();
    scope.last_fired_unix_ms = Some(now_ms);
    scope.fired += 1;
    Decision::Fire
}

/// A Trigger to fire, with the event that fired it.
#[derive(Debug, Clone)]
pub struct Firing {
    pub namespace: String,
    pub name: String,
    pub spec: TriggerSpec,
    pub event: EventRecord,
    pub scope: String,
}

impl Firing {
    /// What the TaskBook reads as `event`.
    pub fn event_vars(&self) -> Value {
        json!({
            "id": self.event.event_id,
            "type": self.event.event_type,
            "namespace": self.event.namespace,
            "node": self.event.source_node,
            "data": Value::Object(self.event.data.clone()),
            "time_unix_ms": self.event.time_unix_ms,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
}

/// The Triggers' state in the store.
#[derive(Clone)]
pub struct TriggerBook<S> {
    store: S,
    objects: ObjectRegistry<S>,
}

/// One event handled: what fires, the state to write with the cursor.
#[derive(Default)]
pub struct Handled {
    pub firings: Vec<Firing>,
    pub loops: Vec<(String, EventRecord)>,
    states: Vec<(String, TriggerState)>,
}

impl<S: Store + Clone> TriggerBook<S> {
    pub fn new(store: S, objects: ObjectRegistry<S>) -> Self {
        TriggerBook { store, objects }
    }

    /// The store revision of the last event handled; 0 for none yet.
    pub async fn cursor(&self) -> Result<u64, TriggerError> {
        match self.store.get(CURSOR_KEY).await? {
            Some(entry) => Ok(decode(&entry)?),
            None => Ok(0),
        }
    }

    pub async fn state(&self, namespace: &str, name: &str) -> Result<TriggerState, TriggerError> {
        match self.store.get(&state_key(namespace, name)).await? {
            Some(entry) => Ok(decode(&entry)?),
            None => Ok(TriggerState::default()),
        }
    }

    /// Decides what `event` does to every Trigger; nothing is written yet.
    pub async fn handle(&self, event: &EventRecord) -> Result<Handled, TriggerError> {
        let mut handled = Handled {
            firings: Vec::new(),
            loops: Vec::new(),
            states: Vec::new(),
        };
        for stored in self.objects.list(Kind::Trigger, None).await? {
            let AnyObject::Trigger(Object { metadata, spec, .. }) = stored.object()? else {
                continue;
            };
            // The stored document may leave the namespace to the default.
            let namespace = stored.record.namespace.clone().unwrap_or_default();
            if !matches(&namespace, &spec, event) {
                continue;
            }
            let trigger_id = format!("{namespace}/{}", metadata.name);
            let mut state = self.state(&namespace, &metadata.name).await?;
            let scope = scope_of(&spec, event);
            let decision = decide(
                &trigger_id,
                &spec,
                state.scopes.entry(scope.clone()).or_default(),
                event,
            );
            tracing::debug!(trigger = %trigger_id, event = %event.event_id, ?decision, "trigger decided");
            match decision {
                Decision::Loop => {
                    handled.loops.push((trigger_id.clone(), event.clone()));
                    continue;
                }
                Decision::Fire => handled.firings.push(Firing {
                    namespace: namespace.clone(),
                    name: metadata.name.clone(),
                    spec,
                    event: event.clone(),
                    scope,
                }),
                Decision::Counted { .. } | Decision::CoolingDown { .. } => {}
            }
            handled
                .states
                .push((state_key(&namespace, &metadata.name), state));
        }
        Ok(handled)
    }

    /// Records the runs the firings started and moves the cursor past the event, in
    /// one transaction.
    pub async fn commit(
        &self,
        mut handled: Handled,
        started: &[(Firing, Option<String>)],
        event_revision: u64,
    ) -> Result<(), TriggerError> {
        for (firing, job_id) in started {
            let key = state_key(&firing.namespace, &firing.name);
            if let Some((_, state)) = handled.states.iter_mut().find(|(k, _)| *k == key) {
                if let Some(scope) = state.scopes.get_mut(&firing.scope) {
                    scope.last_job_id = job_id.clone();
                }
            }
        }
        let mut operations: Vec<Operation> = handled
            .states
            .into_iter()
            .map(|(key, state)| Operation::Put {
                key,
                value: encode(&state),
                precondition: Precondition::None,
            })
            .collect();
        operations.push(Operation::Put {
            key: CURSOR_KEY.to_string(),
            value: encode(&event_revision),
            precondition: Precondition::None,
        });
        self.store.transaction(operations).await?;
        Ok(())
    }
}

fn state_key(namespace: &str, name: &str) -> String {
    format!("{STATE_PREFIX}{namespace}/{name}")
}

/// What the Trigger engine reaches.
pub struct TriggerEngine<S> {
    pub book: TriggerBook<S>,
    pub store: S,
    pub objects: ObjectRegistry<S>,
    pub runner: JobRunner<S>,
    pub events: EventLog<S>,
}

impl<S: Store + Clone> TriggerEngine<S> {
    /// Handles every event after the cursor, then each new one, until dropped (this
    /// master stops leading). Store trouble is retried, never skipped.
    pub async fn run(self) {
        loop {
            if let Err(error) = self.follow().await {
                tracing::warn!(%error, "triggers stopped following events; starting again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    async fn follow(&self) -> Result<(), TriggerError> {
        let cursor = self.book.cursor().await?;
        let mut changes = match self.store.watch(EVENTS_PREFIX, cursor).await {
            Ok(changes) => changes,
            Err(StoreError::Compacted { .. }) => return self.catch_up(cursor).await,
            Err(error) => return Err(error.into()),
        };
        while let Some(change) = changes.next().await {
            let change = match change {
                Ok(change) => change,
                Err(StoreError::Compacted { .. }) => return Ok(()),
                Err(error) => return Err(error.into()),
            };
            let Some(value) = change.value else { continue };
            let entry = Entry {
                key: change.key,
                value,
                create_revision: change.revision,
                mod_revision: change.revision,
            };
            self.handle(&decode(&entry)?, change.revision).await?;
        }
        Ok(())
    }

    /// The history the watch needed is compacted: the events still stored that came
    /// after the cursor, in the order they were stored.
    async fn catch_up(&self, cursor: u64) -> Result<(), TriggerError> {
        let mut entries: Vec<Entry> = self
            .store
            .list(EVENTS_PREFIX)
            .await?
            .into_iter()
            .filter(|entry| entry.mod_revision > cursor)
            .collect();
        entries.sort_by_key(|entry| entry.mod_revision);
        tracing::warn!(
            cursor,
            events = entries.len(),
            "event history was compacted; triggers catch up from the stored events"
        );
        for entry in &entries {
            self.handle(&decode(entry)?, entry.mod_revision).await?;
        }
        if entries.is_empty() {
            let revision = self.store.current_revision().await?;
            let handled = Handled::default();
            self.book.commit(handled, &[], revision).await?;
        }
        Ok(())
    }

    async fn handle(&self, event: &EventRecord, revision: u64) -> Result<(), TriggerError> {
        let handled = self.book.handle(event).await?;
        let mut started = Vec::new();
        for firing in &handled.firings {
            let job_id = self.start(firing).await;
            started.push((firing.clone(), job_id));
        }
        for (trigger_id, event) in &handled.loops {
            tracing::warn!(trigger = %trigger_id, event = %event.event_type, "a trigger did not fire on an event its own run caused");
            let mut notice = NewEvent::system(types::TRIGGER_LOOP, loop_data(trigger_id, event));
            notice.cause = event.cause.clone();
            if let Err(error) = self.events.emit(notice).await {
                tracing::warn!(%error, "the trigger.loop_prevented event was not stored");
            }
        }
        self.book.commit(handled, &started, revision).await
    }

    /// Starts the firing's run; its job id, or `None` when it could not start (said
    /// with a `trigger.failed` event: retrying would fail the same way).
    async fn start(&self, firing: &Firing) -> Option<String> {
        let trigger_id = format!("{}/{}", firing.namespace, firing.name);
        match self.request(firing).await {
            Ok(request) => match self.runner.start(request).await {
                Ok(mut events) => {
                    let job_id = match events.try_recv() {
                        Ok(JobEvent::Started { job_id, .. }) => Some(job_id),
                        _ => None,
                    };
                    tracing::info!(trigger = %trigger_id, event = %firing.event.event_id, job = ?job_id, "trigger fired");
                    job_id
                }
                Err(error) => {
                    self.failed(&trigger_id, firing, error.to_string()).await;
                    None
                }
            },
            Err(error) => {
                self.failed(&trigger_id, firing, error).await;
                None
            }
        }
    }

    async fn request(&self, firing: &Firing) -> Result<RunRequest, String> {
        let run = &firing.spec.run;
        let (bundle, commits) = self
            .runner
            .bundle_for(&run.taskbook, &firing.namespace)
            .await
            .map_err(|e| e.to_string())?;
        let nodes_override = match run.on {
            TriggerTarget::EventNode => match &firing.event.source_node {
                Some(node) => Some(NodeSelector {
                    names: vec![node.clone()],
                    ..NodeSelector::default()
                }),
                None => {
                    return Err(format!(
                        "the event {} comes from no node, and the Trigger runs on the event's node",
                        firing.event.event_type
                    ))
                }
            },
            TriggerTarget::Nodes => run.nodes.clone(),
        };
        let event_vars = Vars::from_iter([("event".to_string(), firing.event_vars())]);
        Ok(RunRequest {
            bundle,
            extra_vars: vec![event_vars],
            nodes_override,
            scope: RunScope::Namespace(Some(firing.namespace.clone())),
            origin: Some(JobOrigin {
                kind: Kind::Trigger,
                namespace: firing.namespace.clone(),
                name: firing.name.clone(),
                event_id: Some(firing.event.event_id.clone()),
            }),
            commits,
            ..RunRequest::default()
        })
    }

    async fn failed(&self, trigger_id: &str, firing: &Firing, error: String) {
        tracing::warn!(trigger = %trigger_id, %error, "trigger could not start its run");
        let mut data = loop_data(trigger_id, &firing.event);
        data.insert("error".into(), json!(error));
        let mut notice = NewEvent::system(types::TRIGGER_FAILED, data);
        notice.namespace = firing.namespace.clone();
        if let Err(error) = self.events.emit(notice).await {
            tracing::warn!(%error, "the trigger.failed event was not stored");
        }
    }
}

const RETRY: Duration = Duration::from_secs(1);

/// The data of a `trigger.loop_prevented` or `trigger.failed` event.
pub fn loop_data(trigger_id: &str, event: &EventRecord) -> Map<String, Value> {
    Map::from_iter([
        ("trigger".to_string(), json!(trigger_id)),
        ("event_id".to_string(), json!(event.event_id)),
        ("event_type".to_string(), json!(event.event_type)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::events::EventCause;
    use weft_taskbook::duration::Duration as SpecDuration;
    use weft_taskbook::objects::{EventMatch, TriggerCondition, TriggerRun};

    const MINUTE: u64 = 60_000;

    fn trigger(count: u32, within_minutes: u64, cooldown_minutes: u64) -> TriggerSpec {
        TriggerSpec {
            event: EventMatch {
                event_type: "disk.full".into(),
                fields: BTreeMap::from([("path".into(), "/".into())]),
            },
            condition: TriggerCondition {
                count,
                within: Some(SpecDuration::from_secs(within_minutes * 60)),
            },
            cooldown: Some(SpecDuration::from_secs(cooldown_minutes * 60)),
            run: TriggerRun::default(),
        }
    }

    fn event(at_ms: u64, node: &str) -> EventRecord {
        EventRecord {
            event_id: format!("{at_ms:013}-00000-0000"),
            event_type: "disk.full".into(),
            namespace: "prod".into(),
            source_node: Some(node.into()),
            data: Map::from_iter([("path".to_string(), json!("/"))]),
            time_unix_ms: at_ms,
            cause: None,
        }
    }

    #[test]
    fn three_within_ten_minutes_fire_and_the_cooldown_holds_the_next_back() {
        let spec = trigger(3, 10, 30);
        let mut scope = ScopeState::default();
        let start = 1_000 * MINUTE;
        // Two, then the first ages out of the window.
        for at in [start, start + 2 * MINUTE] {
            assert!(matches!(
                decide("prod/t", &spec, &mut scope, &event(at, "a")),
                Decision::Counted { .. }
            ));
        }
        assert!(matches!(
            decide(
                "prod/t",
                &spec,
                &mut scope,
                &event(start + 11 * MINUTE, "a")
            ),
            Decision::Counted { seen: 2, .. }
        ));
        assert_eq!(
            decide(
                "prod/t",
                &spec,
                &mut scope,
                &event(start + 12 * MINUTE, "a")
            ),
            Decision::Fire
        );
        for at in [13, 14, 15] {
            decide(
                "prod/t",
                &spec,
                &mut scope,
                &event(start + at * MINUTE, "a"),
            );
        }
        assert_eq!(scope.held_back, 1);
        assert_eq!(scope.fired, 1);
        for at in [43, 44] {
            decide(
                "prod/t",
                &spec,
                &mut scope,
                &event(start + at * MINUTE, "a"),
            );
        }
        assert_eq!(
            decide(
                "prod/t",
                &spec,
                &mut scope,
                &event(start + 45 * MINUTE, "a")
            ),
            Decision::Fire
        );
    }

    #[test]
    fn matching_reads_type_fields_and_namespace_and_a_trigger_skips_its_own_events() {
        let spec = trigger(1, 10, 0);
        let mut full = event(0, "web-1");
        assert!(matches("prod", &spec, &full));
        assert!(!matches("staging", &spec, &full));
        full.data.insert("path".into(), json!("/var"));
        assert!(!matches("prod", &spec, &full));
        let mut system = event(0, "web-1");
        system.namespace = SYSTEM_NAMESPACE.into();
        assert!(matches("staging", &spec, &system));

        let mut own = event(0, "web-1");
        own.cause = Some(EventCause {
            trigger: "prod/t".into(),
            job_id: "j".into(),
        });
        let mut scope = ScopeState::default();
        assert_eq!(decide("prod/t", &spec, &mut scope, &own), Decision::Loop);
        assert_eq!(
            decide("prod/other", &spec, &mut scope, &own),
            Decision::Fire
        );
    }

    /// What a master that stops between starting a run and writing the cursor leaves
    /// behind: the next one handles the event again (at least once), and after a
    /// commit nobody does.
    #[tokio::test]
    async fn an_event_not_committed_is_handled_again_and_a_committed_one_is_not() {
        let store = crate::store::SqliteStore::open_in_memory().unwrap();
        let objects = ObjectRegistry::new(
            store.clone(),
            crate::core::secret_box::SecretBox::from_key(&[1; 32]),
        );
        objects.ensure_builtin_namespaces().await.unwrap();
        let source = "apiVersion: weft/v1\nkind: Trigger\nmetadata: {name: t}\nspec:\n  event: {type: disk.full}\n  cooldown: 1h\n  run: {taskbook: {name: cleanup}}\n";
        let parsed =
            weft_taskbook::objects::parse_objects(source, std::path::Path::new("t.yml")).unwrap();
        objects.apply(parsed, false).await.unwrap();
        let events = EventLog::new(store.clone());
        let mut new = NewEvent::system("disk.full", Map::new()).from_node("web-1");
        new.namespace = "default".into();
        let event = events.emit(new).await.unwrap();
        let revision = store.current_revision().await.unwrap();

        let book = TriggerBook::new(store.clone(), objects.clone());
        assert_eq!(book.cursor().await.unwrap(), 0);
        // The first master decides to fire, then stops before committing.
        assert_eq!(book.handle(&event).await.unwrap().firings.len(), 1);
        let again = book.handle(&event).await.unwrap();
        assert_eq!(again.firings.len(), 1, "the event was dropped");
        let firing = again.firings[0].clone();
        book.commit(again, &[(firing, Some("job-1".into()))], revision)
            .await
            .unwrap();
        assert_eq!(book.cursor().await.unwrap(), revision);
        let state = book.state("default", "t").await.unwrap();
        assert_eq!(state.scopes["web-1"].last_job_id.as_deref(), Some("job-1"));
        // Handled again (a watch may repeat it): the cooldown holds it back.
        assert!(book.handle(&event).await.unwrap().firings.is_empty());
    }

    #[test]
    fn scopes_are_per_node_when_the_run_goes_to_the_event_node() {
        let mut spec = trigger(1, 10, 30);
        assert_eq!(scope_of(&spec, &event(0, "web-1")), "web-1");
        spec.run.on = TriggerTarget::Nodes;
        assert_eq!(scope_of(&spec, &event(0, "web-1")), "");
    }
}
