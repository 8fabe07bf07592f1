//! Cluster objects (`weft apply`, `weft get`, `weft delete`): Namespaces, NodeGroups,
//! Config, variables, Secrets, stored TaskBooks and the rest of the object model, under
//! `/objects/<kind>/<name>` (cluster-wide kinds) or `/objects/<kind>/<namespace>/<name>`.
//!
//! An object is kept as the document it was applied as, written out again from its
//! tree so that it reads back exactly as it did in its file, without the metadata
//! the master owns (uuid, generation, resource_version), which live beside it. A
//! resource version is the store revision that last changed the object; an apply that
//! carries one is refused when the object has changed since (optimistic concurrency).
//! A Secret's values are sealed with the cluster key before they reach the store.

mod apply;
mod secrets;

pub use apply::{Applied, ApplyAction, MAX_OBJECTS_PER_APPLY};

use std::collections::BTreeSet;
use std::path::Path;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_taskbook::cluster_vars::VarSources;
use weft_taskbook::objects::{parse_object, AnyObject, ConfigSpec, Kind, NodeGroupSpec};
use weft_taskbook::report::unix_ms_now;
use weft_taskbook::yaml::{parse_documents, Node};
use weft_taskbook::Error;

use super::record::{decode, encode, CorruptRecord};
use super::secret_box::{SecretBox, SecretBoxError};
use crate::store::{Precondition, Store, StoreError};

pub const OBJECTS_PREFIX: &str = "/objects/";
pub const DEFAULT_NAMESPACE: &str = "default";
/// Always there: `default` for objects applied without a namespace, `system` for the
/// cluster's own events.
pub const BUILTIN_NAMESPACES: [&str; 2] = [DEFAULT_NAMESPACE, "system"];
/// What `weft get` prints instead of a secret value, and what `weft apply` refuses as
/// one (it is a `weft get` output applied back, not a password).
pub use weft_taskbook::secrets::MASK as SECRET_MASK;
/// What the master keeps of an object besides its store revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub kind: Kind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub uuid: String,
    pub generation: u64,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
    /// The document as applied, without the master's metadata; Secret values sealed.
    pub document: String,
}

/// An object as stored, with the revision that last changed it.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub record: ObjectRecord,
    pub resource_version: u64,
    key: String,
}

impl StoredObject {
    fn corrupt(&self, reason: String) -> CorruptRecord {
        CorruptRecord {
            key: self.key.clone(),
            reason,
        }
    }

    /// The document's tree.
    pub fn root(&self) -> Result<Node, CorruptRecord> {
        let mut documents = parse_documents(&self.record.document, Path::new(&self.key))
            .map_err(|e| self.corrupt(e.to_string()))?;
        match documents.len() {
            1 => Ok(documents.remove(0).root),
            count => Err(self.corrupt(format!("{count} documents instead of one"))),
        }
    }

    /// The typed object (a Secret's values still sealed).
    pub fn object(&self) -> Result<AnyObject, CorruptRecord> {
        parse_object(&self.root()?).map_err(|e| self.corrupt(e.to_string()))
    }

    /// The object as users see it: its document as JSON with the master's metadata,
    /// and every secret value masked.
    pub fn to_json(&self) -> Result<Value, CorruptRecord> {
        let mut json = self.root()?.to_json();
        let record = &self.record;
        if let Some(metadata) = json.get_mut("metadata").and_then(Value::as_object_mut) {
            if let Some(namespace) = &record.namespace {
                metadata.insert("namespace".into(), namespace.clone().into());
            }
            metadata.insert("uuid".into(), record.uuid.clone().into());
            metadata.insert("generation".into(), record.generation.into());
            metadata.insert(
                "resource_version".into(),
                self.resource_version.to_string().into(),
            );
        }
        if record.kind == Kind::Secret {
            if let Some(data) = json
                .pointer_mut("/spec/data")
                .and_then(Value::as_object_mut)
            {
                for value in data.values_mut() {
                    *value = SECRET_MASK.into();
                }
            }
        }
        Ok(json)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// Positioned in the applied file: nothing was stored.
    #[error("{0}")]
    Invalid(Error),
    #[error("{kind} `{name}` changed since it was read (resource_version {given}, now {current}): nothing was applied; `weft get` it again, redo the change and apply that")]
    Stale {
        kind: Kind,
        name: String,
        given: u64,
        current: u64,
    },
    #[error("no {kind} `{name}`{}", in_namespace(.namespace))]
    NotFound {
        kind: Kind,
        namespace: Option<String>,
        name: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("the object store failed: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Corrupt(#[from] CorruptRecord),
    #[error(transparent)]
    Secret(#[from] SecretBoxError),
}

fn in_namespace(namespace: &Option<String>) -> String {
    namespace
        .as_ref()
        .map(|ns| format!(" in namespace `{ns}`"))
        .unwrap_or_default()
}

/// The key of an object; `namespace` is ignored for cluster-wide kinds.
pub fn object_key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    let prefix = kind_prefix(kind);
    match namespace.filter(|_| kind.is_namespaced()) {
        Some(namespace) => format!("{prefix}{namespace}/{name}"),
        None => format!("{prefix}{name}"),
    }
}

/// Where objects of `kind` are kept: `/objects/nodegroup/`.
fn kind_prefix(kind: Kind) -> String {
    format!("{OBJECTS_PREFIX}{}/", kind.name().to_ascii_lowercase())
}

/// The namespace an object of `kind` lives in: `default` when none is named.
pub fn namespace_for(kind: Kind, namespace: Option<&str>) -> Option<String> {
    kind.is_namespaced()
        .then(|| namespace.unwrap_or(DEFAULT_NAMESPACE).to_string())
}

#[derive(Clone)]
pub struct ObjectRegistry<S> {
    store: S,
    secret_box: SecretBox,
}

impl<S: Store> ObjectRegistry<S> {
    pub fn new(store: S, secret_box: SecretBox) -> Self {
        ObjectRegistry { store, secret_box }
    }

    /// Creates `default` and `system` where they are missing.
    pub async fn ensure_builtin_namespaces(&self) -> Result<(), ObjectError> {
        for name in BUILTIN_NAMESPACES {
            let key = object_key(Kind::Namespace, None, name);
            if self.store.get(&key).await?.is_some() {
                continue;
            }
            let document = format!(
                "apiVersion: weft/v1\nkind: Namespace\nmetadata:\n  name: {name}\nspec: {{}}\n"
            );
            let record = new_record(Kind::Namespace, name, None, document, None);
            match self
                .store
                .put(&key, encode(&record), Precondition::Absent)
                .await
            {
                // Another master made it first.
                Ok(_) | Err(StoreError::Conflict { .. }) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<Option<StoredObject>, ObjectError> {
        let Some(entry) = self.store.get(key).await? else {
            return Ok(None);
        };
        Ok(Some(StoredObject {
            record: decode(&entry)?,
            resource_version: entry.mod_revision,
            key: entry.key,
        }))
    }

    pub async fn get(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<StoredObject>, ObjectError> {
        let namespace = namespace_for(kind, namespace);
        self.read(&object_key(kind, namespace.as_deref(), name))
            .await
    }

    /// Objects of `kind`, by name; a namespaced kind in every namespace when
    /// `namespace` is `None`.
    pub async fn list(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<StoredObject>, ObjectError> {
        let mut prefix = kind_prefix(kind);
        if let Some(namespace) = namespace.filter(|_| kind.is_namespaced()) {
            prefix.push_str(namespace);
            prefix.push('/');
        }
        self.store
            .list(&prefix)
            .await?
            .into_iter()
            .map(|entry| {
                Ok(StoredObject {
                    record: decode(&entry)?,
                    resource_version: entry.mod_revision,
                    key: entry.key,
                })
            })
            .collect()
    }

    /// Deletes one object; `false` when there was none. The built-in namespaces, and
    /// namespaces that still hold objects, are refused.
    pub async fn delete(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<bool, ObjectError> {
        if kind == Kind::Namespace {
            if BUILTIN_NAMESPACES.contains(&name) {
                return Err(ObjectError::Refused(format!(
                    "namespace `{name}` is built in and cannot be deleted"
                )));
            }
            let mut held = Vec::new();
            for &namespaced_kind in Kind::ALL.iter().filter(|kind| kind.is_namespaced()) {
                for object in self.list(namespaced_kind, Some(name)).await? {
                    held.push(format!("{namespaced_kind}/{}", object.record.name));
                }
            }
            if !held.is_empty() {
                return Err(ObjectError::Refused(format!(
                    "namespace `{name}` still holds {}: delete them first",
                    held.join(", ")
                )));
            }
        }
        let namespace = namespace_for(kind, namespace);
        let key = object_key(kind, namespace.as_deref(), name);
        Ok(self.store.delete(&key, Precondition::None).await?.is_some())
    }

    /// Every object a node's cluster variables in `namespace` come from.
    pub async fn var_sources(&self, namespace: &str) -> Result<VarSources, ObjectError> {
        let typed = |stored: Vec<StoredObject>| -> Result<Vec<(String, AnyObject)>, ObjectError> {
            stored
                .into_iter()
                .map(|object| Ok((object.record.name.clone(), object.object()?)))
                .collect()
        };
        let mut sources = VarSources {
            namespace: namespace.to_string(),
            ..Default::default()
        };
        for (name, object) in typed(self.list(Kind::Config, None).await?)? {
            if let AnyObject::Config(config) = object {
                sources.configs.push((name, config.spec));
            }
        }
        let mut bound = BTreeSet::new();
        for (_, object) in typed(self.list(Kind::ClusterVariablesBinding, None).await?)? {
            if let AnyObject::ClusterVariablesBinding(binding) = object {
                if binding.spec.namespaces.iter().any(|ns| ns == namespace) {
                    bound.insert(binding.spec.cluster_variables);
                }
            }
        }
        for (name, object) in typed(self.list(Kind::ClusterVariables, None).await?)? {
            if let AnyObject::ClusterVariables(variables) = object {
                if bound.contains(&name) {
                    sources.cluster_variables.push((name, variables.spec));
                }
            }
        }
        for (name, object) in typed(self.list(Kind::Variables, Some(namespace)).await?)? {
            if let AnyObject::Variables(variables) = object {
                sources.variables.push((name, variables.spec));
            }
        }
        for (name, object) in typed(self.list(Kind::NodeGroup, None).await?)? {
            if let AnyObject::NodeGroup(group) = object {
                sources.node_groups.insert(name, group.spec);
            }
        }
        Ok(sources)
    }

    /// A NodeGroup's spec, `None` when there is no such group.
    pub async fn node_group(&self, name: &str) -> Result<Option<NodeGroupSpec>, ObjectError> {
        match self.get(Kind::NodeGroup, None, name).await? {
            Some(stored) => match stored.object()? {
                AnyObject::NodeGroup(group) => Ok(Some(group.spec)),
                _ => Ok(None),
            },
            None => Ok(None),
        }
    }

    /// The Config's default lifetime of bootstrap tokens, if one sets it.
    pub async fn token_ttl(&self) -> Result<Option<std::time::Duration>, ObjectError> {
        Ok(self
            .config_value(|spec| spec.token_ttl)
            .await?
            .map(|ttl| ttl.0))
    }

    pub async fn max_events(&self) -> Result<Option<u32>, ObjectError> {
        self.config_value(|spec| spec.max_events).await
    }

    /// The first Config (by name) that sets the value.
    async fn config_value<T>(
        &self,
        pick: impl Fn(ConfigSpec) -> Option<T>,
    ) -> Result<Option<T>, ObjectError> {
        for config in self.list(Kind::Config, None).await? {
            if let AnyObject::Config(config) = config.object()? {
                if let Some(value) = pick(config.spec) {
                    return Ok(Some(value));
                }
            }
        }
        Ok(None)
    }
}

fn new_record(
    kind: Kind,
    name: &str,
    namespace: Option<String>,
    document: String,
    previous: Option<&ObjectRecord>,
) -> ObjectRecord {
    let now = unix_ms_now();
    ObjectRecord {
        kind,
        name: name.to_string(),
        namespace,
        uuid: previous.map_or_else(new_uuid, |p| p.uuid.clone()),
        generation: previous.map_or(1, |p| p.generation + 1),
        created_unix_ms: previous.map_or(now, |p| p.created_unix_ms),
        updated_unix_ms: now,
        document,
    }
}

/// A random (version 4) UUID.
fn new_uuid() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests;
