//! A Secret's values: sealed with the cluster key before they reach the store, opened
//! only when the master sends a task that reads them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use weft_taskbook::objects::{AnyObject, Kind};
use weft_taskbook::yaml::{Node, NodeValue};

use super::apply::{child_mut, Prepared};
use super::{ObjectError, ObjectRegistry, StoredObject, DEFAULT_NAMESPACE};
use crate::store::Store;

impl<S: Store> ObjectRegistry<S> {
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
    pub(super) fn opened_document(&self, current: &StoredObject) -> Result<String, ObjectError> {
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

    pub(super) fn seal_secret(&self, object: &Prepared) -> Result<String, ObjectError> {
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
pub(super) fn for_each_secret_value(root: &mut Node, mut change: impl FnMut(&str, &mut String)) {
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
