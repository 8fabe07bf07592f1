//! What a step's templates read that only the master has: which Secrets, and whether
//! other nodes (`nodes["db-1"]`, `nodes.db`). Found by walking every text a step renders
//! (its tasks' fields and arguments, its own and the TaskBook's vars), and the files its
//! tasks render, never a printed form of the step: what reaches a node must not depend
//! on how a type prints.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::secrets::secret_references;
use crate::yaml::{Node, NodeValue};
use crate::{Step, Task, Vars};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateReferences {
    /// The names of the Secrets read.
    pub secrets: BTreeSet<String>,
    /// Whether any template reads `nodes`: only then does every node get every other
    /// node's facts and results, which is large on a big fleet.
    pub other_nodes: bool,
}

impl TemplateReferences {
    /// What `text` reads.
    pub fn of_text(text: &str) -> Self {
        let mut references = TemplateReferences::default();
        references.add_text(text);
        references
    }

    /// What the scalars of `node` read.
    pub fn of_node(node: &Node) -> Self {
        let mut references = TemplateReferences::default();
        references.add_node(node);
        references
    }

    /// What the templates of `step` read, with the TaskBook's `vars` it can render.
    pub fn of_step(taskbook_vars: &Vars, step: &Step) -> Self {
        let mut references = TemplateReferences::default();
        for value in taskbook_vars.values().chain(step.vars.values()) {
            references.add_value(value);
        }
        for task in step.tasks.iter().chain(&step.handlers) {
            references.add_task(task);
        }
        references
    }

    pub fn add_text(&mut self, text: &str) {
        self.secrets.extend(secret_references(text));
        self.other_nodes |= reads_other_nodes(text);
    }

    pub fn add(&mut self, other: &TemplateReferences) {
        self.secrets.extend(other.secrets.iter().cloned());
        self.other_nodes |= other.other_nodes;
    }

    fn add_task(&mut self, task: &Task) {
        let conditions = task
            .when
            .0
            .iter()
            .chain(&task.changed_when.0)
            .chain(&task.failed_when.0)
            .chain(&task.until.0);
        for condition in conditions {
            self.add_text(&condition.value);
        }
        if let Some(name) = &task.name {
            self.add_text(name);
        }
        self.add_node(&task.args);
        if let Some(items) = &task.loop_items {
            self.add_node(items);
        }
    }

    fn add_node(&mut self, node: &Node) {
        match &node.value {
            NodeValue::Scalar { text, .. } => self.add_text(text),
            NodeValue::Sequence(items) => items.iter().for_each(|item| self.add_node(item)),
            NodeValue::Mapping(entries) => entries.iter().for_each(|(key, value)| {
                self.add_node(key);
                self.add_node(value);
            }),
        }
    }

    fn add_value(&mut self, value: &Value) {
        match value {
            Value::String(text) => self.add_text(text),
            Value::Array(items) => items.iter().for_each(|item| self.add_value(item)),
            Value::Object(entries) => entries.iter().for_each(|(key, value)| {
                self.add_text(key);
                self.add_value(value);
            }),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// Whether `text` reads `nodes[...]` or `nodes.x` (and not `my_nodes`, or a step's
/// `nodes:` selector, which is no template).
fn reads_other_nodes(text: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices("nodes").any(|(at, _)| {
        let before_ok =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let after = text[at + 5..].trim_start();
        before_ok && (after.starts_with('[') || after.starts_with('.'))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::TaskBook;

    fn step_references(source: &str) -> Vec<TemplateReferences> {
        let taskbook = TaskBook::from_source(source, Path::new("t.yml")).unwrap();
        taskbook
            .steps
            .iter()
            .map(|step| TemplateReferences::of_step(&taskbook.vars, step))
            .collect()
    }

    #[test]
    fn other_nodes_are_read_only_through_nodes_index_or_field() {
        assert!(reads_other_nodes(r#"{{ nodes["db-1"].register.out }}"#));
        assert!(reads_other_nodes("nodes.db.facts.os.family == 'debian'"));
        assert!(!reads_other_nodes("nodes: {all: true}"));
        assert!(!reads_other_nodes("{{ my_nodes.x }}"));
    }

    #[test]
    fn every_template_of_a_step_counts_and_nothing_else() {
        let references = step_references(
            r#"apiVersion: weft/v1
kind: TaskBook
metadata: {name: t}
spec:
  vars: {dsn: "{{ secrets.db.url }}"}
  steps:
    - name: "uses secrets.not_a_template"
      nodes: {names: [a]}
      vars: {token: "{{ secrets['api'].token }}"}
      tasks:
        - name: "{{ secrets.named.x }}"
          debug: {msg: ["{{ secrets.arg.x }}"]}
          when: secrets.when.x is defined
          loop: "{{ secrets.items.list }}"
      handlers:
        - {name: h, debug: {msg: "{{ nodes.b.facts }}"}, changed_when: "secrets.changed.x"}
    - tasks:
        - debug: {msg: plain}
"#,
        );
        let names: Vec<&str> = references[0].secrets.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            ["api", "arg", "changed", "db", "items", "named", "when"]
        );
        assert!(references[0].other_nodes);
        // The TaskBook's vars reach every step.
        let names: Vec<&str> = references[1].secrets.iter().map(String::as_str).collect();
        assert_eq!(names, ["db"]);
        assert!(!references[1].other_nodes);
    }
}
