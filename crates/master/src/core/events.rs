//! Events: what happened in the cluster (a node joined, a job finished, a beacon fired
//! on a node, a repository got a commit), kept in the store under `/events/`, newest
//! last, and bounded by count so they never fill a disk. Triggers read them through a
//! store watch, so an event stored is an event seen, whichever master stored it.

use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use weft_taskbook::objects::{is_event_type, MAX_EVENT_TYPE_BYTES};
use weft_taskbook::report::unix_ms_now;

use super::record::{decode, encode, CorruptRecord};
use futures_util::{Stream, StreamExt};

use crate::store::{Entry, Operation, Precondition, Store, StoreError, WatchEvent, MAX_OPERATIONS};

pub const EVENTS_PREFIX: &str = "/events/";
/// The namespace of the cluster's own events.
pub const SYSTEM_NAMESPACE: &str = "system";
/// Kept when no Config sets `event_retention`.
pub const DEFAULT_MAX_EVENTS: u32 = 10_000;
/// An event's data is small: a fact about one thing, not a log.
pub const MAX_EVENT_DATA_BYTES: usize = 16 * 1024;

/// The cluster's own event types.
pub mod types {
    pub const NODE_JOINED: &str = "node.joined";
    pub const NODE_ONLINE: &str = "node.online";
    pub const NODE_LOST: &str = "node.lost";
    pub const JOB_FINISHED: &str = "job.finished";
    pub const CRONJOB_MISSED: &str = "cronjob.missed";
    pub const TRIGGER_LOOP: &str = "trigger.loop_prevented";
    pub const TRIGGER_FAILED: &str = "trigger.failed";
    pub const GIT_COMMIT: &str = "git.commit";
    pub const GIT_INVALID: &str = "git.invalid";
    pub const GIT_FETCH_FAILED: &str = "git.fetch_failed";
}

/// What made an event happen, when it is the work of a Trigger: a Trigger never fires on
/// the events its own runs cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCause {
    /// `namespace/name` of the Trigger.
    pub trigger: String,
    pub job_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Sorts by time: `<unix ms>-<sequence>-<random>`.
    pub event_id: String,
    pub event_type: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_node: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub data: Map<String, Value>,
    pub time_unix_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<EventCause>,
}

/// An event before it is stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub namespace: String,
    pub source_node: Option<String>,
    pub data: Map<String, Value>,
    pub cause: Option<EventCause>,
}

impl NewEvent {
    pub fn system(event_type: &str, data: Map<String, Value>) -> Self {
        NewEvent {
            event_type: event_type.to_string(),
            namespace: SYSTEM_NAMESPACE.to_string(),
            data,
            ..NewEvent::default()
        }
    }

    pub fn from_node(mut self, node_name: &str) -> Self {
        self.source_node = Some(node_name.to_string());
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("the event type `{0}` is not a dotted name (letters, digits, `.`, `_`, `-`, at most {MAX_EVENT_TYPE_BYTES} bytes)")]
    BadType(String),
    #[error("the event's data is {0} bytes, more than the {MAX_EVENT_DATA_BYTES} allowed")]
    TooLarge(usize),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
}

/// Which events `weft events` shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub source_node: Option<String>,
    pub namespace: Option<String>,
}

impl EventFilter {
    pub fn matches(&self, event: &EventRecord) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|t| type_matches(t, &event.event_type))
            && self
                .source_node
                .as_ref()
                .is_none_or(|n| event.source_node.as_ref() == Some(n))
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| *n == event.namespace)
    }
}

/// `disk.full` matches itself; `disk.*` matches `disk.full` and `disk.full.cleared`.
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

pub fn event_key(event_id: &str) -> String {
    format!("{EVENTS_PREFIX}{event_id}")
}

#[derive(Clone)]
pub struct EventLog<S> {
    store: S,
    /// The last id's time and sequence: ids this master makes sort in the order it
    /// made them, also within one millisecond.
    last_id: Arc<Mutex<(u64, u32)>>,
}

impl<S: Store> EventLog<S> {
    pub fn new(store: S) -> Self {
        EventLog {
            store,
            last_id: Arc::default(),
        }
    }

    fn next_id(&self) -> (String, u64) {
        let mut last = self.last_id.lock().unwrap_or_else(PoisonError::into_inner);
        let now = unix_ms_now().max(last.0);
        let sequence = if now == last.0 { last.1 + 1 } else { 0 };
        *last = (now, sequence);
        // The random part keeps two masters' ids apart.
        let id = format!("{now:013}-{sequence:05}-{:04x}", rand::random::<u16>());
        (id, now)
    }

    /// Stores the event; returns it as stored.
    pub async fn emit(&self, event: NewEvent) -> Result<EventRecord, EventError> {
        if !is_event_type(&event.event_type) {
            return Err(EventError::BadType(event.event_type));
        }
        let size = serde_json::to_vec(&event.data).map_or(0, |d| d.len());
        if size > MAX_EVENT_DATA_BYTES {
            return Err(EventError::TooLarge(size));
        }
        let (event_id, time_unix_ms) = self.next_id();
        let record = EventRecord {
            event_id,
            event_type: event.event_type,
            namespace: event.namespace,
            source_node: event.source_node,
            data: event.data,
            time_unix_ms,
            cause: event.cause,
        };
        self.store
            .put(
                &event_key(&record.event_id),
                encode(&record),
                Precondition::Absent,
            )
            .await?;
        tracing::info!(event = %record.event_type, namespace = %record.namespace, node = record.source_node.as_deref().unwrap_or(""), "event");
        Ok(record)
    }

    /// The newest `limit` events that pass `filter`, oldest first, and the store's
    /// revision they were read at (to follow from).
    pub async fn list(
        &self,
        filter: &EventFilter,
        limit: usize,
    ) -> Result<(Vec<EventRecord>, u64), EventError> {
        let revision = self.store.current_revision().await?;
        let entries = self.store.list(EVENTS_PREFIX).await?;
        let mut events = Vec::new();
        for entry in entries.iter().rev() {
            if events.len() >= limit {
                break;
            }
            let event: EventRecord = decode(entry)?;
            if filter.matches(&event) {
                events.push(event);
            }
        }
        events.reverse();
        Ok((events, revision))
    }

    /// Every event stored after `after_revision` that passes `filter`, as it is stored.
    pub async fn follow(
        &self,
        filter: EventFilter,
        after_revision: u64,
    ) -> Result<impl Stream<Item = Result<EventRecord, EventError>> + Send, EventError> {
        let changes = self.store.watch(EVENTS_PREFIX, after_revision).await?;
        Ok(changes.filter_map(move |change| {
            let event = match change {
                Err(error) => Some(Err(EventError::Store(error))),
                Ok(WatchEvent {
                    key,
                    value: Some(value),
                    revision,
                    ..
                }) => {
                    let entry = Entry {
                        key,
                        value,
                        create_revision: revision,
                        mod_revision: revision,
                    };
                    match decode::<EventRecord>(&entry) {
                        Ok(event) => filter.matches(&event).then_some(Ok(event)),
                        Err(corrupt) => Some(Err(corrupt.into())),
                    }
                }
                // Sweeping the oldest is not news.
                Ok(_) => None,
            };
            std::future::ready(event)
        }))
    }

    /// Keeps the newest `max_events`; returns how many went.
    pub async fn sweep(&self, max_events: u32) -> Result<usize, EventError> {
        let entries: Vec<Entry> = self.store.list(EVENTS_PREFIX).await?;
        let over = entries.len().saturating_sub(max_events as usize);
        for chunk in entries[..over].chunks(MAX_OPERATIONS) {
            let operations = chunk
                .iter()
                .map(|entry| Operation::Delete {
                    key: entry.key.clone(),
                    precondition: Precondition::None,
                })
                .collect();
            self.store.transaction(operations).await?;
        }
        Ok(over)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use serde_json::json;

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[tokio::test]
    async fn events_list_newest_last_filter_and_stay_bounded() {
        let store = SqliteStore::open_in_memory().unwrap();
        let events = EventLog::new(store);
        for index in 0..5 {
            let event = NewEvent {
                event_type: if index % 2 == 0 {
                    "disk.full"
                } else {
                    "load.high"
                }
                .into(),
                namespace: "prod".into(),
                data: data(json!({"index": index})),
                ..NewEvent::default()
            }
            .from_node(if index < 3 { "web-1" } else { "web-2" });
            events.emit(event).await.unwrap();
        }
        let (all, _) = events.list(&EventFilter::default(), 100).await.unwrap();
        let indexes: Vec<_> = all.iter().map(|e| e.data["index"].clone()).collect();
        assert_eq!(indexes, [0, 1, 2, 3, 4].map(|i| json!(i)));

        let disk_on_web_1 = EventFilter {
            event_type: Some("disk.*".into()),
            source_node: Some("web-1".into()),
            ..EventFilter::default()
        };
        let (matched, _) = events.list(&disk_on_web_1, 100).await.unwrap();
        assert_eq!(matched.len(), 2);
        let (newest, _) = events.list(&EventFilter::default(), 2).await.unwrap();
        assert_eq!(newest[1].data["index"], 4);

        assert_eq!(events.sweep(3).await.unwrap(), 2);
        let (kept, _) = events.list(&EventFilter::default(), 100).await.unwrap();
        assert_eq!(kept.first().unwrap().data["index"], 2);
    }

    #[tokio::test]
    async fn bad_types_and_large_data_are_refused_and_nothing_is_stored() {
        let store = SqliteStore::open_in_memory().unwrap();
        let events = EventLog::new(store);
        let bad = NewEvent::system("disk full; rm -rf", Map::new());
        assert!(matches!(
            events.emit(bad).await,
            Err(EventError::BadType(_))
        ));
        let large = NewEvent::system(
            "big.event",
            data(json!({"blob": "x".repeat(MAX_EVENT_DATA_BYTES)})),
        );
        assert!(matches!(
            events.emit(large).await,
            Err(EventError::TooLarge(_))
        ));
        let (all, _) = events.list(&EventFilter::default(), 10).await.unwrap();
        assert!(all.is_empty());
    }
}
