//! The first phase of a run, pure: from a TaskBook and what the store holds (nodes,
//! NodeGroups, variable sources), which nodes run each step and every input the run
//! needs from the master: computed variables to run on nodes, values to carry from node
//! to node, Secrets, other nodes' facts. Nothing is started, sent or recorded here, so a
//! run refused at any point of planning has done nothing.

use std::collections::{BTreeMap, BTreeSet};

use weft_modules::sync::SyncSource;
use weft_modules::MasterNeeds;
use weft_taskbook::bundle::Bundle;
use weft_taskbook::cluster_vars::{NodeCommand, NodeView as VarNode, VarSources};
use weft_taskbook::objects::NodeGroupSpec;
use weft_taskbook::references::TemplateReferences;
use weft_taskbook::selector::NodeSelector;
use weft_taskbook::{Error, Step, Task, TaskBook};

use super::NodeView;
use crate::core::job::{step_result_limit, JobStepPlan};

/// A run planned: what it will do and what it needs, before anything happens.
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<StepPlan>,
    /// Commands of computed variables, each run once on its node before the first step.
    pub node_commands: Vec<NodeCommand>,
    /// Every Secret the run reads.
    pub secret_names: BTreeSet<String>,
    /// Whether the run's templates read `nodes`: only then does every node get every
    /// other node's facts and results.
    pub reads_other_nodes: bool,
}

#[derive(Debug)]
pub struct StepPlan {
    pub job: JobStepPlan,
    /// The Secrets this step's templates read, sent only to its nodes.
    pub secret_names: BTreeSet<String>,
    /// Content the master carries into the step from other nodes, read before it starts.
    pub synced: Vec<SyncSource>,
}

/// What the store holds that a plan reads, read once before planning.
pub struct Cluster<'a> {
    pub views: &'a BTreeMap<String, NodeView>,
    /// The namespace's variable sources; `None` for the master's own runs, which read
    /// no cluster variables and no Secrets.
    pub var_sources: Option<&'a VarSources>,
}

/// Plans `taskbook` on `cluster`. `needs_of` says what a task needs from the master
/// (the modules' own declarations: [`weft_modules::master_needs_of`]).
pub fn plan_run<'t>(
    taskbook: &'t TaskBook,
    bundle: &Bundle,
    nodes_override: Option<&NodeSelector>,
    cluster: &Cluster,
    needs_of: impl Fn(&'t Task) -> MasterNeeds<'t>,
) -> Result<Plan, Error> {
    // Rendered bundle files are read only by the tasks that declare it; what they read
    // is found once.
    let bundle_file_references = bundle_file_references(bundle);
    let mut plan = Plan::default();
    for (index, step) in taskbook.steps.iter().enumerate() {
        let selector = nodes_override.unwrap_or(&step.nodes);
        let nodes = select(selector, cluster, step, index)?;
        let mut references = TemplateReferences::of_step(&taskbook.vars, step);
        let mut synced: Vec<SyncSource> = Vec::new();
        for task in step.tasks.iter().chain(&step.handlers) {
            let needs = needs_of(task);
            if needs.renders_bundle_files {
                references.add(&bundle_file_references);
            }
            if let Some(source) = needs.synced {
                if !synced.iter().any(|known| known.key() == source.key()) {
                    synced.push(source);
                }
            }
        }
        plan.reads_other_nodes |= references.other_nodes;
        plan.secret_names.extend(references.secrets.iter().cloned());
        plan.steps.push(StepPlan {
            job: JobStepPlan {
                name: step.display_name(index),
                nodes,
                max_results: step_result_limit(step),
            },
            secret_names: references.secrets,
            synced,
        });
    }
    if let Some(sources) = cluster.var_sources {
        plan.node_commands = node_commands(sources, cluster.views, &plan.steps);
    }
    Ok(plan)
}

/// What the bundle's files other than the TaskBook read, as templates.
fn bundle_file_references(bundle: &Bundle) -> TemplateReferences {
    let mut references = TemplateReferences::default();
    for (path, content) in &bundle.files {
        if *path != bundle.taskbook_file {
            references.add_text(&String::from_utf8_lossy(content));
        }
    }
    references
}

/// The computed variables' commands the planned nodes need, each once.
fn node_commands(
    sources: &VarSources,
    views: &BTreeMap<String, NodeView>,
    steps: &[StepPlan],
) -> Vec<NodeCommand> {
    let nodes: BTreeSet<&String> = steps.iter().flat_map(|step| &step.job.nodes).collect();
    let mut commands: Vec<NodeCommand> = Vec::new();
    for view in nodes.into_iter().filter_map(|name| views.get(name)) {
        for command in sources.node_commands(view.var_node()) {
            let known = commands
                .iter()
                .any(|c| c.object == command.object && c.var == command.var);
            if !known {
                commands.push(command);
            }
        }
    }
    commands
}

fn select(
    selector: &NodeSelector,
    cluster: &Cluster,
    step: &Step,
    index: usize,
) -> Result<Vec<String>, Error> {
    let refuse = |problem: String, hint: &str| {
        Error::new(format!(
            "step {} (`{}`) {problem}",
            index + 1,
            step.display_name(index)
        ))
        .in_file(&step.file)
        .with_hint(hint)
    };
    let group: Option<&NodeGroupSpec> = match &selector.group {
        None => None,
        Some(group) => {
            let spec = cluster
                .var_sources
                .and_then(|sources| sources.node_groups.get(group));
            let Some(spec) = spec else {
                return Err(refuse(
                    format!("selects NodeGroup `{group}`, which does not exist"),
                    "select nodes by `names`, `selector` or `facts`, or create the group with `weft apply`",
                ));
            };
            Some(spec)
        }
    };
    if let Some(unknown) = selector
        .names
        .iter()
        .find(|name| !cluster.views.contains_key(*name))
    {
        return Err(refuse(
            format!("names node `{unknown}`, which has not joined"),
            "`weft nodes` lists the nodes",
        ));
    }
    Ok(cluster
        .views
        .values()
        .filter(|view| {
            selector.selects(
                &view.record.node_name,
                &view.record.labels,
                &view.facts,
                group,
            )
        })
        .map(|view| view.record.node_name.clone())
        .collect())
}

impl NodeView {
    /// The node as variable resolution sees it.
    pub(super) fn var_node(&self) -> VarNode<'_> {
        VarNode {
            name: &self.record.node_name,
            labels: &self.record.labels,
            facts: &self.facts,
            vars: &self.record.vars,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::Value;

    use super::*;
    use crate::core::node_registry::NodeRecord;

    const SOURCE: &str = r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: needs}
spec:
  steps:
    - name: frobnicate
      tasks:
        - frobnicate: {src: page.tmpl}
    - name: named template
      tasks:
        - template: {src: page.tmpl, dest: /tmp/page}
    - name: own arguments
      tasks:
        - debug: {msg: "{{ secrets.inline.x }}"}
"#;

    fn bundle() -> Bundle {
        Bundle {
            taskbook_file: "needs.yml".into(),
            files: [
                ("needs.yml".to_string(), SOURCE.into()),
                (
                    "page.tmpl".to_string(),
                    "{{ secrets.from_file.key }} {{ nodes.b.facts }}".into(),
                ),
            ]
            .into(),
        }
    }

    fn views() -> BTreeMap<String, NodeView> {
        ["a", "b"]
            .map(|name| {
                let view = NodeView {
                    record: NodeRecord::named(name),
                    facts: Value::Null,
                };
                (name.to_string(), view)
            })
            .into()
    }

    /// A module that renders the bundle's files, whatever its name, and one named
    /// `template` that (here) declares nothing: the master must follow the declarations.
    fn declared(task: &Task) -> MasterNeeds<'_> {
        MasterNeeds {
            renders_bundle_files: task.module.value == "frobnicate",
            ..MasterNeeds::default()
        }
    }

    #[test]
    fn a_modules_declared_needs_not_its_name_decide_what_a_step_is_sent() {
        let taskbook = TaskBook::from_source(SOURCE, Path::new("needs.yml")).unwrap();
        let views = views();
        let cluster = Cluster {
            views: &views,
            var_sources: None,
        };
        let plan = plan_run(&taskbook, &bundle(), None, &cluster, declared).unwrap();
        let secrets: Vec<Vec<&str>> = plan
            .steps
            .iter()
            .map(|step| step.secret_names.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(secrets, [vec!["from_file"], vec![], vec!["inline"]]);
        assert!(plan.reads_other_nodes, "the rendered file reads `nodes`");
        assert_eq!(plan.secret_names.len(), 2);

        // With the modules' real declarations, `template` renders its file.
        let plan = plan_run(
            &taskbook,
            &bundle(),
            None,
            &cluster,
            weft_modules::master_needs_of,
        )
        .unwrap();
        assert_eq!(
            plan.steps[1].secret_names,
            BTreeSet::from(["from_file".to_string()])
        );
    }

    #[test]
    fn sync_sources_are_declared_and_read_once_per_step() {
        let source = r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: s}
spec:
  steps:
    - tasks:
        - sync: {from: a, src: /etc/token, dest: /etc/token}
        - sync: {from: a, src: /etc/token, dest: /etc/token.copy}
        - sync: {from: b, var: out.stdout, dest: /etc/out}
"#;
        let taskbook = TaskBook::from_source(source, Path::new("s.yml")).unwrap();
        let views = views();
        let cluster = Cluster {
            views: &views,
            var_sources: None,
        };
        let bundle = Bundle {
            taskbook_file: "s.yml".into(),
            files: [("s.yml".to_string(), source.into())].into(),
        };
        let plan = plan_run(
            &taskbook,
            &bundle,
            None,
            &cluster,
            weft_modules::master_needs_of,
        )
        .unwrap();
        let keys: Vec<String> = plan.steps[0].synced.iter().map(SyncSource::key).collect();
        assert_eq!(keys, ["a:file:/etc/token", "b:var:out.stdout"]);
        assert!(!plan.reads_other_nodes);
    }

    #[test]
    fn a_step_naming_an_unknown_node_or_group_is_refused() {
        let source = "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: t}\nspec:\n  steps:\n    - {nodes: {names: [zed]}, tasks: [{ping: {}}]}\n";
        let taskbook = TaskBook::from_source(source, Path::new("t.yml")).unwrap();
        let views = views();
        let cluster = Cluster {
            views: &views,
            var_sources: None,
        };
        let error = plan_run(
            &taskbook,
            &Bundle::default(),
            None,
            &cluster,
            weft_modules::master_needs_of,
        )
        .unwrap_err();
        assert!(
            error
                .message
                .contains("names node `zed`, which has not joined"),
            "{error}"
        );
    }
}
