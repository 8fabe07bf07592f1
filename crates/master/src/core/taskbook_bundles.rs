//! The TaskBook another object names (`taskbook: {name: web}`), as a Bundle to run.

use std::collections::BTreeMap;

use weft_modules::bundle::Bundle;
use weft_taskbook::taskbook::TaskBookRef;
use weft_taskbook::Error;

use super::job_runner::RunError;
use super::objects::ObjectRegistry;
use crate::store::Store;

/// The bundle, and the commit of each GitRepository it was read from.
pub async fn bundle_for<S: Store + Clone>(
    objects: &ObjectRegistry<S>,
    reference: &TaskBookRef,
    namespace: &str,
) -> Result<(Bundle, BTreeMap<String, String>), RunError> {
    let Some(name) = &reference.name else {
        return Err(RunError::Input(Error::new(
            "TaskBooks from a GitRepository (`{repo, path}`) are not supported by this master yet",
        )));
    };
    let stored = objects
        .get("TaskBook", Some(namespace), name)
        .await
        .map_err(|e| RunError::Objects(Box::new(e)))?
        .ok_or_else(|| {
            RunError::Input(
                Error::new(format!("there is no TaskBook {namespace}/{name}")).with_hint(
                    "`weft get taskbooks -n NAMESPACE` lists them; store one with `weft apply -f`",
                ),
            )
        })?;
    let file = format!("{name}.yml");
    let bundle = Bundle {
        files: [(file.clone(), stored.record.document.into_bytes().into())].into(),
        taskbook_file: file,
    };
    Ok((bundle, BTreeMap::new()))
}
