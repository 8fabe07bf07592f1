//! `weft apply`: checking objects read from files and writing them all in one store
//! transaction.

use std::collections::BTreeSet;
use std::path::PathBuf;

use weft_taskbook::objects::{AnyObject, Kind, SourcedObject};
use weft_taskbook::yaml::{Node, NodeValue};
use weft_taskbook::Error;

use super::secrets::for_each_secret_value;
use super::{namespace_for, new_record, object_key, ObjectError, ObjectRegistry, SECRET_MASK};
use crate::core::record::encode;
use crate::store::{Operation, Precondition, Store, StoreError};

/// Most objects one apply may carry; each is also bounded by the store's write limit.
pub const MAX_OBJECTS_PER_APPLY: usize = 500;
/// Applies without a resource version retry this often when a concurrent write won.
const APPLY_ATTEMPTS: usize = 3;

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

/// An object read from a file, checked and ready to store.
pub(super) struct Prepared {
    kind: Kind,
    pub(super) name: String,
    pub(super) namespace: Option<String>,
    /// Without the master's metadata; Secret values quoted (they are strings).
    pub(super) root: Node,
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

impl<S: Store> ObjectRegistry<S> {
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

pub(super) fn child_mut<'a>(node: &'a mut Node, key: &str) -> Option<&'a mut Node> {
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
