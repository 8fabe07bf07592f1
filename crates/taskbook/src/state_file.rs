//! Files weft keeps for itself (identities, credentials, settings): YAML a person can
//! read, written whole or not at all (atomic rename, fsync) and private to root (0600),
//! read back with file:line:col errors. They live with weft's positioned YAML, which
//! every part of weft that keeps such a file (master, CLI, minion) already depends on.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter};

use crate::de::from_node;
use crate::taskbook::read_source;
use crate::whole_file;
use crate::yaml::parse_documents;
use crate::Error;

pub fn write_private(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let value = serde_json::to_value(value).expect("settings are plain data");
    write_private_bytes(path, to_yaml(&value).as_bytes())
}

pub fn write_private_bytes(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    whole_file::replace(path, bytes, 0o600).map_err(|e| Error::new(e.to_string()).in_file(path))
}

pub fn read<T: DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let source = read_source(path)?;
    let documents = parse_documents(&source, path)?;
    let [document] = documents.as_slice() else {
        return Err(Error::new("expected exactly one YAML document").in_file(path));
    };
    from_node(&document.root).map_err(|e| e.in_file(path))
}

/// YAML text for a JSON value; multi-line strings (certificates) as block scalars.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    emitter
        .dump(&to_yaml_node(value))
        .expect("writing to a String cannot fail");
    out.push('\n');
    out.strip_prefix("---\n").map(str::to_string).unwrap_or(out)
}

fn to_yaml_node(value: &Value) -> Yaml {
    match value {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(items) => Yaml::Array(items.iter().map(to_yaml_node).collect()),
        Value::Object(map) => {
            let mut hash = Hash::new();
            for (key, value) in map {
                hash.insert(Yaml::String(key.clone()), to_yaml_node(value));
            }
            Yaml::Hash(hash)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Credentials {
        master_endpoint: String,
        cert_pem: String,
        port: u16,
    }

    #[test]
    fn settings_round_trip_privately_with_readable_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.yaml");
        let credentials = Credentials {
            master_endpoint: "127.0.0.1:7443".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            port: 7443,
        };
        write_private(&path, &credentials).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("cert_pem: |"), "{text}");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(read::<Credentials>(&path).unwrap(), credentials);
    }

    #[test]
    fn a_damaged_file_names_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.yaml");
        std::fs::write(&path, "master_endpoint: a\ncert_pem: b\nport: many\n").unwrap();
        let error = read::<Credentials>(&path).unwrap_err().to_string();
        assert!(error.contains("admin.yaml:3:7"), "{error}");
    }
}
