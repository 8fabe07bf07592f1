//! The variables a node gets from the cluster's objects, below the TaskBook's own:
//! Config defaults < ClusterVariables (bound into the run's namespace) < Variables (in
//! that namespace) < NodeGroup vars < the node's own vars, each level in object-name order, and where every
//! value came from (`weft vars`). Objects with `nodes:` apply only to the nodes they
//! select. Computed values are either a template over the other variables, rendered
//! here, or a command's output on a named node, which the caller runs and passes in.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::objects::{ConfigSpec, NodeGroupSpec, VariablesSpec};
use crate::render::Renderer;
use crate::vars::{resolve_templated_vars, VarLevel, Vars};

/// The objects variables come from, as the master read them for one namespace.
#[derive(Debug, Clone, Default)]
pub struct VarSources {
    /// Config objects, by name.
    pub configs: Vec<(String, ConfigSpec)>,
    /// ClusterVariables bound into the namespace, by name.
    pub cluster_variables: Vec<(String, VariablesSpec)>,
    /// The namespace's Variables, by name.
    pub variables: Vec<(String, VariablesSpec)>,
    /// Every NodeGroup, by name.
    pub node_groups: BTreeMap<String, NodeGroupSpec>,
    pub namespace: String,
}

/// The node whose variables are resolved.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub facts: &'a Value,
    /// The node's own variables, the highest level here.
    pub vars: &'a Vars,
}

/// Where a resolved value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VarOrigin {
    /// `config`, `cluster_variables`, `variables`, `node_group` or `node`.
    pub level: &'static str,
    /// `Kind/name`, or `Kind/namespace/name` for namespaced kinds.
    pub object: String,
    /// `template` or `from_node`, for computed values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub computed: Option<&'static str>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedVars {
    pub vars: Vars,
    pub origins: BTreeMap<String, VarOrigin>,
}

/// A computed variable whose value is a command's output on another node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NodeCommand {
    /// The object it is defined in, as in [`VarOrigin::object`].
    pub object: String,
    pub var: String,
    pub from_node: String,
    pub command: String,
}

/// Outputs of [`NodeCommand`]s, by object and variable.
pub type NodeCommandOutputs = BTreeMap<(String, String), String>;

struct Layer<'a> {
    level: VarLevel,
    level_name: &'static str,
    object: String,
    vars: &'a Vars,
    computed: Option<&'a VariablesSpec>,
}

impl VarSources {
    /// The levels that apply to `node`, lowest precedence first.
    fn layers<'a>(&'a self, node: NodeView<'a>) -> Vec<Layer<'a>> {
        let mut layers = Vec::new();
        for (name, config) in &self.configs {
            layers.push(Layer {
                level: VarLevel::ConfigDefaults,
                level_name: "config",
                object: format!("Config/{name}"),
                vars: &config.vars,
                computed: None,
            });
        }
        let applies = |spec: &VariablesSpec| {
            spec.nodes.as_ref().is_none_or(|selector| {
                let group = selector
                    .group
                    .as_ref()
                    .map(|group| self.node_groups.get(group));
                match group {
                    // A group that does not exist selects no node.
                    Some(None) => false,
                    Some(Some(group)) => {
                        selector.selects(node.name, node.labels, node.facts, Some(group))
                    }
                    None => selector.selects(node.name, node.labels, node.facts, None),
                }
            })
        };
        for (name, spec) in self.cluster_variables.iter().filter(|(_, s)| applies(s)) {
            layers.push(Layer {
                level: VarLevel::ClusterVariables,
                level_name: "cluster_variables",
                object: format!("ClusterVariables/{name}"),
                vars: &spec.vars,
                computed: Some(spec),
            });
        }
        for (name, spec) in self.variables.iter().filter(|(_, s)| applies(s)) {
            layers.push(Layer {
                level: VarLevel::Variables,
                level_name: "variables",
                object: format!("Variables/{}/{name}", self.namespace),
                vars: &spec.vars,
                computed: Some(spec),
            });
        }
        for (name, group) in &self.node_groups {
            if group.contains(node.name, node.labels) {
                layers.push(Layer {
                    level: VarLevel::NodeGroup,
                    level_name: "node_group",
                    object: format!("NodeGroup/{name}"),
                    vars: &group.vars,
                    computed: None,
                });
            }
        }
        layers.push(Layer {
            level: VarLevel::Node,
            level_name: "node",
            object: format!("Node/{}", node.name),
            vars: node.vars,
            computed: None,
        });
        layers.sort_by_key(|layer| layer.level);
        layers
    }

    /// The commands `node`'s computed variables need run on other nodes.
    pub fn node_commands(&self, node: NodeView) -> Vec<NodeCommand> {
        let mut commands = Vec::new();
        for layer in self.layers(node) {
            for (var, computed) in layer.computed.iter().flat_map(|spec| &spec.computed) {
                if let (Some(from_node), Some(command)) = (&computed.from_node, &computed.command) {
                    commands.push(NodeCommand {
                        object: layer.object.clone(),
                        var: var.clone(),
                        from_node: from_node.clone(),
                        command: command.clone(),
                    });
                }
            }
        }
        commands
    }

    /// `node`'s variables: every level merged (a higher one replaces a whole value),
    /// computed templates rendered over the result, with the node's `facts` and `node`
    /// in reach.
    pub fn resolve(
        &self,
        node: NodeView,
        outputs: &NodeCommandOutputs,
        renderer: &mut Renderer,
    ) -> Result<ResolvedVars> {
        let mut resolved = ResolvedVars::default();
        for layer in self.layers(node) {
            let origin = |computed| VarOrigin {
                level: layer.level_name,
                object: layer.object.clone(),
                computed,
            };
            for (var, value) in layer.vars {
                resolved.vars.insert(var.clone(), value.clone());
                resolved.origins.insert(var.clone(), origin(None));
            }
            for (var, computed) in layer.computed.iter().flat_map(|spec| &spec.computed) {
                let (value, kind) = match (&computed.template, &computed.from_node) {
                    (Some(template), _) => (Value::String(template.clone()), "template"),
                    (None, Some(from_node)) => {
                        let key = (layer.object.clone(), var.clone());
                        let output = outputs.get(&key).ok_or_else(|| {
                            Error::new(format!(
                                "computed variable `{var}` of {} has no value from node `{from_node}`",
                                layer.object
                            ))
                        })?;
                        (Value::String(output.clone()), "from_node")
                    }
                    (None, None) => continue,
                };
                resolved.vars.insert(var.clone(), value);
                resolved.origins.insert(var.clone(), origin(Some(kind)));
            }
        }
        let mut context = tera::Context::new();
        context.insert("facts", node.facts);
        context.insert(
            "node",
            &serde_json::json!({"name": node.name, "labels": node.labels}),
        );
        resolve_templated_vars(&mut resolved.vars, &context, renderer).map_err(|e| {
            Error::new(format!(
                "cluster variables for node `{}`: {}",
                node.name, e.message
            ))
            .with_hint(e.hint.unwrap_or_default())
        })?;
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::ComputedVariable;
    use crate::selector::NodeSelector;
    use serde_json::json;

    fn vars(value: Value) -> Vars {
        value.as_object().unwrap().clone()
    }

    fn spec(value: Value) -> VariablesSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn levels_override_in_order_and_each_value_names_its_object() {
        let sources = VarSources {
            configs: vec![(
                "default".into(),
                ConfigSpec {
                    vars: vars(json!({"ntp": "pool", "port": 1, "dns": "config"})),
                    ..Default::default()
                },
            )],
            cluster_variables: vec![(
                "dns".into(),
                spec(json!({"vars": {"dns": "10.0.0.53", "port": 2},
                    "computed": {"upstream": {"template": "{{ dns }}:53 on {{ node.name }}"},
                                 "ca": {"from_node": "ca-1", "command": "cat ca.pem"}}})),
            )],
            variables: vec![
                ("app".into(), spec(json!({"vars": {"port": 3}}))),
                (
                    "db-only".into(),
                    spec(json!({"nodes": {"selector": {"role": "db"}}, "vars": {"port": 99}})),
                ),
            ],
            node_groups: [(
                "web".into(),
                NodeGroupSpec {
                    selector: [("role".into(), "web".into())].into(),
                    vars: vars(json!({"workers": 4})),
                    ..Default::default()
                },
            )]
            .into(),
            namespace: "prod".into(),
        };
        let labels = [("role".to_string(), "web".to_string())].into();
        let facts = json!({});
        let node = NodeView {
            name: "web-1",
            labels: &labels,
            facts: &facts,
            vars: &vars(json!({"region": "eu"})),
        };
        let commands = sources.node_commands(node);
        assert_eq!(commands.len(), 1);
        assert_eq!(commands[0].from_node, "ca-1");
        let outputs = [(
            ("ClusterVariables/dns".to_string(), "ca".to_string()),
            "PEM".to_string(),
        )]
        .into();
        let resolved = sources
            .resolve(node, &outputs, &mut Renderer::default())
            .unwrap();
        assert_eq!(
            Value::Object(resolved.vars.clone()),
            json!({"ntp": "pool", "port": 3, "dns": "10.0.0.53", "upstream": "10.0.0.53:53 on web-1",
                   "ca": "PEM", "workers": 4, "region": "eu"})
        );
        assert_eq!(resolved.origins["port"].object, "Variables/prod/app");
        assert_eq!(resolved.origins["ntp"].level, "config");
        assert_eq!(resolved.origins["upstream"].computed, Some("template"));
        assert_eq!(resolved.origins["ca"].computed, Some("from_node"));
        assert_eq!(resolved.origins["workers"].object, "NodeGroup/web");
        // Without the command's output the variable is an error, not a silent gap.
        assert!(sources
            .resolve(node, &BTreeMap::new(), &mut Renderer::default())
            .is_err());
    }

    #[test]
    fn a_selector_on_a_missing_group_selects_nothing() {
        let sources = VarSources {
            variables: vec![(
                "x".into(),
                VariablesSpec {
                    nodes: Some(NodeSelector {
                        group: Some("nope".into()),
                        ..Default::default()
                    }),
                    vars: vars(json!({"a": 1})),
                    computed: BTreeMap::<String, ComputedVariable>::new(),
                },
            )],
            ..Default::default()
        };
        let facts = json!({});
        let node = NodeView {
            name: "n",
            labels: &BTreeMap::new(),
            facts: &facts,
            vars: &Vars::new(),
        };
        let resolved = sources
            .resolve(node, &BTreeMap::new(), &mut Renderer::default())
            .unwrap();
        assert!(resolved.vars.is_empty());
    }
}
