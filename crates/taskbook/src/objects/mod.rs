//! The k8s-style envelope every weft object shares, and reading objects from YAML.

mod beacon;
mod config;
mod cron_job;
mod event;
mod git_repository;
mod kind;
mod namespace;
mod node;
mod secret;
mod trigger;
mod validate;
pub use validate::{is_event_type, MAX_EVENT_TYPE_BYTES};
mod variables;

pub use beacon::{cleared_event_type, BeaconAssignment, BeaconCheck, BeaconSpec};
pub use config::{ConfigSpec, JobRetention};
pub use cron_job::{ConcurrencyPolicy, CronJobSpec};
pub use event::EventSpec;
pub use git_repository::{validate_git_url, GitRepositorySpec, OnPush};
pub use kind::{AnyObject, Kind, UnknownKind};
pub use namespace::NamespaceSpec;
pub use node::{NodeGroupSpec, NodeSpec};
pub use secret::{SecretKeyRef, SecretSpec};
pub use trigger::{EventMatch, TriggerCondition, TriggerRun, TriggerSpec, TriggerTarget};
pub use variables::{ClusterVariablesBindingSpec, ComputedVariable, VariablesSpec};

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{unknown_name_hint, Error, PathSegment, Result};
use crate::yaml::{parse_documents, Node};

pub const API_VERSION: &str = "weft/v1";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Set by the master when it accepts the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// An object of one kind: envelope plus typed spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Object<S> {
    pub api_version: String,
    pub kind: Kind,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: S,
}

/// An object with the file and document it came from.
#[derive(Debug, Clone)]
pub struct SourcedObject {
    pub object: AnyObject,
    pub file: std::path::PathBuf,
    pub document_index: usize,
    /// The document as read, for positions and for storing it as written.
    pub root: Node,
}

/// Reads every object in a YAML stream (documents separated by `---`).
pub fn parse_objects(source: &str, file: &Path) -> Result<Vec<SourcedObject>> {
    let documents = parse_documents(source, file)?;
    let mut objects = Vec::with_capacity(documents.len());
    for (document_index, document) in documents.iter().enumerate() {
        let object = parse_object(&document.root).map_err(|e| e.at(document.span).in_file(file))?;
        objects.push(SourcedObject {
            object,
            file: file.to_path_buf(),
            document_index,
            root: document.root.clone(),
        });
    }
    Ok(objects)
}

/// Reads one object from its document root, dispatching on `kind`.
pub fn parse_object(root: &Node) -> Result<AnyObject> {
    if root.get("apiVersion").is_none() && root.get("kind").is_none() {
        return Err(Error::new(format!(
            "expected a weft object (a mapping with apiVersion, kind, metadata, spec), found {}",
            root.kind_name()
        ))
        .at(root.span)
        .with_hint(format!(
            "start the document with `apiVersion: {API_VERSION}` and `kind: TaskBook`"
        )));
    }
    let api_version = required_scalar(root, "apiVersion")?;
    if api_version.scalar() != Some(API_VERSION) {
        return Err(Error::new(format!(
            "unsupported apiVersion `{}`",
            api_version.scalar().unwrap_or_default()
        ))
        .at(api_version.span)
        .under(PathSegment::Key("apiVersion".into()))
        .with_hint(format!("this weft reads `apiVersion: {API_VERSION}`")));
    }
    let kind_node = required_scalar(root, "kind")?;
    let name = kind_node.scalar().unwrap_or_default();
    let Some(kind) = Kind::from_exact_name(name) else {
        return Err(Error::new(format!("unknown kind `{name}`"))
            .at(kind_node.span)
            .under(PathSegment::Key("kind".into()))
            .with_hint(unknown_name_hint(name, Kind::NAMES)));
    };
    let object = AnyObject::from_node(kind, root)?;
    validate_metadata(root, &object)?;
    validate::validate_spec(root, &object)?;
    Ok(object)
}

fn required_scalar<'a>(root: &'a Node, key: &str) -> Result<&'a Node> {
    match root.get(key) {
        Some(node) if node.scalar().is_some() => Ok(node),
        Some(node) => Err(
            Error::new(format!("expected a string, found {}", node.kind_name()))
                .at(node.span)
                .under(PathSegment::Key(key.into())),
        ),
        None => Err(Error::new(format!("missing required key `{key}`")).at(root.span)),
    }
}

/// Names follow DNS label rules, as in Kubernetes, so they work in paths, URLs and keys.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid name: use 1 to 63 lowercase letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
        ))
    }
}

/// Most labels one object (or joining node) may carry.
pub const MAX_LABELS: usize = 64;

/// Labels as Kubernetes bounds them: keys of up to 63 letters, digits, `-`, `_`, `.`
/// (with an optional `prefix/`), values of up to 63 of the same, possibly empty.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels are more than the limit of {MAX_LABELS}",
            labels.len()
        ));
    }
    let label_chars = |text: &str| {
        text.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    for (key, value) in labels {
        let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
        if name.is_empty()
            || name.len() > 63
            || !label_chars(name)
            || prefix.len() > 253
            || !label_chars(prefix)
        {
            return Err(format!(
                "label key `{key}` is not valid: use up to 63 letters, digits, `-`, `_` or `.`, optionally after a `prefix/`"
            ));
        }
        if value.len() > 63 || !label_chars(value) {
            return Err(format!(
                "label `{key}` has an invalid value `{value}`: use up to 63 letters, digits, `-`, `_` or `.`"
            ));
        }
    }
    Ok(())
}

fn validate_metadata(root: &Node, object: &AnyObject) -> Result<()> {
    let metadata = object.metadata();
    let metadata_node = root.get("metadata").unwrap_or(root);
    let field_error = |key: &str, message: String| {
        let node = metadata_node.get(key).unwrap_or(metadata_node);
        Error::new(message)
            .at(node.span)
            .under(PathSegment::Key(key.into()))
            .under(PathSegment::Key("metadata".into()))
    };
    validate_name(&metadata.name).map_err(|m| field_error("name", m))?;
    match (&metadata.namespace, object.kind().is_namespaced()) {
        (Some(namespace), true) => {
            validate_name(namespace).map_err(|m| field_error("namespace", m))
        }
        (Some(_), false) => Err(field_error(
            "namespace",
            format!("a {} is cluster-wide and has no namespace", object.kind()),
        )
        .with_hint("remove `metadata.namespace`")),
        (None, _) => Ok(()),
    }
}
