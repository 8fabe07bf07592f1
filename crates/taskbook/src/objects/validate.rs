//! Checks on an object's spec that its types alone cannot express: label and name
//! syntax in selectors, the shape and order of computed variables, bindings that name
//! something. They run where objects are read, so `weft apply` refuses a bad object
//! with its file, line and field before anything is stored.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    validate_git_url, validate_labels, validate_name, AnyObject, BeaconCheck, BeaconSpec,
    ClusterVariablesBindingSpec, ConfigSpec, CronJobSpec, NodeGroupSpec, VariablesSpec,
};
use crate::error::{Error, PathSegment, Result};
use crate::schedule::CronSchedule;
use crate::taskbook::is_identifier;
use crate::taskbook::TaskBookRef;
use crate::yaml::Node;

pub(super) fn validate_spec(root: &Node, object: &AnyObject) -> Result<()> {
    let spec = Field::root(root).key("spec");
    match object {
        AnyObject::NodeGroup(group) => node_group(&spec, &group.spec),
        AnyObject::ClusterVariables(variables) | AnyObject::Variables(variables) => {
            variables_spec(&spec, &variables.spec)
        }
        AnyObject::ClusterVariablesBinding(binding) => binding_spec(&spec, &binding.spec),
        AnyObject::CronJob(cron_job) => cron_job_spec(&spec, &cron_job.spec),
        AnyObject::Beacon(beacon) => beacon_spec(&spec, &beacon.spec),
        AnyObject::Trigger(trigger) => {
            taskbook_ref(&spec.key("run").key("taskbook"), &trigger.spec.run.taskbook)
        }
        AnyObject::GitRepository(repository) => {
            validate_git_url(&repository.spec.url).map_err(|message| spec.key("url").error(message))
        }
        AnyObject::Config(config) => config_spec(&spec, &config.spec),
        _ => Ok(()),
    }
}

/// A field of the document by path, for errors that point at it (or at the closest
/// ancestor present, when the field itself is absent).
struct Field<'a> {
    node: &'a Node,
    path: Vec<PathSegment>,
}

impl<'a> Field<'a> {
    fn root(node: &'a Node) -> Self {
        Field {
            node,
            path: Vec::new(),
        }
    }

    fn key(&self, key: &str) -> Field<'a> {
        let mut path = self.path.clone();
        path.push(PathSegment::Key(key.to_string()));
        Field {
            node: self.node.get(key).unwrap_or(self.node),
            path,
        }
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::new(message)
            .at(self.node.span)
            .under_path(&self.path)
    }
}

fn config_spec(spec: &Field, config: &ConfigSpec) -> Result<()> {
    // Shorter gives up a node before it could unpack a step and answer.
    if config
        .step_timeout
        .is_some_and(|timeout| timeout.0 < std::time::Duration::from_secs(1))
    {
        return Err(spec
            .key("step_timeout")
            .error("`step_timeout` is at least 1s")
            .with_hint(
                "it is what a step may take beyond its tasks' own `timeout`s; the default is 1h",
            ));
    }
    Ok(())
}

fn node_group(spec: &Field, group: &NodeGroupSpec) -> Result<()> {
    validate_labels(&group.selector).map_err(|m| spec.key("selector").error(m))?;
    for name in &group.nodes {
        validate_name(name).map_err(|m| spec.key("nodes").error(m))?;
    }
    if group.selector.is_empty() && group.nodes.is_empty() {
        return Err(spec
            .error("a NodeGroup needs a `selector`, a list of `nodes`, or both")
            .with_hint("`selector: {role: web}` takes every node labelled role=web"));
    }
    Ok(())
}

fn cron_job_spec(spec: &Field, cron_job: &CronJobSpec) -> Result<()> {
    CronSchedule::parse(&cron_job.schedule, cron_job.timezone.as_deref()).map_err(|message| {
        let field = if message.contains("timezone") {
            "timezone"
        } else {
            "schedule"
        };
        spec.key(field)
            .error(message)
            .with_hint("`0 3 * * *` is 03:00 every day; `*/30 * * * * *` every 30 seconds")
    })?;
    taskbook_ref(&spec.key("taskbook"), &cron_job.taskbook)
}

fn beacon_spec(spec: &Field, beacon: &BeaconSpec) -> Result<()> {
    if !is_event_type(&beacon.event) {
        return Err(spec
            .key("event")
            .error(format!("`{}` is not an event type", beacon.event))
            .with_hint("a dotted name of letters, digits, `_` and `-`: `disk.full`"));
    }
    if beacon.interval.0 < std::time::Duration::from_secs(1) {
        return Err(spec
            .key("interval")
            .error("a beacon checks at most once a second")
            .with_hint("`interval: 30s`"));
    }
    if let BeaconCheck::Http { url, .. } = &beacon.check {
        if !url.starts_with("http://") {
            return Err(spec
                .key("check")
                .error(format!("`{url}` is not an http:// URL"))
                .with_hint("the http check speaks plain HTTP; check an HTTPS endpoint with `command: curl -fsS URL`"));
        }
    }
    Ok(())
}

/// A TaskBook named by `name`, or by `repo` and `path` together.
fn taskbook_ref(field: &Field, reference: &TaskBookRef) -> Result<()> {
    let by_name = reference.name.is_some();
    let by_repo = reference.repo.is_some() && reference.path.is_some();
    if by_name == by_repo {
        return Err(field
            .error("name the TaskBook by `name`, or by `repo` and `path`")
            .with_hint("`taskbook: {name: web}` or `taskbook: {repo: infra, path: site.yml}`"));
    }
    Ok(())
}

pub const MAX_EVENT_TYPE_BYTES: usize = 128;

/// Dotted names such as `disk.full`.
pub fn is_event_type(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_EVENT_TYPE_BYTES
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn binding_spec(spec: &Field, binding: &ClusterVariablesBindingSpec) -> Result<()> {
    validate_name(&binding.cluster_variables)
        .map_err(|m| spec.key("cluster_variables").error(m))?;
    if binding.namespaces.is_empty() {
        return Err(spec
            .key("namespaces")
            .error("a binding needs at least one namespace"));
    }
    for namespace in &binding.namespaces {
        validate_name(namespace).map_err(|m| spec.key("namespaces").error(m))?;
    }
    Ok(())
}

fn variables_spec(spec: &Field, variables: &VariablesSpec) -> Result<()> {
    let computed = spec.key("computed");
    for (name, variable) in &variables.computed {
        let field = computed.key(name);
        if !is_identifier(name) {
            return Err(field
                .error(format!("`{name}` is not a variable name"))
                .with_hint("use letters, digits and `_`, not starting with a digit"));
        }
        if variables.vars.contains_key(name) {
            return Err(field.error(format!(
                "`{name}` is both a static variable in `vars` and a computed one"
            )));
        }
        match (&variable.from_node, &variable.command, &variable.template) {
            (Some(node), Some(_), None) => {
                validate_name(node).map_err(|m| field.key("from_node").error(m))?
            }
            (None, None, Some(_)) => {}
            _ => {
                return Err(field
                    .error("a computed variable is either `from_node` with `command`, or a `template`")
                    .with_hint("`{from_node: ca-1, command: \"cat /etc/ca.pem\"}` or `{template: \"{{ host }}:53\"}`"))
            }
        }
    }
    if let Some(cycle) = template_cycle(variables) {
        return Err(computed
            .key(&cycle[0])
            .error(format!(
                "computed variables refer to each other in a cycle: {}",
                cycle.join(" -> ")
            ))
            .with_hint("give one of them a static value in `vars`"));
    }
    Ok(())
}

/// A cycle among computed templates, as `a -> b -> a`, if there is one. A template
/// refers to every computed name it mentions as a word.
fn template_cycle(variables: &VariablesSpec) -> Option<Vec<String>> {
    let refers: BTreeMap<&str, BTreeSet<&str>> = variables
        .computed
        .iter()
        .filter_map(|(name, variable)| Some((name.as_str(), variable.template.as_deref()?)))
        .map(|(name, template)| {
            let words = template
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| variables.computed.contains_key(*word))
                .collect();
            (name, words)
        })
        .collect();
    fn visit<'a>(
        name: &'a str,
        refers: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == name) {
            let mut cycle: Vec<String> = path[start..].iter().map(|n| n.to_string()).collect();
            cycle.push(name.to_string());
            return Some(cycle);
        }
        if !done.insert(name) {
            return None;
        }
        path.push(name);
        for next in refers.get(name).into_iter().flatten() {
            if let Some(cycle) = visit(next, refers, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    refers
        .keys()
        .find_map(|name| visit(name, &refers, &mut Vec::new(), &mut done))
}
