//! A minion's identity, kept in its data directory after `weft minion join`: its name
//! and labels, where the master is, the cluster CA and its own certificate and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_modules::state_file;
use weft_proto::credentials::ClientCredentials;
use weft_taskbook::Error;

use crate::mesh::MeshIdentity;

pub const IDENTITY_FILE: &str = "identity.yaml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinionIdentity {
    pub node_name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub credentials: ClientCredentials,
    /// Set when the cluster runs the mesh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshIdentity>,
}

pub fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

impl MinionIdentity {
    pub fn load(data_dir: &Path) -> Result<MinionIdentity, Error> {
        let path = identity_path(data_dir);
        if !path.exists() {
            return Err(Error::new(format!(
                "this node has not joined a cluster: {} does not exist",
                path.display()
            ))
            .with_hint("join first with `weft minion join --token TOKEN --data-dir DIR`"));
        }
        state_file::read(&path)
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::new(format!("cannot create the data directory: {e}")).in_file(data_dir)
        })?;
        state_file::write_private(&identity_path(data_dir), self)
    }
}
