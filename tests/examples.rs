//! Every example object file parses with the current object model.

mod common;

use weft_taskbook::objects::{parse_objects, AnyObject};

#[test]
fn examples_parse() {
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(common::repo_path("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yml") {
            let source = std::fs::read_to_string(&path).unwrap();
            let objects = parse_objects(&source, &path).unwrap_or_else(|e| panic!("{e}"));
            kinds.extend(objects.into_iter().map(|o| o.object.kind().to_string()));
        }
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "Beacon",
            "ClusterVariables",
            "ClusterVariablesBinding",
            "Config",
            "CronJob",
            "GitRepository",
            "Namespace",
            "NodeGroup",
            "Secret",
            "Trigger",
            "Variables"
        ]
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let source = std::fs::read_to_string(common::repo_path("examples/fleet.yml")).unwrap();
    let objects = parse_objects(&source, std::path::Path::new("fleet.yml")).unwrap();
    let secret = objects
        .iter()
        .find_map(|o| match &o.object {
            AnyObject::Secret(s) => Some(s),
            _ => None,
        })
        .unwrap();
    let shown = format!("{secret:?}");
    assert!(!shown.contains("change-me"), "{shown}");
    assert!(shown.contains("********"), "{shown}");
}
