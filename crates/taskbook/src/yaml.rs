//! A YAML tree that remembers where every node came from.
//!
//! serde_yaml (archived) and its forks lose positions inside flattened and untagged
//! types, and weft's errors must always say file:line:column. So documents are read
//! into this tree with yaml-rust2's event parser, and `crate::de` deserializes from it.
//! Scalars keep their raw text and style: `mode: 0644` stays "0644" for a string field
//! while YAML 1.2 would read it as the integer 644.

use std::collections::HashMap;
use std::path::Path;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

use crate::error::{Error, Result, Span};

/// Input bounds: a TaskBook is read whole into memory, and aliases can multiply it.
pub const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_NODES: usize = 200_000;
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: NodeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Scalar { text: String, quoted: bool },
    Sequence(Vec<Node>),
    Mapping(Vec<(Node, Node)>),
}

/// The YAML 1.2 core-schema reading of a scalar.
#[derive(Debug, Clone, PartialEq)]
pub enum ScalarValue<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

impl Node {
    pub fn scalar(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Reads a scalar as YAML 1.2's core schema does: quoted scalars are always strings.
    pub fn resolve_scalar(&self) -> Option<ScalarValue<'_>> {
        let NodeValue::Scalar { text, quoted } = &self.value else {
            return None;
        };
        if *quoted {
            return Some(ScalarValue::Str(text));
        }
        Some(match text.as_str() {
            "" | "~" | "null" | "Null" | "NULL" => ScalarValue::Null,
            "true" | "True" | "TRUE" => ScalarValue::Bool(true),
            "false" | "False" | "FALSE" => ScalarValue::Bool(false),
            ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
                ScalarValue::Float(f64::INFINITY)
            }
            "-.inf" | "-.Inf" | "-.INF" => ScalarValue::Float(f64::NEG_INFINITY),
            ".nan" | ".NaN" | ".NAN" => ScalarValue::Float(f64::NAN),
            other => parse_number(other).unwrap_or(ScalarValue::Str(text)),
        })
    }

    /// True for a string that Tera would render: it may become any type once rendered.
    pub fn is_template(&self) -> bool {
        self.scalar().is_some_and(crate::render::is_template)
    }

    /// What the node is, for "expected X, found Y" messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            NodeValue::Sequence(_) => "a list",
            NodeValue::Mapping(_) => "a mapping",
            NodeValue::Scalar { .. } => match self.resolve_scalar() {
                Some(ScalarValue::Null) => "nothing (null)",
                Some(ScalarValue::Bool(_)) => "a boolean",
                Some(ScalarValue::Int(_)) => "an integer",
                Some(ScalarValue::Float(_)) => "a number",
                _ => "a string",
            },
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Mapping(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node as a JSON value, with scalars typed by the core schema.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Scalar { .. } => match self.resolve_scalar() {
                Some(ScalarValue::Null) | None => Value::Null,
                Some(ScalarValue::Bool(b)) => Value::Bool(b),
                Some(ScalarValue::Int(i)) => Value::from(i),
                Some(ScalarValue::Float(f)) => serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                Some(ScalarValue::Str(s)) => Value::String(s.to_string()),
            },
            NodeValue::Sequence(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Mapping(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar().unwrap_or_default().to_string(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

impl Node {
    /// The tree as block-style YAML that reads back to the same tree: scalars keep their
    /// raw text and whether they were quoted (`0644` stays plain, `"0644"` quoted), so a
    /// document stored on its own means what it meant in its file.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        self.write_yaml(&mut out, 0);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }

    fn write_yaml(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        match &self.value {
            NodeValue::Scalar { .. } => {
                out.push_str(&self.yaml_scalar());
                out.push('\n');
            }
            NodeValue::Sequence(items) if items.is_empty() => out.push_str("[]\n"),
            NodeValue::Mapping(entries) if entries.is_empty() => out.push_str("{}\n"),
            NodeValue::Sequence(items) => {
                for item in items {
                    out.push_str(&pad);
                    out.push('-');
                    item.write_yaml_after_indicator(out, indent + 2);
                }
            }
            NodeValue::Mapping(entries) => {
                for (key, value) in entries {
                    out.push_str(&pad);
                    out.push_str(&key.yaml_scalar());
                    out.push(':');
                    value.write_yaml_after_indicator(out, indent + 2);
                }
            }
        }
    }

    /// What follows `key:` or `-`: a scalar on the same line, a collection below it.
    fn write_yaml_after_indicator(&self, out: &mut String, indent: usize) {
        match &self.value {
            NodeValue::Scalar {
                text,
                quoted: false,
            } if text.is_empty() => out.push('\n'),
            NodeValue::Sequence(items) if !items.is_empty() => {
                out.push('\n');
                self.write_yaml(out, indent);
            }
            NodeValue::Mapping(entries) if !entries.is_empty() => {
                out.push('\n');
                self.write_yaml(out, indent);
            }
            _ => {
                out.push(' ');
                self.write_yaml(out, indent);
            }
        }
    }

    /// A plain scalar as written (it was valid plain YAML where it came from, and block
    /// context allows more than flow context); anything else double-quoted, which JSON's
    /// escapes are valid for.
    fn yaml_scalar(&self) -> String {
        match &self.value {
            NodeValue::Scalar {
                text,
                quoted: false,
            } if !text.contains('\n') => text.clone(),
            NodeValue::Scalar { text, .. } => {
                serde_json::to_string(text).expect("a string always serializes")
            }
            _ => serde_json::to_string(&self.to_json().to_string()).expect("a string serializes"),
        }
    }
}

/// A JSON value as YAML for people: strings that read back as the same strings are
/// written plain, the others quoted.
pub fn json_to_yaml(value: &serde_json::Value) -> String {
    fn unquote_safe(node: &mut Node) {
        match &mut node.value {
            NodeValue::Scalar { text, quoted } => {
                let safe_chars = !text.is_empty()
                    && text
                        .chars()
                        .all(|c| c.is_alphanumeric() || "_./@-+ ".contains(c))
                    && !text.starts_with(['-', ' ', '@'])
                    && !text.ends_with(' ');
                if *quoted && safe_chars {
                    let plain = Node {
                        span: node.span,
                        value: NodeValue::Scalar {
                            text: text.clone(),
                            quoted: false,
                        },
                    };
                    if matches!(plain.resolve_scalar(), Some(ScalarValue::Str(_))) {
                        *quoted = false;
                    }
                }
            }
            NodeValue::Sequence(items) => items.iter_mut().for_each(unquote_safe),
            NodeValue::Mapping(entries) => entries.iter_mut().for_each(|(key, value)| {
                unquote_safe(key);
                unquote_safe(value);
            }),
        }
    }
    let mut node = Node::from_json(value, Span::default());
    unquote_safe(&mut node);
    node.to_yaml()
}

impl Node {
    /// A tree for a JSON value, every node at `span` (values that came from a template).
    pub fn from_json(value: &serde_json::Value, span: Span) -> Node {
        use serde_json::Value;
        let scalar = |text: String, quoted: bool| NodeValue::Scalar { text, quoted };
        let value = match value {
            Value::Null => scalar(String::new(), false),
            Value::Bool(b) => scalar(b.to_string(), false),
            Value::Number(n) => scalar(n.to_string(), false),
            Value::String(s) => scalar(s.clone(), true),
            Value::Array(items) => {
                NodeValue::Sequence(items.iter().map(|i| Node::from_json(i, span)).collect())
            }
            Value::Object(map) => NodeValue::Mapping(
                map.iter()
                    .map(|(k, v)| {
                        let key = Node {
                            span,
                            value: scalar(k.clone(), true),
                        };
                        (key, Node::from_json(v, span))
                    })
                    .collect(),
            ),
        };
        Node { span, value }
    }
}

fn parse_number(text: &str) -> Option<ScalarValue<'static>> {
    let unsigned = text.trim_start_matches(['+', '-']);
    let negative = text.starts_with('-');
    if let Some(octal) = text.strip_prefix("0o") {
        return i64::from_str_radix(octal, 8).ok().map(ScalarValue::Int);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok().map(ScalarValue::Int);
    }
    let first = unsigned.chars().next()?;
    if !(first.is_ascii_digit() || first == '.') || unsigned.len() + 1 < text.len() {
        return None;
    }
    if unsigned.bytes().all(|b| b.is_ascii_digit()) {
        let magnitude: i64 = unsigned.parse().ok()?;
        return Some(ScalarValue::Int(if negative {
            -magnitude
        } else {
            magnitude
        }));
    }
    let looks_float = unsigned
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if looks_float {
        return text.parse::<f64>().ok().map(ScalarValue::Float);
    }
    None
}

/// One document of a file, with the file's name for error messages.
#[derive(Debug, Clone)]
pub struct Document {
    pub root: Node,
    /// The line the document starts on, for errors about a whole document.
    pub span: Span,
}

/// Reads every document of a YAML stream. `file` is used only in error messages.
pub fn parse_documents(source: &str, file: &Path) -> Result<Vec<Document>> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(Error::new(format!(
            "the file is {} bytes; weft reads YAML files of at most {} bytes",
            source.len(),
            MAX_SOURCE_BYTES
        ))
        .in_file(file)
        .with_hint("split it into several files and use `include`"));
    }
    let mut builder = TreeBuilder::default();
    let mut parser = Parser::new_from_str(source);
    let parsed = parser.load(&mut builder, true);
    if let Some(error) = builder.error {
        return Err(error.in_file(file));
    }
    if let Err(scan_error) = parsed {
        let marker = scan_error.marker();
        return Err(
            Error::new(format!("YAML syntax error: {}", scan_error.info()))
                .at(span_of(marker))
                .in_file(file)
                .with_hint("check the indentation and quoting around this position"),
        );
    }
    Ok(builder.documents)
}

fn span_of(marker: &Marker) -> Span {
    // yaml-rust2 reports 0-based columns.
    Span {
        line: marker.line(),
        col: marker.col() + 1,
    }
}

/// Builds `Node`s from parser events, expanding aliases within `MAX_NODES`.
#[derive(Default)]
struct TreeBuilder {
    documents: Vec<Document>,
    /// Open collections: the node under construction, and a pending mapping key.
    stack: Vec<(Node, usize, Option<Node>)>,
    anchors: HashMap<usize, Node>,
    document_span: Span,
    node_count: usize,
    error: Option<Error>,
}

impl TreeBuilder {
    fn fail(&mut self, error: Error) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    fn count(&mut self, nodes: usize, span: Span) -> bool {
        self.node_count += nodes;
        if self.node_count > MAX_NODES {
            self.fail(
                Error::new(format!(
                    "the document has more than {MAX_NODES} values (after expanding aliases)"
                ))
                .at(span)
                .with_hint("this limit protects the master and nodes from runaway input"),
            );
            return false;
        }
        true
    }

    fn open(&mut self, node: Node, anchor: usize) {
        if self.stack.len() >= MAX_DEPTH {
            let span = node.span;
            self.fail(
                Error::new(format!(
                    "values are nested more than {MAX_DEPTH} levels deep"
                ))
                .at(span),
            );
            return;
        }
        self.stack.push((node, anchor, None));
    }

    fn close(&mut self) {
        if let Some((node, anchor, _)) = self.stack.pop() {
            self.finish(node, anchor);
        }
    }

    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.documents.push(Document {
                root: node,
                span: self.document_span,
            }),
            Some((parent, _, pending_key)) => match &mut parent.value {
                NodeValue::Sequence(items) => items.push(node),
                NodeValue::Mapping(entries) => match pending_key.take() {
                    None => {
                        // A block mapping's start event is reported after its first key;
                        // the mapping starts where that key does.
                        if entries.is_empty()
                            && (node.span.line, node.span.col) < (parent.span.line, parent.span.col)
                        {
                            parent.span = node.span;
                        }
                        *pending_key = Some(node)
                    }
                    Some(key) => {
                        let duplicate = entries
                            .iter()
                            .any(|(k, _)| k.scalar().is_some() && k.scalar() == key.scalar());
                        if duplicate {
                            let name = key.scalar().unwrap_or_default().to_string();
                            let span = key.span;
                            self.fail(
                                Error::new(format!("duplicate key `{name}`"))
                                    .at(span)
                                    .with_hint("a key may appear only once in a mapping"),
                            );
                            return;
                        }
                        entries.push((key, node));
                    }
                },
                NodeValue::Scalar { .. } => unreachable!("scalars are never opened"),
            },
        }
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        if self.error.is_some() {
            return;
        }
        let span = span_of(&marker);
        match event {
            Event::DocumentStart => self.document_span = span,
            Event::Scalar(text, style, anchor, _tag) => {
                if !self.count(1, span) {
                    return;
                }
                let quoted = !matches!(style, TScalarStyle::Plain);
                self.finish(
                    Node {
                        span,
                        value: NodeValue::Scalar { text, quoted },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => {
                if self.count(1, span) {
                    self.open(
                        Node {
                            span,
                            value: NodeValue::Sequence(Vec::new()),
                        },
                        anchor,
                    )
                }
            }
            Event::MappingStart(anchor, _) => {
                if self.count(1, span) {
                    self.open(
                        Node {
                            span,
                            value: NodeValue::Mapping(Vec::new()),
                        },
                        anchor,
                    )
                }
            }
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(anchor) => {
                let Some(node) = self.anchors.get(&anchor).cloned() else {
                    self.fail(Error::new("alias to an unknown anchor").at(span));
                    return;
                };
                if self.count(count_nodes(&node), span) {
                    self.finish(node, 0);
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        NodeValue::Scalar { .. } => 0,
        NodeValue::Sequence(items) => items.iter().map(count_nodes).sum(),
        NodeValue::Mapping(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(source: &str) -> Result<Vec<Document>> {
        parse_documents(source, Path::new("t.yml"))
    }

    #[test]
    fn positions_are_one_based() {
        let docs = parse("a: 1\nb:\n  c: [x, 'y']\n").unwrap();
        let b = docs[0].root.get("b").unwrap();
        let c = b.get("c").unwrap();
        assert_eq!(c.span, Span { line: 3, col: 6 });
        let NodeValue::Sequence(items) = &c.value else {
            panic!()
        };
        assert_eq!(items[1].span, Span { line: 3, col: 10 });
    }

    #[test]
    fn scalars_follow_the_core_schema() {
        let docs = parse("[~, true, 0644, 0o17, 1.5, yes, '12', -3]").unwrap();
        let NodeValue::Sequence(items) = &docs[0].root.value else {
            panic!()
        };
        let values: Vec<_> = items.iter().map(|n| n.resolve_scalar().unwrap()).collect();
        assert_eq!(
            values,
            vec![
                ScalarValue::Null,
                ScalarValue::Bool(true),
                ScalarValue::Int(644),
                ScalarValue::Int(15),
                ScalarValue::Float(1.5),
                ScalarValue::Str("yes"),
                ScalarValue::Str("12"),
                ScalarValue::Int(-3),
            ]
        );
        assert_eq!(items[2].scalar(), Some("0644"));
    }

    #[test]
    fn block_mappings_start_at_their_first_key() {
        let docs = parse("tasks:\n  - name: t\n    ping:\n").unwrap();
        let NodeValue::Sequence(tasks) = &docs[0].root.get("tasks").unwrap().value else {
            panic!()
        };
        assert_eq!(tasks[0].span, Span { line: 2, col: 5 });
        assert_eq!(docs[0].root.span, Span { line: 1, col: 1 });
    }

    #[test]
    fn several_documents() {
        let docs = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].root.get("b").unwrap().span.line, 3);
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(
            err.to_string().lines().next().unwrap(),
            "t.yml:2:1: duplicate key `a`"
        );
    }

    #[test]
    fn alias_bombs_are_bounded() {
        let mut source = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = i - 1;
            source.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = parse(&source).unwrap_err();
        assert!(err.message.contains("more than 200000 values"), "{err}");
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let source = "[".repeat(100) + &"]".repeat(100);
        let err = parse(&source).unwrap_err();
        assert!(err.message.contains("nested more than 64"), "{err}");
    }

    #[test]
    fn a_tree_written_as_yaml_reads_back_the_same() {
        let source = "a: 0644\nb: \"0644\"\nc:\nd: [1, {e: \"x: y\"}, []]\nf: {}\ng: |\n  two\n  lines\nh:\n  - - nested\n  - k: v\n    l: 'it''s'\n";
        let root = &parse(source).unwrap()[0].root;
        let written = root.to_yaml();
        let again = &parse(&written).unwrap()[0].root;
        assert_eq!(again.to_yaml(), written);
        assert_eq!(again.to_json(), root.to_json());
        assert_eq!(
            again.get("a").unwrap().resolve_scalar(),
            Some(ScalarValue::Int(644))
        );
        assert_eq!(again.get("b").unwrap().scalar(), Some("0644"));
        assert!(matches!(
            again.get("b").unwrap().value,
            NodeValue::Scalar { quoted: true, .. }
        ));
        assert_eq!(again.get("g").unwrap().scalar(), Some("two\nlines\n"));
    }

    #[test]
    fn json_reads_back_from_the_yaml_written_for_people() {
        let value = serde_json::json!({
            "name": "web-1", "mode": "0644", "on": "true", "n": 3, "empty": "",
            "text": "a: b", "list": ["x y", "-dash", {"k": null}], "none": {}
        });
        let yaml = json_to_yaml(&value);
        assert!(
            yaml.contains("name: web-1\n") && yaml.contains("mode: \"0644\""),
            "{yaml}"
        );
        assert_eq!(parse(&yaml).unwrap()[0].root.to_json(), value);
    }
}
