//! Where a rendering checks its budget. Tera can only run long in a loop or a macro
//! (macros may call themselves through `self::`), so each loop iteration and each macro
//! call starts with a call to [`BUDGET_HOOK`], put into the parsed template. Without a
//! loop, what a template makes grows only through filters: every filter checks the
//! budget first, and those that can multiply a size (`replace`, `indent`, `join`,
//! `split`) reckon what they would make before making it. The rest make at most a few
//! times what they are given (`escape` turns `"` into six bytes), and what they are
//! given is bounded, so a chain of them stops at the first step past the bound.
//! `range` refuses to make a list longer than [`MAX_RANGE_LEN`]. And since Tera's
//! parser recurses once per nesting level, deep nesting is refused before parsing.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use tera::ast::{Expr, ExprVal, FunctionCall, Node, WS};

use super::budget::{self, Exceeded};

/// The function that checks the budget; it renders as nothing (null, which Tera writes
/// without formatting anything).
const BUDGET_HOOK: &str = "__weft_budget";

/// The longest list `range` makes.
pub const MAX_RANGE_LEN: usize = 100_000;

/// The longest string a filter takes, and the most a filter that multiplies sizes may
/// make. One filter call then holds at most some 25 times this, while `truncate`
/// indexes every character of its string.
pub const MAX_FILTER_BYTES: usize = 16 << 20;

/// How deep a template may nest: blocks, and within a tag brackets and operators. Tera's
/// parser and renderer recurse once per level, with up to 10 KiB of stack each in a
/// debug build; real templates nest a few levels.
pub const MAX_NESTING: usize = 64;

/// Installs the hook and wraps the built-in filters and `range` of a fresh Tera.
pub(crate) fn install(tera: &mut tera::Tera) {
    // Tera keeps its filters in a public (if undocumented) map: wrapping them in place
    // keeps every built-in and adds the checks.
    let filters: Vec<(String, Arc<dyn tera::Filter>)> = tera.filters.drain().collect();
    for (name, filter) in filters {
        let growth = Growth::of(&name);
        tera.register_filter(
            &name.clone(),
            GuardedFilter {
                name,
                filter,
                growth,
            },
        );
    }
    if let Some(range) = tera.functions.get("range").cloned() {
        tera.register_function("range", BoundedRange(range));
    }
    tera.register_function(BUDGET_HOOK, |_: &HashMap<String, Value>| {
        budget::check().map(|()| Value::Null)
    });
}

/// Puts the budget check at the start of every loop body and macro body: the copies of
/// the template's nodes that Tera renders from (`ast`, blocks, macros) each get it.
pub(crate) fn instrument(template: &mut tera::Template) {
    instrument_nodes(&mut template.ast);
    for block in template.blocks.values_mut() {
        instrument_nodes(&mut block.body);
    }
    for definitions in template.blocks_definitions.values_mut() {
        for (_, block) in definitions {
            instrument_nodes(&mut block.body);
        }
    }
    for definition in template.macros.values_mut() {
        instrument_repeated_body(&mut definition.body);
    }
}

fn instrument_nodes(nodes: &mut [Node]) {
    for node in nodes {
        match node {
            Node::Forloop(_, forloop, _) => {
                instrument_repeated_body(&mut forloop.body);
                if let Some(empty_body) = &mut forloop.empty_body {
                    instrument_nodes(empty_body);
                }
            }
            Node::MacroDefinition(_, definition, _) => {
                instrument_repeated_body(&mut definition.body)
            }
            Node::If(if_node, _) => {
                for (_, _, body) in &mut if_node.conditions {
                    instrument_nodes(body);
                }
                if let Some((_, body)) = &mut if_node.otherwise {
                    instrument_nodes(body);
                }
            }
            Node::Block(_, block, _) => instrument_nodes(&mut block.body),
            Node::FilterSection(_, section, _) => instrument_nodes(&mut section.body),
            _ => {}
        }
    }
}

/// A body Tera may render again and again: a loop's, a macro's.
fn instrument_repeated_body(body: &mut Vec<Node>) {
    instrument_nodes(body);
    let hook = FunctionCall {
        name: BUDGET_HOOK.to_string(),
        args: HashMap::new(),
    };
    body.insert(
        0,
        Node::VariableBlock(WS::default(), Expr::new(ExprVal::FunctionCall(hook))),
    );
}

/// Tera's `range`, refusing lists longer than [`MAX_RANGE_LEN`] before it makes them.
struct BoundedRange(Arc<dyn tera::Function>);

impl tera::Function for BoundedRange {
    fn call(&self, args: &HashMap<String, Value>) -> tera::Result<Value> {
        let number = |key: &str, default: u64| args.get(key).map_or(Some(default), Value::as_u64);
        // Arguments of the wrong type are Tera's to report.
        if let (Some(start), Some(end), Some(step_by)) = (
            number("start", 0),
            args.get("end").and_then(Value::as_u64),
            number("step_by", 1),
        ) {
            let count = match step_by {
                0 if start < end => None,
                0 => Some(0),
                step_by => Some(end.saturating_sub(start).div_ceil(step_by)),
            };
            if count.is_none_or(|count| count > MAX_RANGE_LEN as u64) {
                return Err(budget::refuse(Exceeded::Range {
                    call: range_call(args),
                    count,
                    limit: MAX_RANGE_LEN,
                }));
            }
        }
        self.0.call(args)
    }
}

/// `range(...)` with the arguments given, as a user would write them.
fn range_call(args: &HashMap<String, Value>) -> String {
    let given: Vec<String> = ["start", "end", "step_by"]
        .into_iter()
        .filter_map(|key| Some(format!("{key}={}", args.get(key)?)))
        .collect();
    format!("range({})", given.join(", "))
}

/// A built-in filter that checks the budget, and the size of what it is given and
/// would make, before it runs.
struct GuardedFilter {
    name: String,
    filter: Arc<dyn tera::Filter>,
    growth: Growth,
}

/// How a filter's result can outgrow what it is given.
#[derive(Debug, Clone, Copy)]
enum Growth {
    /// By a few times at most.
    Bounded,
    Replace,
    Indent,
    Join,
    Split,
}

impl Growth {
    fn of(filter: &str) -> Growth {
        match filter {
            "replace" => Growth::Replace,
            "indent" => Growth::Indent,
            "join" => Growth::Join,
            "split" => Growth::Split,
            _ => Growth::Bounded,
        }
    }

    /// What a filter that can multiply a size would make, reckoned without making it.
    fn bytes_made(self, value: &Value, args: &HashMap<String, Value>) -> Option<usize> {
        let text = |key: &str| args.get(key).and_then(Value::as_str);
        match (self, value) {
            (Growth::Replace, Value::String(s)) => {
                let (from, to) = (text("from")?, text("to")?);
                let count = s.matches(from).count();
                Some((s.len() - count * from.len()).saturating_add(count.saturating_mul(to.len())))
            }
            (Growth::Indent, Value::String(s)) => {
                let prefix = text("prefix").map_or(4, str::len);
                let lines = s.matches('\n').count() + 1;
                Some(s.len().saturating_add(lines.saturating_mul(prefix)))
            }
            (Growth::Join, Value::Array(items)) => {
                let separator = text("sep").map_or(0, str::len);
                let strings: usize = items.iter().filter_map(Value::as_str).map(str::len).sum();
                Some(
                    strings.saturating_add(items.len().saturating_sub(1).saturating_mul(separator)),
                )
            }
            (Growth::Split, Value::String(s)) => {
                // Each piece becomes a value of its own.
                let pieces = s.matches(text("pat")?).count() + 1;
                Some(
                    s.len()
                        .saturating_add(pieces.saturating_mul(std::mem::size_of::<Value>())),
                )
            }
            _ => None,
        }
    }
}

impl tera::Filter for GuardedFilter {
    fn filter(&self, value: &Value, args: &HashMap<String, Value>) -> tera::Result<Value> {
        budget::check()?;
        let refuse = |bytes: usize, made: bool| {
            Err(budget::refuse(Exceeded::FilterSize {
                filter: self.name.clone(),
                bytes,
                made,
                limit: MAX_FILTER_BYTES,
            }))
        };
        if let Some(bytes) = value
            .as_str()
            .map(str::len)
            .filter(|&b| b > MAX_FILTER_BYTES)
        {
            return refuse(bytes, false);
        }
        if let Some(bytes) = self
            .growth
            .bytes_made(value, args)
            .filter(|&b| b > MAX_FILTER_BYTES)
        {
            return refuse(bytes, true);
        }
        self.filter.filter(value, args)
    }

    fn is_safe(&self) -> bool {
        self.filter.is_safe()
    }
}

/// Refuses a template that nests deeper than [`MAX_NESTING`], which could overflow the
/// stack in Tera's parser or renderer.
pub(crate) fn check_nesting(source: &str) -> Result<(), Exceeded> {
    let depth = nesting_depth(source);
    if depth > MAX_NESTING {
        return Err(Exceeded::Nesting {
            depth,
            limit: MAX_NESTING,
        });
    }
    Ok(())
}

/// Tags that open a block their `end...` tag closes.
const OPENING_TAGS: &[&str] = &["if", "for", "macro", "block", "filter"];

/// How deep Tera recurses for `source`, at most: open blocks, plus inside a tag its open
/// brackets and its operators (`a + b + c` is a tree as deep as it has operators).
/// Text, comments, raw blocks and strings do not nest.
fn nesting_depth(source: &str) -> usize {
    let (mut blocks, mut deepest) = (0usize, 0usize);
    let mut rest = source;
    while let Some(start) = rest.find('{') {
        rest = &rest[start..];
        let close = match rest.get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            Some("{#") => {
                rest = rest.find("#}").map_or("", |end| &rest[end + 2..]);
                continue;
            }
            _ => {
                rest = &rest[1..];
                continue;
            }
        };
        let tag = rest[2..].trim_start_matches(['-', ' ', '\t', '\r', '\n']);
        let keyword = tag
            .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .next()
            .unwrap_or("");
        if close == "%}" && keyword == "raw" {
            rest = rest.find("endraw").map_or("", |end| &rest[end..]);
            rest = rest.find("%}").map_or("", |end| &rest[end + 2..]);
            continue;
        }
        if close == "%}" && OPENING_TAGS.contains(&keyword) {
            blocks += 1;
        }
        let (inside, end) = expression_depth(tag, close);
        deepest = deepest.max(blocks + inside);
        if close == "%}" && keyword.starts_with("end") {
            blocks = blocks.saturating_sub(1);
        }
        rest = &tag[end..];
    }
    deepest
}

/// The depth of the expression in a tag up to `close`, and where the tag ends.
fn expression_depth(tag: &str, close: &str) -> (usize, usize) {
    let (mut brackets, mut operators, mut deepest) = (0usize, 0usize, 0usize);
    let bytes = tag.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index..].starts_with(close.as_bytes()) {
            return (deepest, index + close.len());
        }
        let byte = bytes[index];
        index += 1;
        match byte {
            b'(' | b'[' => brackets += 1,
            b')' | b']' => brackets = brackets.saturating_sub(1),
            b'"' | b'\'' | b'`' => {
                index += tag[index..]
                    .find(byte as char)
                    .map_or(tag.len(), |end| end + 1);
            }
            b'+' | b'-' | b'*' | b'/' | b'%' | b'<' | b'>' | b'!' => operators += 1,
            b'=' if bytes.get(index) == Some(&b'=') => {
                operators += 1;
                index += 1;
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let word_end = tag[index..]
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .map_or(tag.len(), |end| index + end);
                if matches!(&tag[index - 1..word_end], "and" | "or" | "in") {
                    operators += 1;
                }
                index = word_end;
            }
            _ => {}
        }
        deepest = deepest.max(brackets + operators);
    }
    (deepest, tag.len())
}
