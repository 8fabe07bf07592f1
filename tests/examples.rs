//! Every example object file parses with the current object model, and the custom
//! module example runs.

mod common;

use common::{json_report, local_command, repo_path, snapshot, statuses, stderr};

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
            "TaskBook",
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

#[test]
fn the_custom_module_example_checks_then_converges_then_stays_ok() {
    let scratch = tempfile::tempdir().unwrap();
    let settings = scratch.path().join("app/settings.json");
    let file_var = format!("settings_file={}", settings.display());
    let run = |flags: &[&str]| {
        let mut args = vec!["-o", "json", "-e", &file_var];
        args.extend_from_slice(flags);
        let (report, output) = json_report(
            local_command(&repo_path("examples/custom-module.yml"), &args)
                .env("WEFT_MODULE_PATH", repo_path("examples/modules"))
                .output()
                .unwrap(),
        );
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        report
    };
    let named = |wanted: [&str; 3]| {
        ["listen port", "allowed origins", "no debug mode"]
            .iter()
            .zip(wanted)
            .map(|(task, status)| (task.to_string(), status.to_string()))
            .collect::<Vec<_>>()
    };

    std::fs::write(scratch.path().join("keep"), "").unwrap();
    let before = snapshot(scratch.path());
    let report = run(&["--check", "--diff"]);
    assert_eq!(statuses(&report), named(["changed", "changed", "ok"]));
    assert!(
        report["results"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+    \"port\": 8080"),
        "{report}"
    );
    assert_eq!(snapshot(scratch.path()), before, "check mode wrote nothing");

    let report = run(&[]);
    assert_eq!(statuses(&report), named(["changed", "changed", "ok"]));
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&settings).unwrap()).unwrap();
    assert_eq!(
        written,
        serde_json::json!({"server": {"port": 8080, "cors": ["https://example.org"]}})
    );

    std::fs::write(
        &settings,
        r#"{"debug": true, "server": {"port": 8080, "cors": ["https://example.org"]}}"#,
    )
    .unwrap();
    let report = run(&[]);
    assert_eq!(statuses(&report), named(["ok", "ok", "changed"]));
    let report = run(&[]);
    assert_eq!(statuses(&report), named(["ok", "ok", "ok"]));
}
