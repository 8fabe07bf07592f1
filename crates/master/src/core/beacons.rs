//! Which Beacons each node runs (those whose `nodes` select it), and what a node's
//! beacon report becomes: an Event in the Beacon's namespace, from that node. A node
//! reports only for a Beacon that exists and selects it, under the event type that
//! Beacon names, so a node cannot make up events that other Triggers react to, nor
//! speak for a Beacon that runs elsewhere. What the check saw is the node's word: it
//! goes into the event's data beside `beacon` and `state`, which the master sets.

use serde_json::{Map, Value};
use weft_taskbook::objects::{cleared_event_type, AnyObject, BeaconAssignment, BeaconSpec, Kind};

use super::events::NewEvent;
use super::node_registry::{NodeRecord, NodeRegistry, NodeRegistryError};
use super::objects::{ObjectError, ObjectRegistry, OBJECTS_PREFIX};
use super::record::CorruptRecord;
use crate::store::Store;

/// Keys under this prefix changing may change what nodes run.
pub fn beacon_inputs_prefixes() -> [String; 2] {
    [
        format!("{OBJECTS_PREFIX}beacon/"),
        format!("{OBJECTS_PREFIX}nodegroup/"),
    ]
}

/// A node's report that one of its beacons fired or cleared.
#[derive(Debug, Clone, PartialEq)]
pub struct BeaconReport {
    pub namespace: String,
    pub beacon: String,
    pub fired: bool,
    pub data: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum BeaconError {
    #[error("node `{node}` reported for Beacon {namespace}/{beacon}, which does not exist (deleted since?)")]
    Unknown {
        node: String,
        namespace: String,
        beacon: String,
    },
    #[error("node `{node}` reported for Beacon {namespace}/{beacon}, which does not select it (only the nodes a Beacon runs on report for it)")]
    NotSelected {
        node: String,
        namespace: String,
        beacon: String,
    },
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Nodes(#[from] NodeRegistryError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
}

#[derive(Clone)]
pub struct BeaconPlanner<S> {
    objects: ObjectRegistry<S>,
    nodes: NodeRegistry<S>,
}

impl<S: Store + Clone> BeaconPlanner<S> {
    pub fn new(objects: ObjectRegistry<S>, nodes: NodeRegistry<S>) -> Self {
        BeaconPlanner { objects, nodes }
    }

    /// The node's record and facts, as Beacons select by them; `None` for a node that
    /// has not joined.
    async fn node(&self, node_name: &str) -> Result<Option<(NodeRecord, Value)>, BeaconError> {
        let Some(node) = self.nodes.get(node_name).await? else {
            return Ok(None);
        };
        let facts = self
            .nodes
            .facts(node_name)
            .await?
            .map_or(Value::Null, |f| f.facts);
        Ok(Some((node, facts)))
    }

    /// Whether `beacon` runs on `node`: its `nodes` select it. A Beacon for a group
    /// that does not exist runs nowhere.
    async fn selects(
        &self,
        beacon: &BeaconSpec,
        (node, facts): &(NodeRecord, Value),
    ) -> Result<bool, BeaconError> {
        let group = match &beacon.nodes.group {
            Some(group) => match self.objects.node_group(group).await? {
                Some(group) => Some(group),
                None => return Ok(false),
            },
            None => None,
        };
        Ok(beacon
            .nodes
            .selects(&node.node_name, &node.labels, facts, group.as_ref()))
    }

    /// The Beacons `node_name` runs, in every namespace.
    pub async fn beacons_for(&self, node_name: &str) -> Result<Vec<BeaconAssignment>, BeaconError> {
        let Some(node) = self.node(node_name).await? else {
            return Ok(Vec::new());
        };
        let mut assignments = Vec::new();
        for stored in self.objects.list(Kind::Beacon, None).await? {
            let AnyObject::Beacon(beacon) = stored.object()? else {
                continue;
            };
            // The stored document may leave the namespace to the default.
            let namespace = stored.record.namespace.clone().unwrap_or_default();
            if self.selects(&beacon.spec, &node).await? {
                let BeaconSpec {
                    interval,
                    check,
                    event,
                    ..
                } = beacon.spec;
                assignments.push(BeaconAssignment {
                    namespace,
                    name: beacon.metadata.name,
                    interval,
                    check,
                    event,
                });
            }
        }
        Ok(assignments)
    }

    /// The event a node's report stands for: `<event>` when the check fired,
    /// `<event>.cleared` when it cleared; the data says which beacon and what it saw.
    pub async fn event_for(
        &self,
        node_name: &str,
        report: BeaconReport,
    ) -> Result<NewEvent, BeaconError> {
        let stored = self
            .objects
            .get(Kind::Beacon, Some(&report.namespace), &report.beacon)
            .await?;
        let Some(AnyObject::Beacon(beacon)) = stored.map(|s| s.object()).transpose()? else {
            return Err(BeaconError::Unknown {
                node: node_name.to_string(),
                namespace: report.namespace,
                beacon: report.beacon,
            });
        };
        let selected = match self.node(node_name).await? {
            Some(node) => self.selects(&beacon.spec, &node).await?,
            None => false,
        };
        if !selected {
            return Err(BeaconError::NotSelected {
                node: node_name.to_string(),
                namespace: report.namespace,
                beacon: report.beacon,
            });
        }
        let event_type = if report.fired {
            beacon.spec.event.clone()
        } else {
            cleared_event_type(&beacon.spec.event)
        };
        // The master's own fields go in last: a node cannot set them.
        let mut data = report.data;
        data.insert("beacon".into(), report.beacon.into());
        data.insert(
            "state".into(),
            if report.fired { "fired" } else { "cleared" }.into(),
        );
        Ok(NewEvent {
            event_type,
            namespace: report.namespace,
            data,
            ..NewEvent::default()
        }
        .from_node(node_name))
    }
}
