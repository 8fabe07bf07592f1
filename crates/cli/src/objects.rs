//! `weft apply`, `weft get`, `weft describe`, `weft delete` and `weft node label`:
//! cluster objects, kubectl's way.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;
use weft_proto::adminapi::{
    ApplyObjectsRequest, DeleteObjectRequest, FetchRepositoryRequest, GetObjectsRequest,
    LabelNodeRequest, ListNodesRequest, ResolveVarsRequest, SetNodeVarsRequest, SourceFile,
};
use weft_taskbook::objects::{Kind, NodeGroupSpec};
use weft_taskbook::yaml::{json_to_yaml, MAX_SOURCE_BYTES};

use crate::admin::AdminClient;
use crate::output::{ago, print_json, table, timestamp};
use crate::CliError;

/// How `weft get` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectOutput {
    Table,
    // The table with more columns (uuid, generation, labels); a doc comment here would
    // become clap's help for the value.
    Wide,
    Yaml,
    Json,
}

/// The files `-f` names: a file, `-` for standard input, or a directory's `*.yml` and
/// `*.yaml` files in name order.
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<SourceFile>, CliError> {
    let mut files = Vec::new();
    for path in paths {
        if path == Path::new("-") {
            let mut content = String::new();
            std::io::stdin()
                .take(MAX_SOURCE_BYTES as u64 + 1)
                .read_to_string(&mut content)
                .map_err(|e| CliError::Input(format!("standard input: {e}")))?;
            files.push(SourceFile {
                path: "<stdin>".into(),
                content,
            });
        } else if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| CliError::Input(format!("{}: {e}", path.display())))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
                .collect();
            entries.sort();
            for entry in entries {
                files.push(read_source(&entry)?);
            }
        } else {
            files.push(read_source(path)?);
        }
    }
    if files.is_empty() {
        return Err(CliError::Input(
            "no object files: name YAML files or directories with -f".into(),
        ));
    }
    Ok(files)
}

fn read_source(path: &Path) -> Result<SourceFile, CliError> {
    let content = weft_taskbook::taskbook::read_source(path)?;
    Ok(SourceFile {
        path: path.display().to_string(),
        content,
    })
}

pub async fn apply(
    client: &mut AdminClient,
    files: Vec<SourceFile>,
    dry_run: bool,
    json: bool,
) -> Result<(), CliError> {
    let applied = client
        .apply_objects(ApplyObjectsRequest { files, dry_run })
        .await?
        .into_inner()
        .objects;
    if json {
        let objects: Vec<Value> = applied
            .iter()
            .map(|object| {
                serde_json::json!({
                    "kind": object.kind,
                    "namespace": (!object.namespace.is_empty()).then_some(&object.namespace),
                    "name": object.name,
                    "action": object.action,
                    "generation": object.generation,
                    "resource_version": object.resource_version,
                    "dry_run": dry_run,
                })
            })
            .collect();
        print_json(&objects);
        return Ok(());
    }
    let suffix = if dry_run { " (dry run)" } else { "" };
    for object in &applied {
        let namespace = if object.namespace.is_empty() {
            String::new()
        } else {
            format!(" -n {}", object.namespace)
        };
        println!(
            "{}/{}{namespace} {}{suffix}",
            object.kind.to_ascii_lowercase(),
            object.name,
            object.action
        );
    }
    Ok(())
}

pub async fn get(
    client: &mut AdminClient,
    kind: &str,
    name: Option<&str>,
    namespace: Option<&str>,
    output: ObjectOutput,
) -> Result<(), CliError> {
    let response = client
        .get_objects(GetObjectsRequest {
            kind: kind.to_string(),
            name: name.unwrap_or_default().to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
        })
        .await?
        .into_inner();
    let objects: Vec<(Value, u64)> = response
        .objects
        .iter()
        .map(|object| {
            let json = serde_json::from_str(&object.object_json).map_err(|e| {
                CliError::Master(format!("the master sent an unreadable object: {e}"))
            })?;
            Ok((json, object.created_unix_ms))
        })
        .collect::<Result<_, CliError>>()?;
    let single = name.is_some();
    match output {
        ObjectOutput::Json if single => print_json(&objects[0].0),
        ObjectOutput::Json => print_json(&objects.iter().map(|(o, _)| o).collect::<Vec<_>>()),
        ObjectOutput::Yaml => {
            let documents: Vec<String> = objects.iter().map(|(o, _)| json_to_yaml(o)).collect();
            print!("{}", documents.join("---\n"));
        }
        ObjectOutput::Table | ObjectOutput::Wide => {
            if objects.is_empty() {
                eprintln!("no {} objects{}", response.kind, in_namespace(namespace));
                return Ok(());
            }
            let kind = sent_kind(&response.kind)?;
            print!(
                "{}",
                object_table(kind, &objects, output == ObjectOutput::Wide)
            );
        }
    }
    Ok(())
}

/// The kind the master answered with, which it always spells exactly.
fn sent_kind(name: &str) -> Result<Kind, CliError> {
    Kind::from_exact_name(name)
        .ok_or_else(|| CliError::Master(format!("the master sent an unknown kind `{name}`")))
}

fn in_namespace(namespace: Option<&str>) -> String {
    namespace
        .map(|ns| format!(" in namespace {ns}"))
        .unwrap_or_default()
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn labels_text(object: &Value) -> String {
    match object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
    {
        Some(labels) if !labels.is_empty() => labels
            .iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".into(),
    }
}

/// What a listing of the kind shows besides names: the field an operator scans for.
fn kind_columns(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::Node => &[
            ("VPN IP", "/spec/node_vpn_ip"),
            ("ONLINE", "/status/online"),
        ],
        Kind::Namespace => &[("DESCRIPTION", "/spec/description")],
        Kind::ClusterVariablesBinding => &[("CLUSTER VARIABLES", "/spec/cluster_variables")],
        Kind::CronJob => &[
            ("SCHEDULE", "/spec/schedule"),
            ("LAST RUN", "/status/last_schedule_unix_ms"),
            ("NEXT RUN", "/status/next_schedule_unix_ms"),
            ("ACTIVE", "/status/active"),
        ],
        Kind::Beacon => &[("EVENT", "/spec/event"), ("INTERVAL", "/spec/interval")],
        Kind::GitRepository => &[
            ("URL", "/spec/url"),
            ("BRANCH", "/spec/branch"),
            ("COMMIT", "/status/commit"),
            ("LAST ERROR", "/status/last_error"),
        ],
        _ => &[],
    }
}

fn object_table(kind: Kind, objects: &[(Value, u64)], wide: bool) -> String {
    let namespaced = kind.is_namespaced();
    let mut headers = vec!["NAME"];
    if namespaced {
        headers.insert(0, "NAMESPACE");
    }
    headers.extend(kind_columns(kind).iter().map(|(header, _)| *header));
    headers.push("AGE");
    if wide {
        headers.extend(["GENERATION", "UUID", "LABELS"]);
    }
    let rows: Vec<Vec<String>> = objects
        .iter()
        .map(|(object, created)| {
            let field = |pointer: &str| match object.pointer(pointer) {
                Some(Value::Number(ms)) if pointer.ends_with("_unix_ms") => {
                    timestamp(ms.as_u64().unwrap_or(0))
                }
                Some(value) => text(value),
                None => "-".into(),
            };
            let mut row = vec![field("/metadata/name")];
            if namespaced {
                row.insert(0, field("/metadata/namespace"));
            }
            row.extend(kind_columns(kind).iter().map(|(_, pointer)| field(pointer)));
            row.push(ago(*created).trim_end_matches(" ago").to_string());
            if wide {
                row.extend([
                    field("/metadata/generation"),
                    field("/metadata/uuid"),
                    labels_text(object),
                ]);
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// One object for people: who and when, then its spec; a NodeGroup also lists the
/// nodes it selects now.
pub async fn describe(
    client: &mut AdminClient,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    let response = client
        .get_objects(GetObjectsRequest {
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
        })
        .await?
        .into_inner();
    let stored = &response.objects[0];
    let object: Value = serde_json::from_str(&stored.object_json)
        .map_err(|e| CliError::Master(format!("the master sent an unreadable object: {e}")))?;
    let field = |pointer: &str| object.pointer(pointer).map_or("-".into(), text);
    let kind = sent_kind(&response.kind)?;
    println!("Kind:              {kind}");
    println!("Name:              {}", field("/metadata/name"));
    if kind.is_namespaced() {
        println!("Namespace:         {}", field("/metadata/namespace"));
    }
    println!("Labels:            {}", labels_text(&object));
    if kind != Kind::Node {
        println!("UUID:              {}", field("/metadata/uuid"));
        println!("Generation:        {}", field("/metadata/generation"));
        println!("Resource version:  {}", field("/metadata/resource_version"));
    }
    println!("Created:           {}", timestamp(stored.created_unix_ms));
    println!("Updated:           {}", timestamp(stored.updated_unix_ms));
    if kind == Kind::NodeGroup {
        let members = node_group_members(client, &object).await?;
        println!(
            "Nodes now:         {}",
            if members.is_empty() {
                "(none)".to_string()
            } else {
                members.join(", ")
            }
        );
    }
    for section in ["spec", "status"] {
        if let Some(value) = object.get(section).filter(|v| !v.is_null()) {
            println!("{}:", section[..1].to_ascii_uppercase() + &section[1..]);
            for line in json_to_yaml(value).lines() {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

/// The joined nodes a NodeGroup selects now.
async fn node_group_members(
    client: &mut AdminClient,
    group: &Value,
) -> Result<Vec<String>, CliError> {
    let spec: NodeGroupSpec = group
        .get("spec")
        .cloned()
        .and_then(|spec| serde_json::from_value(spec).ok())
        .unwrap_or_default();
    let nodes = client
        .list_nodes(ListNodesRequest::default())
        .await?
        .into_inner()
        .nodes;
    Ok(nodes
        .into_iter()
        .filter(|node| spec.contains(&node.node_name, &node.labels.clone().into_iter().collect()))
        .map(|node| node.node_name)
        .collect())
}

pub async fn delete(
    client: &mut AdminClient,
    kind: &str,
    name: &str,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    client
        .delete_object(DeleteObjectRequest {
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
        })
        .await?;
    println!("{}/{name} deleted", kind.to_ascii_lowercase());
    Ok(())
}

/// `key=value` sets a label, `key-` removes one.
pub async fn label_node(
    client: &mut AdminClient,
    node_name: &str,
    changes: &[String],
) -> Result<(), CliError> {
    let mut request = LabelNodeRequest {
        node_name: node_name.to_string(),
        ..Default::default()
    };
    for change in changes {
        match (change.split_once('='), change.strip_suffix('-')) {
            (Some((key, value)), _) => {
                request.set.insert(key.to_string(), value.to_string());
            }
            (None, Some(key)) => request.remove.push(key.to_string()),
            (None, None) => {
                return Err(CliError::Input(format!(
                    "`{change}`: write key=value to set a label, key- to remove one"
                )))
            }
        }
    }
    let node = client.label_node(request).await?.into_inner();
    println!(
        "node/{} labeled: {}",
        node.node_name,
        crate::nodes::labels_text(&node)
    );
    Ok(())
}

/// `weft vars NODE`: the node's cluster variables and the object each came from.
pub async fn show_vars(
    client: &mut AdminClient,
    node_name: &str,
    namespace: Option<&str>,
    json: bool,
) -> Result<(), CliError> {
    let response = client
        .resolve_vars(ResolveVarsRequest {
            node_name: node_name.to_string(),
            namespace: namespace.unwrap_or_default().to_string(),
        })
        .await?
        .into_inner();
    let resolved: Value = serde_json::from_str(&response.resolved_json)
        .map_err(|e| CliError::Master(format!("the master sent unreadable variables: {e}")))?;
    if json {
        print_json(&resolved);
        return Ok(());
    }
    let empty = serde_json::Map::new();
    let vars = resolved["vars"].as_object().unwrap_or(&empty);
    if vars.is_empty() {
        eprintln!(
            "no cluster variables for {node_name} in namespace {}",
            text(&resolved["namespace"])
        );
        return Ok(());
    }
    let rows: Vec<Vec<String>> = vars
        .iter()
        .map(|(name, value)| {
            let origin = &resolved["origins"][name];
            let from = match origin["computed"].as_str() {
                Some(computed) => format!("{} ({computed})", text(&origin["object"])),
                None => text(&origin["object"]),
            };
            vec![
                name.clone(),
                value.to_string(),
                text(&origin["level"]),
                from,
            ]
        })
        .collect();
    print!("{}", table(&["NAME", "VALUE", "LEVEL", "FROM"], &rows));
    Ok(())
}

/// `weft node vars NODE key=value... key-`: values are typed as YAML reads them.
/// `weft repo fetch`: the leader fetches at its next tick (within a second).
pub async fn fetch_repository(
    client: &mut AdminClient,
    name: &str,
    namespace: Option<&str>,
) -> Result<(), CliError> {
    client
        .fetch_repository(FetchRepositoryRequest {
            namespace: namespace.unwrap_or_default().to_string(),
            name: name.to_string(),
        })
        .await?;
    eprintln!("fetch of GitRepository {name} asked for; `weft get gitrepositories {name}` shows its status");
    Ok(())
}

pub async fn set_node_vars(
    client: &mut AdminClient,
    node_name: &str,
    changes: &[String],
) -> Result<(), CliError> {
    let mut set = weft_taskbook::Vars::new();
    let mut remove = Vec::new();
    for change in changes {
        if change.contains('=') {
            set.extend(weft_taskbook::vars::parse_extra_vars(change)?);
        } else if let Some(name) = change.strip_suffix('-') {
            remove.push(name.to_string());
        } else {
            return Err(CliError::Input(format!(
                "`{change}`: write key=value to set a variable, key- to remove one"
            )));
        }
    }
    let response = client
        .set_node_vars(SetNodeVarsRequest {
            node_name: node_name.to_string(),
            set_json: Value::Object(set).to_string(),
            remove,
        })
        .await?
        .into_inner();
    println!("node/{node_name} vars: {}", response.vars_json);
    Ok(())
}
