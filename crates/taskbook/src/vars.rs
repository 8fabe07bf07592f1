//! Variables and their precedence, lowest first:
//! Config defaults < ClusterVariables < Variables < NodeGroup vars < node vars
//! < TaskBook vars < step vars < `-e` extra vars < registered results.
//! Merging is shallow, as Ansible's default: a higher level replaces a whole value.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::render::{is_template, Renderer, TemplateOrigin};
use crate::yaml::{parse_documents, Node};

pub type Vars = serde_json::Map<String, Value>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum VarLevel {
    ConfigDefaults,
    ClusterVariables,
    Variables,
    NodeGroup,
    Node,
    TaskBook,
    Step,
    ExtraVars,
    Registered,
}

/// Variables by level; `merged` applies them in precedence order.
#[derive(Debug, Clone, Default)]
pub struct VarLayers {
    layers: Vec<(VarLevel, Vars)>,
}

impl VarLayers {
    pub fn push(&mut self, level: VarLevel, vars: Vars) {
        self.layers.push((level, vars));
    }

    /// The merged variables, highest level winning; equal levels keep insertion order.
    pub fn merged(&self) -> Vars {
        let mut ordered: Vec<&(VarLevel, Vars)> = self.layers.iter().collect();
        ordered.sort_by_key(|(level, _)| *level);
        let mut merged = Vars::new();
        for (_, vars) in ordered {
            merged.extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        merged
    }
}

/// Renders variables whose values are templates over other variables (`url: "http://{{ host }}"`),
/// until none changes. A cycle leaves templates unrendered and is reported by name.
pub fn resolve_templated_vars(
    vars: &mut Vars,
    base: &tera::Context,
    renderer: &mut Renderer,
) -> Result<()> {
    const MAX_PASSES: usize = 16;
    for _ in 0..MAX_PASSES {
        let pending: Vec<String> = vars
            .iter()
            .filter(|(_, v)| contains_template(v))
            .map(|(k, _)| k.clone())
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let mut context = base.clone();
        for (key, value) in vars.iter() {
            context.insert(key, value);
        }
        let mut changed = false;
        for key in &pending {
            let rendered = render_value(&vars[key], &context, renderer).map_err(|e| {
                Error::new(format!("in variable `{key}`: {}", e.message))
                    .with_hint(e.hint.unwrap_or_default())
            })?;
            if rendered != vars[key] {
                changed = true;
                vars.insert(key.clone(), rendered);
            }
        }
        if !changed {
            break;
        }
    }
    let cyclic: Vec<String> = vars
        .iter()
        .filter(|(_, v)| contains_template(v))
        .map(|(k, _)| format!("`{k}`"))
        .collect();
    if cyclic.is_empty() {
        Ok(())
    } else {
        Err(Error::new(format!(
            "variables {} refer to each other in a cycle",
            cyclic.join(", ")
        ))
        .with_hint("give one of them a plain value"))
    }
}

fn contains_template(value: &Value) -> bool {
    match value {
        Value::String(s) => is_template(s),
        Value::Array(items) => items.iter().any(contains_template),
        Value::Object(map) => map.values().any(contains_template),
        _ => false,
    }
}

/// Renders the templated strings anywhere inside a variable's value.
fn render_value(value: &Value, context: &tera::Context, renderer: &mut Renderer) -> Result<Value> {
    let node = Node::from_json(value, TemplateOrigin::file().span);
    renderer.render_node(&node, context)
}

/// Reads one `-e` argument: `@file.yml`, an inline YAML/JSON mapping, or `K=V` pairs
/// separated by spaces. Values are typed as YAML reads them (`n=3` is a number).
pub fn parse_extra_vars(argument: &str) -> Result<Vars> {
    if let Some(path) = argument.strip_prefix('@') {
        let file = Path::new(path);
        let source = crate::taskbook::read_source(file)?;
        return mapping_from_yaml(&source, file);
    }
    let trimmed = argument.trim_start();
    if trimmed.starts_with('{') {
        return mapping_from_yaml(argument, Path::new("-e"));
    }
    let mut vars = Vars::new();
    for (key, value) in key_value_pairs(argument)? {
        let documents = parse_documents(&value, Path::new("-e"))?;
        let typed = match documents.first() {
            Some(doc) if doc.root.scalar().is_some() => doc.root.to_json(),
            _ => Value::String(value),
        };
        vars.insert(key, typed);
    }
    Ok(vars)
}

/// `a=1 b='two words' cmd=touch /tmp/x`: a new pair starts only at a word that begins
/// with `NAME=`, so unquoted spaces stay inside the value, as users mean them.
fn key_value_pairs(argument: &str) -> Result<Vec<(String, String)>> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for word in shell_split(argument) {
        match word.split_once('=') {
            Some((key, value)) if crate::taskbook::is_identifier(key) => {
                pairs.push((key.to_string(), value.to_string()))
            }
            _ => match pairs.last_mut() {
                Some((_, value)) => {
                    value.push(' ');
                    value.push_str(&word);
                }
                None => {
                    return Err(
                        Error::new(format!("`-e {argument}`: `{word}` is not KEY=VALUE"))
                            .with_hint(
                                "pass `-e name=value`, `-e '{\"name\": [1, 2]}'` or `-e @vars.yml`",
                            ),
                    )
                }
            },
        }
    }
    Ok(pairs)
}

fn mapping_from_yaml(source: &str, file: &Path) -> Result<Vars> {
    let documents = parse_documents(source, file)?;
    match documents.first().map(|d| d.root.to_json()) {
        Some(Value::Object(map)) => Ok(map),
        Some(other) => Err(Error::new(format!(
            "extra variables must be a mapping, found {}",
            crate::render::describe_value(&other)
        ))
        .in_file(file)),
        None => Ok(Vars::new()),
    }
}

/// Splits `a=1 b='two words'` like a shell would, keeping quoted spaces.
fn shell_split(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quote: Option<char> = None;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c.is_whitespace() => {
                if !current.is_empty() {
                    words.push(std::mem::take(&mut current));
                }
            }
            (None, c) => current.push(c),
        }
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(value: Value) -> Vars {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn higher_levels_win_whatever_the_push_order() {
        let mut layers = VarLayers::default();
        layers.push(VarLevel::ExtraVars, vars(json!({"a": "extra"})));
        layers.push(VarLevel::TaskBook, vars(json!({"a": "book", "b": 1})));
        layers.push(VarLevel::ConfigDefaults, vars(json!({"c": true, "b": 0})));
        let merged = layers.merged();
        assert_eq!(merged["a"], "extra");
        assert_eq!(merged["b"], 1);
        assert_eq!(merged["c"], true);
    }

    #[test]
    fn extra_vars_forms() {
        assert_eq!(
            parse_extra_vars("n=3 name='a b' ok=true").unwrap(),
            vars(json!({"n": 3, "name": "a b", "ok": true}))
        );
        assert_eq!(
            parse_extra_vars("cmd=touch /tmp/x n=1").unwrap(),
            vars(json!({"cmd": "touch /tmp/x", "n": 1}))
        );
        assert_eq!(
            parse_extra_vars("{users: [a, b]}").unwrap(),
            vars(json!({"users": ["a", "b"]}))
        );
        let err = parse_extra_vars("novalue").unwrap_err();
        assert!(err.message.contains("is not KEY=VALUE"), "{err}");
    }

    #[test]
    fn templated_vars_resolve_and_cycles_are_named() {
        let mut renderer = Renderer::default();
        let mut v = vars(json!({"host": "db", "url": "pg://{{ host }}:{{ port }}", "port": 5432}));
        resolve_templated_vars(&mut v, &tera::Context::new(), &mut renderer).unwrap();
        assert_eq!(v["url"], "pg://db:5432");

        let mut cyclic = vars(json!({"a": "{{ b }}", "b": "{{ a }}"}));
        let err =
            resolve_templated_vars(&mut cyclic, &tera::Context::new(), &mut renderer).unwrap_err();
        assert_eq!(
            err.message,
            "variables `a`, `b` refer to each other in a cycle"
        );
    }
}
