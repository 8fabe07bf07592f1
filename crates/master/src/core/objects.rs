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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use weft_taskbook::cluster_vars::VarSources;
use weft_taskbook::objects::{
    parse_object, AnyObject, ConfigSpec, Kind, NodeGroupSpec, SourcedObject,
};
use weft_taskbook::report::unix_ms_now;
use weft_taskbook::yaml::{parse_documents, Node, NodeValue};
use weft_taskbook::Error;

use super::record::{decode, encode, CorruptRecord};
use super::secret_box::{SecretBox, SecretBoxError};
use crate::store::{Operation, Precondition, Store, StoreError};

pub const OBJECTS_PREFIX: &str = "/objects/";
pub const DEFAULT_NAMESPACE: &str = "default";
/// Always there: `default` for objects applied without a namespace, `system` for the
/// cluster's own events.
pub const BUILTIN_NAMESPACES: [&str; 2] = [DEFAULT_NAMESPACE, "system"];
/// What `weft get` prints instead of a secret value, and what `weft apply` refuses as
/// one (it is a `weft get` output applied back, not a password).
pub use weft_taskbook::secrets::MASK as SECRET_MASK;
/// Most objects one apply may carry; each is also bounded by the store's write limit.
pub const MAX_OBJECTS_PER_APPLY: usize = 500;
/// Applies without a resource version retry this often when a concurrent write won.
const APPLY_ATTEMPTS: usize = 3;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyAction {
    Created,
    Configured,
    Unchanged,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Configured => "configured",
            ApplyAction::Unchanged => "unchanged",
        }
    }
}

/// What one apply did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
    pub action: ApplyAction,
    pub generation: u64,
    pub resource_version: u64,
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

/// An object read from a file, checked and ready to store.
struct Prepared {
    kind: Kind,
    name: String,
    namespace: Option<String>,
    /// Without the master's metadata; Secret values quoted (they are strings).
    root: Node,
    given_resource_version: Option<u64>,
    file: PathBuf,
    /// The object as typed, for reference checks.
    object: AnyObject,
}

impl Prepared {
    fn key(&self) -> String {
        object_key(self.kind, self.namespace.as_deref(), &self.name)
    }

    /// An error at a field of this object's document.
    fn error_at(&self, path: &[&str], message: impl Into<String>) -> Error {
        let mut node = &self.root;
        for key in path {
            match node.get(key) {
                Some(child) => node = child,
                None => break,
            }
        }
        let mut error = Error::new(message).at(node.span).in_file(&self.file);
        for key in path.iter().rev() {
            error = error.under(weft_taskbook::error::PathSegment::Key(key.to_string()));
        }
        error
    }
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

    /// Creates or updates every object, all in one store transaction or not at all.
    /// With `dry_run`, checks everything and reports what would happen.
    pub async fn apply(
        &self,
        objects: Vec<SourcedObject>,
        dry_run: bool,
    ) -> Result<Vec<Applied>, ObjectError> {
        if objects.len() > MAX_OBJECTS_PER_APPLY {
            return Err(ObjectError::Refused(format!(
                "{} objects in one apply, more than the {MAX_OBJECTS_PER_APPLY} allowed: apply them in parts",
                objects.len()
            )));
        }
        let prepared = objects
            .into_iter()
            .map(prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = BTreeSet::new();
        for object in &prepared {
            if !seen.insert(object.key()) {
                return Err(ObjectError::Invalid(object.error_at(
                    &["metadata", "name"],
                    format!(
                        "{} `{}` appears twice in this apply",
                        object.kind, object.name
                    ),
                )));
            }
        }
        self.check_references(&prepared).await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.write(&prepared, dry_run).await {
                Err(ObjectError::Store(StoreError::Conflict { .. }))
                    if attempt < APPLY_ATTEMPTS
                        && prepared.iter().all(|p| p.given_resource_version.is_none()) => {}
                Err(ObjectError::Store(StoreError::Conflict { key })) => {
                    return Err(ObjectError::Refused(format!(
                        "{key} was changed by someone else during this apply: nothing was applied; apply again"
                    )))
                }
                other => return other,
            }
        }
    }

    /// Namespaces and bound ClusterVariables must exist, in the store or in this apply.
    async fn check_references(&self, prepared: &[Prepared]) -> Result<(), ObjectError> {
        let applied_names = |kind: Kind| -> BTreeSet<String> {
            prepared
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| p.name.clone())
                .collect()
        };
        let mut namespaces = applied_names(Kind::Namespace);
        namespaces.extend(self.names(Kind::Namespace).await?);
        let mut cluster_variables = applied_names(Kind::ClusterVariables);
        cluster_variables.extend(self.names(Kind::ClusterVariables).await?);
        let create_hint = |what: Kind, name: &str| {
            format!("create it first (`weft apply` a {what} named `{name}`), or put it in the same apply")
        };
        for object in prepared {
            if let Some(namespace) = object
                .namespace
                .as_ref()
                .filter(|ns| !namespaces.contains(*ns))
            {
                return Err(ObjectError::Invalid(
                    object
                        .error_at(
                            &["metadata", "namespace"],
                            format!("namespace `{namespace}` does not exist"),
                        )
                        .with_hint(create_hint(Kind::Namespace, namespace)),
                ));
            }
            if let AnyObject::ClusterVariablesBinding(binding) = &object.object {
                let spec = &binding.spec;
                if !cluster_variables.contains(&spec.cluster_variables) {
                    return Err(ObjectError::Invalid(
                        object
                            .error_at(
                                &["spec", "cluster_variables"],
                                format!(
                                    "ClusterVariables `{}` does not exist",
                                    spec.cluster_variables
                                ),
                            )
                            .with_hint(create_hint(
                                Kind::ClusterVariables,
                                &spec.cluster_variables,
                            )),
                    ));
                }
                if let Some(missing) = spec.namespaces.iter().find(|ns| !namespaces.contains(*ns)) {
                    return Err(ObjectError::Invalid(
                        object
                            .error_at(
                                &["spec", "namespaces"],
                                format!(
                                    "the binding names namespace `{missing}`, which does not exist"
                                ),
                            )
                            .with_hint(create_hint(Kind::Namespace, missing)),
                    ));
                }
            }
        }
        Ok(())
    }

    async fn names(&self, kind: Kind) -> Result<Vec<String>, ObjectError> {
        Ok(self
            .list(kind, None)
            .await?
            .into_iter()
            .map(|object| object.record.name)
            .collect())
    }

    async fn write(
        &self,
        prepared: &[Prepared],
        dry_run: bool,
    ) -> Result<Vec<Applied>, ObjectError> {
        let mut operations = Vec::new();
        let mut outcomes = Vec::new();
        for object in prepared {
            let key = object.key();
            let current = self.read(&key).await?;
            if let Some(given) = object.given_resource_version {
                let current_version = current.as_ref().map_or(0, |c| c.resource_version);
                if current_version != given {
                    return Err(ObjectError::Stale {
                        kind: object.kind,
                        name: object.name.clone(),
                        given,
                        current: current_version,
                    });
                }
            }
            let document = object.root.to_yaml();
            let unchanged = match &current {
                Some(current) => self.opened_document(current)? == document,
                None => false,
            };
            let action = match (&current, unchanged) {
                (None, _) => ApplyAction::Created,
                (Some(_), false) => ApplyAction::Configured,
                (Some(_), true) => ApplyAction::Unchanged,
            };
            let mut applied = Applied {
                kind: object.kind,
                namespace: object.namespace.clone(),
                name: object.name.clone(),
                action,
                generation: current.as_ref().map_or(0, |c| c.record.generation),
                resource_version: current.as_ref().map_or(0, |c| c.resource_version),
            };
            if !unchanged {
                let stored_document = match object.kind {
                    Kind::Secret => self.seal_secret(object)?,
                    _ => document,
                };
                let record = new_record(
                    object.kind,
                    &object.name,
                    object.namespace.clone(),
                    stored_document,
                    current.as_ref().map(|c| &c.record),
                );
                applied.generation = record.generation;
                operations.push(Operation::Put {
                    key,
                    value: encode(&record),
                    precondition: current.as_ref().map_or(Precondition::Absent, |c| {
                        Precondition::ModRevision(c.resource_version)
                    }),
                });
            }
            outcomes.push(applied);
        }
        if dry_run || operations.is_empty() {
            return Ok(outcomes);
        }
        let revision = self.store.transaction(operations).await?;
        for applied in outcomes
            .iter_mut()
            .filter(|a| a.action != ApplyAction::Unchanged)
        {
            applied.resource_version = revision;
        }
        Ok(outcomes)
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

    /// The Config's default lifetime of bootstrap tokens, if one sets it.
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

    /// The named Secrets of `namespace`, opened, as tasks read them: `{name: {key: value}}`.
    pub async fn open_secrets(
        &self,
        namespace: &str,
        names: &BTreeSet<String>,
    ) -> Result<Value, ObjectError> {
        let mut secrets = serde_json::Map::new();
        for name in names {
            let stored = self
                .get(Kind::Secret, Some(namespace), name)
                .await?
                .ok_or_else(|| ObjectError::NotFound {
                    kind: Kind::Secret,
                    namespace: Some(namespace.to_string()),
                    name: name.clone(),
                })?;
            let opened = self.open_secret(&stored)?;
            secrets.insert(
                name.clone(),
                serde_json::to_value(opened).expect("strings serialize"),
            );
        }
        Ok(Value::Object(secrets))
    }

    /// A Secret's values, opened: for the master alone, when it sends a task that reads them.
    pub fn open_secret(
        &self,
        secret: &StoredObject,
    ) -> Result<BTreeMap<String, String>, ObjectError> {
        let AnyObject::Secret(object) = secret.object()? else {
            return Err(secret.corrupt("not a Secret".into()).into());
        };
        object
            .spec
            .data
            .iter()
            .map(|(key, sealed)| {
                let aad = secret_aad(secret.record.namespace.as_deref(), &secret.record.name, key);
                Ok((key.clone(), self.secret_box.open(&aad, sealed)?))
            })
            .collect()
    }

    /// The stored document with any secret values opened, to compare with a new one.
    fn opened_document(&self, current: &StoredObject) -> Result<String, ObjectError> {
        if current.record.kind != Kind::Secret {
            return Ok(current.record.document.clone());
        }
        let opened = self.open_secret(current)?;
        let mut root = current.root()?;
        for_each_secret_value(&mut root, |key, value| {
            *value = opened.get(key).cloned().unwrap_or_default();
        });
        Ok(root.to_yaml())
    }

    fn seal_secret(&self, object: &Prepared) -> Result<String, ObjectError> {
        let mut root = object.root.clone();
        for_each_secret_value(&mut root, |key, value| {
            let aad = secret_aad(object.namespace.as_deref(), &object.name, key);
            *value = self.secret_box.seal(&aad, value);
        });
        Ok(root.to_yaml())
    }
}

fn secret_aad(namespace: Option<&str>, name: &str, key: &str) -> String {
    format!("{}/{name}/{key}", namespace.unwrap_or(DEFAULT_NAMESPACE))
}

/// Every value under `spec.data`, by key, made a quoted string.
fn for_each_secret_value(root: &mut Node, mut change: impl FnMut(&str, &mut String)) {
    let Some(data) = child_mut(root, "spec").and_then(|spec| child_mut(spec, "data")) else {
        return;
    };
    if let NodeValue::Mapping(entries) = &mut data.value {
        for (key, value) in entries {
            if let NodeValue::Scalar { text, quoted } = &mut value.value {
                change(key.scalar().unwrap_or_default(), text);
                *quoted = true;
            }
        }
    }
}

fn child_mut<'a>(node: &'a mut Node, key: &str) -> Option<&'a mut Node> {
    match &mut node.value {
        NodeValue::Mapping(entries) => entries
            .iter_mut()
            .find(|(k, _)| k.scalar() == Some(key))
            .map(|(_, value)| value),
        _ => None,
    }
}

fn remove_child(node: &mut Node, key: &str) -> Option<Node> {
    match &mut node.value {
        NodeValue::Mapping(entries) => {
            let index = entries.iter().position(|(k, _)| k.scalar() == Some(key))?;
            Some(entries.remove(index).1)
        }
        _ => None,
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

/// Checks what only the master decides about an object, and takes off the metadata
/// it owns.
fn prepare(sourced: SourcedObject) -> Result<Prepared, ObjectError> {
    let SourcedObject {
        object, file, root, ..
    } = sourced;
    let kind = object.kind();
    let metadata = object.metadata().clone();
    let mut prepared = Prepared {
        namespace: namespace_for(kind, metadata.namespace.as_deref()),
        name: metadata.name.clone(),
        kind,
        root,
        given_resource_version: None,
        file,
        object,
    };
    let refuse = |prepared: &Prepared, path: &[&str], message: &str, hint: &str| {
        Err(ObjectError::Invalid(
            prepared.error_at(path, message).with_hint(hint),
        ))
    };
    match prepared.kind {
        Kind::Node => {
            return refuse(
                &prepared,
                &["kind"],
                "Nodes are registered by `weft minion join`, not applied",
                "change a node's labels with `weft node label NODE key=value`",
            )
        }
        Kind::Event => {
            return refuse(
                &prepared,
                &["kind"],
                "Events are made by the cluster (beacons, jobs, nodes), not applied",
                "to react to events, apply a Trigger",
            )
        }
        _ => {}
    }
    if let Some(version) = &metadata.resource_version {
        match version.parse() {
            Ok(version) => prepared.given_resource_version = Some(version),
            Err(_) => {
                return refuse(
                    &prepared,
                    &["metadata", "resource_version"],
                    &format!("resource_version `{version}` is not a number"),
                    "use the resource_version `weft get -o yaml` printed, or leave it out",
                )
            }
        }
    }
    if let AnyObject::Secret(secret) = &prepared.object {
        if secret.spec.data.values().any(|value| value == SECRET_MASK) {
            return refuse(
                &prepared,
                &["spec", "data"],
                &format!("a secret value is `{SECRET_MASK}`, the mask `weft get` prints"),
                "put the real values back before applying a Secret that `weft get` printed",
            );
        }
    }
    if let Some(metadata_node) = child_mut(&mut prepared.root, "metadata") {
        for owned in ["uuid", "generation", "resource_version"] {
            remove_child(metadata_node, owned);
        }
    }
    // Secret values are strings whatever their YAML style; quoting them all makes an
    // unchanged Secret compare equal to its stored form.
    for_each_secret_value(&mut prepared.root, |_, _| {});
    Ok(prepared)
}

#[cfg(test)]
mod tests;
