//! Tera rendering for TaskBooks: strings in task arguments, `when`-style conditions,
//! and template files. A value that is one whole `{{ expression }}` keeps its type
//! (`loop: "{{ users }}"` is a list), as Ansible users expect.
//!
//! Every rendering runs under a budget of time, memory and stack (`budget`), checked
//! in loops, macros, filters and `range` (`guards`): a template is input, and a bad one
//! fails its task instead of hanging or aborting the process.

mod budget;
mod guards;

use serde_json::Value;

use self::budget::Exceeded;
pub use self::budget::{CountingAllocator, TimeLimit, DEFAULT_RENDER_TIME, MAX_RENDER_BYTES};
pub use self::guards::{MAX_FILTER_BYTES, MAX_NESTING, MAX_RANGE_LEN};
use crate::error::{closest_match, Error, PathSegment, Span};
use crate::yaml::{Node, NodeValue};

/// True when Tera would change the text.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

const EVAL_PREFIX: &str = "{% set weft_value = ";
const EVAL_SUFFIX: &str = " %}{{ weft_value | json_encode() }}";
const ONE_OFF_NAME: &str = "__tera_one_off";

/// Renders with one Tera instance, reused across a run (it holds the built-in filters).
pub struct Renderer {
    tera: tera::Tera,
    time_limit: TimeLimit,
}

impl Default for Renderer {
    fn default() -> Self {
        let mut tera = tera::Tera::default();
        // Config files are not HTML: never escape.
        tera.autoescape_on(Vec::new());
        guards::install(&mut tera);
        Renderer {
            tera,
            time_limit: TimeLimit::Default,
        }
    }
}

/// Why a template did not render: Tera's own error, or the budget ran out.
enum Failure {
    Tera(tera::Error),
    Exceeded(Exceeded),
}

impl Failure {
    fn into_error(
        self,
        context: &tera::Context,
        origin: TemplateOrigin,
        prefix_len: usize,
    ) -> Error {
        match self {
            Failure::Tera(error) => tera_error(error, context, origin, prefix_len),
            Failure::Exceeded(exceeded) => exceeded.into_error(origin.span),
        }
    }
}

/// Where a template came from, to place Tera's own line:column inside the file.
#[derive(Debug, Clone, Copy)]
pub struct TemplateOrigin {
    pub span: Span,
    /// Characters between `span` and the template's first character (a quote, say).
    pub offset: usize,
}

impl TemplateOrigin {
    pub fn of(node: &Node) -> Self {
        let quoted = matches!(&node.value, NodeValue::Scalar { quoted: true, .. });
        TemplateOrigin {
            span: node.span,
            offset: usize::from(quoted),
        }
    }

    /// A whole file: Tera's positions are the file's positions.
    pub fn file() -> Self {
        TemplateOrigin {
            span: Span { line: 1, col: 1 },
            offset: 0,
        }
    }

    fn place(&self, template_line: usize, template_col: usize) -> Span {
        if template_line <= 1 {
            Span {
                line: self.span.line,
                col: self.span.col + self.offset + template_col.saturating_sub(1),
            }
        } else {
            Span {
                line: self.span.line + template_line - 1,
                col: template_col,
            }
        }
    }
}

impl Renderer {
    /// Bounds the time of every rendering from now on; a task sets its own `timeout`
    /// and puts back [`TimeLimit::Default`] when done.
    pub fn set_time_limit(&mut self, time_limit: TimeLimit) {
        self.time_limit = time_limit;
    }

    /// Parses `source` as the one template this Tera holds; the caller removes it.
    fn add_one_off(&mut self, source: &str) -> Result<(), Failure> {
        guards::check_nesting(source).map_err(Failure::Exceeded)?;
        self.tera
            .add_raw_template(ONE_OFF_NAME, source)
            .map_err(Failure::Tera)
    }

    /// Parses `source` for its errors only.
    fn compile_one_off(&mut self, source: &str) -> Result<(), Failure> {
        let added = self.add_one_off(source);
        self.tera.templates.remove(ONE_OFF_NAME);
        added
    }

    /// Renders `source` under the budget.
    fn render_one_off(&mut self, source: &str, context: &tera::Context) -> Result<String, Failure> {
        let added = self.add_one_off(source);
        let rendered = added.and_then(|()| {
            if let Some(template) = self.tera.templates.get_mut(ONE_OFF_NAME) {
                guards::instrument(template);
            }
            let (rendered, exceeded) =
                budget::within_budget(self.time_limit, || self.tera.render(ONE_OFF_NAME, context));
            match exceeded {
                Some(exceeded) => Err(Failure::Exceeded(exceeded)),
                None => rendered.map_err(Failure::Tera),
            }
        });
        self.tera.templates.remove(ONE_OFF_NAME);
        rendered
    }

    /// Renders text to a string.
    pub fn render_text(
        &mut self,
        text: &str,
        context: &tera::Context,
        origin: TemplateOrigin,
    ) -> Result<String, Error> {
        if !is_template(text) {
            return Ok(text.to_string());
        }
        self.render_one_off(text, context)
            .map_err(|e| e.into_error(context, origin, 0))
    }

    /// Evaluates one Tera expression to a JSON value.
    pub fn evaluate(
        &mut self,
        expression: &str,
        context: &tera::Context,
        origin: TemplateOrigin,
    ) -> Result<Value, Error> {
        let wrapped = format!("{EVAL_PREFIX}{expression}{EVAL_SUFFIX}");
        let json = self
            .render_one_off(&wrapped, context)
            .map_err(|e| e.into_error(context, origin, EVAL_PREFIX.len()))?;
        serde_json::from_str(&json).map_err(|e| {
            Error::new(format!("could not read the value of `{expression}`: {e}")).at(origin.span)
        })
    }

    /// Evaluates a condition (`when`, `changed_when`, `failed_when`, `until`, `assert`):
    /// it must produce a boolean, never a string or list that happens to be truthy.
    pub fn condition(
        &mut self,
        expression: &str,
        context: &tera::Context,
        origin: TemplateOrigin,
    ) -> Result<bool, Error> {
        let expression = strip_braces(expression);
        match self.evaluate(expression, context, origin)? {
            Value::Bool(b) => Ok(b),
            other => Err(Error::new(format!(
                "the condition `{expression}` must be true or false, but it gave {}",
                describe_value(&other)
            ))
            .at(origin.span)
            .with_hint(
                "compare explicitly, e.g. `x | length > 0`, `x is defined`, or `x == \"yes\"`",
            )),
        }
    }

    /// Renders every templated string in a node; a lone `{{ expr }}` keeps its type.
    pub fn render_node(&mut self, node: &Node, context: &tera::Context) -> Result<Value, Error> {
        match &node.value {
            NodeValue::Scalar { text, .. } if is_template(text) => {
                self.render_scalar(node, text, context)
            }
            NodeValue::Scalar { .. } => Ok(node.to_json()),
            NodeValue::Sequence(items) => items
                .iter()
                .map(|item| self.render_node(item, context))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            NodeValue::Mapping(entries) => {
                let mut map = serde_json::Map::new();
                for (key, value) in entries {
                    let key = key.scalar().unwrap_or_default().to_string();
                    map.insert(key, self.render_node(value, context)?);
                }
                Ok(Value::Object(map))
            }
        }
    }

    /// Renders a node into a node: untemplated scalars keep their raw text ("0644"),
    /// rendered values take the position of the template they came from.
    pub fn render_to_node(&mut self, node: &Node, context: &tera::Context) -> Result<Node, Error> {
        Ok(match &node.value {
            NodeValue::Scalar { text, .. } if is_template(text) => {
                Node::from_json(&self.render_scalar(node, text, context)?, node.span)
            }
            NodeValue::Scalar { .. } => node.clone(),
            NodeValue::Sequence(items) => Node {
                span: node.span,
                value: NodeValue::Sequence(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            self.render_to_node(item, context)
                                .map_err(|e| e.under(PathSegment::Index(i)))
                        })
                        .collect::<Result<_, _>>()?,
                ),
            },
            NodeValue::Mapping(entries) => Node {
                span: node.span,
                value: NodeValue::Mapping(
                    entries
                        .iter()
                        .map(|(k, v)| {
                            let rendered = self.render_to_node(v, context).map_err(|e| {
                                e.under(PathSegment::Key(k.scalar().unwrap_or_default().into()))
                            })?;
                            Ok((k.clone(), rendered))
                        })
                        .collect::<Result<_, Error>>()?,
                ),
            },
        })
    }

    /// A templated scalar's value: a lone `{{ expr }}` keeps its type, anything else
    /// renders to a string.
    fn render_scalar(
        &mut self,
        node: &Node,
        text: &str,
        context: &tera::Context,
    ) -> Result<Value, Error> {
        let origin = TemplateOrigin::of(node);
        match whole_expression(text) {
            Some(expression) => {
                let offset = origin.offset + text.find("{{").unwrap_or(0) + 2;
                self.evaluate(
                    expression,
                    context,
                    TemplateOrigin {
                        span: origin.span,
                        offset,
                    },
                )
            }
            None => self.render_text(text, context, origin).map(Value::String),
        }
    }

    /// Compiles a template without rendering it, so syntax errors surface before a run.
    pub fn check_syntax(&mut self, text: &str, origin: TemplateOrigin) -> Result<(), Error> {
        if !is_template(text) {
            return Ok(());
        }
        self.compile_one_off(text)
            .map_err(|e| e.into_error(&tera::Context::new(), origin, 0))
    }

    /// Checks every templated string below a node.
    pub fn check_node_syntax(&mut self, node: &Node) -> Result<(), Error> {
        match &node.value {
            NodeValue::Scalar { text, .. } => self.check_syntax(text, TemplateOrigin::of(node)),
            NodeValue::Sequence(items) => items.iter().try_for_each(|i| self.check_node_syntax(i)),
            NodeValue::Mapping(entries) => entries
                .iter()
                .try_for_each(|(_, v)| self.check_node_syntax(v)),
        }
    }

    /// Checks a condition's syntax (it is an expression, not a template).
    pub fn check_condition_syntax(
        &mut self,
        expression: &str,
        origin: TemplateOrigin,
    ) -> Result<(), Error> {
        let wrapped = format!("{EVAL_PREFIX}{}{EVAL_SUFFIX}", strip_braces(expression));
        self.compile_one_off(&wrapped)
            .map_err(|e| e.into_error(&tera::Context::new(), origin, EVAL_PREFIX.len()))
    }
}

/// Ansible habit: `when: "{{ x }}"`. The braces add nothing to a condition.
fn strip_braces(expression: &str) -> &str {
    whole_expression(expression).unwrap_or(expression.trim())
}

/// `Some(expr)` when the text is exactly one `{{ expr }}`.
fn whole_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim())
}

pub fn describe_value(value: &Value) -> String {
    let text = value.to_string();
    let shown = if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    };
    let kind = match value {
        Value::Null => return "nothing (null)".to_string(),
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    };
    format!("{kind} ({shown})")
}

/// Turns Tera's nested error into one message at a file position.
fn tera_error(
    error: tera::Error,
    context: &tera::Context,
    origin: TemplateOrigin,
    prefix_len: usize,
) -> Error {
    let mut messages = vec![error.to_string()];
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        messages.push(inner.to_string());
        source = inner.source();
    }
    let innermost = messages.last().cloned().unwrap_or_default();

    if let Some(name) = between(&innermost, "Variable `", "` not found") {
        let root = name.split(['.', '[']).next().unwrap_or(name);
        let known: Vec<String> = context
            .clone()
            .into_json()
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let hint = match closest_match(root, known.iter().map(String::as_str)) {
            Some(candidate) if candidate != root => format!("did you mean `{candidate}`?"),
            _ => "define it in `vars`, pass it with `-e`, or test it with `is defined`".to_string(),
        };
        return Error::new(format!("undefined variable `{name}`"))
            .at(origin.span)
            .with_hint(hint);
    }

    // A syntax error from the parser: " --> line:col" followed by "= expected ...".
    if let Some(position) = innermost.split("--> ").nth(1) {
        let mut numbers = position
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().unwrap_or(1));
        let line = numbers.next().unwrap_or(1);
        let col = numbers.next().unwrap_or(1);
        let col = if line == 1 {
            col.saturating_sub(prefix_len).max(1)
        } else {
            col
        };
        let expected = innermost
            .lines()
            .find_map(|l| l.trim().strip_prefix("= "))
            .unwrap_or("a valid Tera expression");
        return Error::new(format!("template syntax error: {expected}"))
            .at(origin.place(line, col))
            .with_hint(
                "Tera syntax: `{{ var }}`, `{% if x %}...{% endif %}`, filters as `x | upper`",
            );
    }

    let message = innermost
        .replace(&format!(" while rendering '{ONE_OFF_NAME}'"), "")
        .replace(&format!("'{ONE_OFF_NAME}'"), "the template");
    Error::new(format!("template error: {message}")).at(origin.span)
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(&text[from..to])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> tera::Context {
        tera::Context::from_value(json!({"users": ["a", "b"], "port": 8080, "os": "debian"}))
            .unwrap()
    }

    fn origin() -> TemplateOrigin {
        TemplateOrigin {
            span: Span { line: 4, col: 10 },
            offset: 0,
        }
    }

    #[test]
    fn whole_expressions_keep_their_type() {
        let mut r = Renderer::default();
        let node = crate::yaml::parse_documents("x: '{{ users }}'", std::path::Path::new("t"))
            .unwrap()[0]
            .root
            .clone();
        let value = r.render_node(node.get("x").unwrap(), &context()).unwrap();
        assert_eq!(value, json!(["a", "b"]));
    }

    #[test]
    fn mixed_text_renders_to_a_string() {
        let mut r = Renderer::default();
        let text = r
            .render_text("port={{ port }} <{{ os }}>", &context(), origin())
            .unwrap();
        assert_eq!(text, "port=8080 <debian>");
    }

    #[test]
    fn conditions_must_be_boolean() {
        let mut r = Renderer::default();
        assert!(r.condition("os == 'debian'", &context(), origin()).unwrap());
        assert!(!r
            .condition("{{ port > 9000 }}", &context(), origin())
            .unwrap());
        let err = r.condition("users", &context(), origin()).unwrap_err();
        assert_eq!(
            err.message,
            "the condition `users` must be true or false, but it gave a list ([\"a\",\"b\"])"
        );
    }

    #[test]
    fn undefined_variables_suggest_a_name() {
        let mut r = Renderer::default();
        let err = r
            .render_text("{{ prot }}", &context(), origin())
            .unwrap_err();
        assert_eq!(err.message, "undefined variable `prot`");
        assert_eq!(err.hint.as_deref(), Some("did you mean `port`?"));
    }

    #[test]
    fn syntax_errors_are_placed_in_the_file() {
        let mut r = Renderer::default();
        let err = r.check_syntax("a {{ port + }}", origin()).unwrap_err();
        assert!(err.message.starts_with("template syntax error"), "{err}");
        assert_eq!(err.span.unwrap().line, 4);
        let err = r.check_condition_syntax("port ==", origin()).unwrap_err();
        assert!(err.message.starts_with("template syntax error"), "{err}");
    }

    /// Renders `text` with a fresh renderer on a thread with the 2 MiB of stack that
    /// Rust and Tokio give their threads, so that a crash would show here.
    fn render_on_small_stack(text: String) -> Result<String, Error> {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || Renderer::default().render_text(&text, &context(), origin()))
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn a_range_bomb_fails_before_it_allocates() {
        let mut r = Renderer::default();
        let err = r
            .render_text("{{ range(end=999999999) | length }}", &context(), origin())
            .unwrap_err();
        assert_eq!(
            err.message,
            "range(end=999999999) asks for 999999999 numbers; at most 100000"
        );
        assert_eq!(err.span, Some(origin().span));
        let err = r
            .condition(
                "range(start=1, end=5, step_by=0) | length > 0",
                &context(),
                origin(),
            )
            .unwrap_err();
        assert_eq!(
            err.message,
            "range(start=1, end=5, step_by=0) never ends: `step_by` must be at least 1"
        );
        let most = format!("{{{{ range(end={MAX_RANGE_LEN}) | length }}}}");
        assert_eq!(
            r.render_text(&most, &context(), origin()).unwrap(),
            "100000"
        );
    }

    #[test]
    fn a_loop_of_10_8_steps_stops_at_the_task_timeout() {
        let mut r = Renderer::default();
        r.set_time_limit(TimeLimit::starting_now(Some(
            std::time::Duration::from_millis(50),
        )));
        let err = r
            .render_text(
                "{% for i in range(end=10000) %}{% for j in range(end=10000) %}{% endfor %}{% endfor %}",
                &context(),
                origin(),
            )
            .unwrap_err();
        assert_eq!(
            err.message,
            "rendering stopped after 50ms (the task's `timeout`): a loop or macro runs too long"
        );
        assert_eq!(
            err.hint.as_deref(),
            Some("loop over fewer items, or raise the task's `timeout`")
        );
        // The budget ends with the rendering that ran out of it.
        r.set_time_limit(TimeLimit::Default);
        let text = r.render_text(
            "{% for i in range(end=3) %}{{ i }}{% endfor %}",
            &context(),
            origin(),
        );
        assert_eq!(text.unwrap(), "012");
    }

    #[test]
    fn every_place_a_loop_can_be_is_checked() {
        let spin = "{% for i in range(end=10000) %}{% for j in range(end=10000) %}{% endfor %}{% endfor %}";
        for template in [
            format!(
                "{{% if true %}}x{{% else %}}{spin}{{% endif %}}{{% if true %}}{spin}{{% endif %}}"
            ),
            format!("{{% block b %}}{spin}{{% endblock b %}}"),
            format!("{{% filter upper %}}{spin}{{% endfilter %}}"),
            format!("{{% for k in [] %}}{{% else %}}{spin}{{% endfor %}}"),
            format!("{{% macro m() %}}{spin}{{% endmacro %}}{{{{ self::m() }}}}"),
        ] {
            let mut r = Renderer::default();
            r.set_time_limit(TimeLimit::starting_now(Some(
                std::time::Duration::from_millis(20),
            )));
            let err = r.render_text(&template, &context(), origin()).unwrap_err();
            assert!(
                err.message.starts_with("rendering stopped after 20ms"),
                "{template}: {err}"
            );
        }
    }

    #[test]
    fn a_string_doubled_in_a_loop_stops_at_the_memory_bound() {
        let mut r = Renderer::default();
        let err = r
            .render_text(
                "{% set_global s = 'ab' %}{% for i in range(end=64) %}{% set_global s = s ~ s %}{% endfor %}{{ s | length }}",
                &context(),
                origin(),
            )
            .unwrap_err();
        assert_eq!(err.message, "rendering used more than 256.0 MiB");
    }

    #[test]
    fn chained_replace_stops_before_it_makes_the_string() {
        let mut r = Renderer::default();
        let chain = " | replace(from='a', to=s)".repeat(10);
        let err = r
            .render_text(
                &format!("{{% set s = 'aaaaaaaaaa' %}}{{{{ s{chain} }}}}"),
                &context(),
                origin(),
            )
            .unwrap_err();
        assert_eq!(
            err.message,
            "`replace` would make 100000000 bytes; a filter takes and makes at most 16.0 MiB"
        );
        let lines = "{% set s = range(end=100000) | join(sep='\\n') %}";
        for (filter, template) in [
            ("indent", "{{ s | indent(prefix=s) }}"),
            ("join", "{{ range(end=100000) | join(sep=s) }}"),
            ("split", "{{ s | split(pat='') | length }}"),
        ] {
            let err = r
                .render_text(&format!("{lines}{template}"), &context(), origin())
                .unwrap_err();
            assert!(
                err.message.starts_with(&format!("`{filter}` would make ")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_macro_that_calls_itself_stops_before_the_stack_ends() {
        let err = render_on_small_stack(
            "{% macro f(n) %}{{ self::f(n=n+1) }}{% endmacro %}{{ self::f(n=0) }}".to_string(),
        )
        .unwrap_err();
        assert_eq!(
            err.message,
            "macro calls nest too deeply: rendering stopped before it ran out of stack"
        );
        // Each call nested as deep as allowed (macro, ifs, bracket, `+`): the check comes
        // once per call.
        let deep_body = format!(
            "{}{{{{ self::f(n=n+1) }}}}{}",
            "{% if true %}".repeat(MAX_NESTING - 3),
            "{% endif %}".repeat(MAX_NESTING - 3)
        );
        let err = render_on_small_stack(format!(
            "{{% macro f(n) %}}{deep_body}{{% endmacro %}}{{{{ self::f(n=0) }}}}"
        ))
        .unwrap_err();
        assert!(
            err.message.starts_with("macro calls nest too deeply"),
            "{err}"
        );
        let ten_calls =
            "{% macro f(n) %}{% if n < 10 %}{{ n }}{{ self::f(n=n+1) }}{% endif %}{% endmacro %}{{ self::f(n=0) }}";
        assert_eq!(
            render_on_small_stack(ten_calls.to_string()).unwrap(),
            "0123456789"
        );
    }

    #[test]
    fn the_deepest_nesting_allowed_renders_on_a_small_stack() {
        let ifs = |n: usize| format!("{}x{}", "{% if true %}".repeat(n), "{% endif %}".repeat(n));
        let brackets = |n: usize| format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n));
        let sums = |n: usize| format!("{{{{ 0{} }}}}", " + 1".repeat(n));
        let ands = |n: usize| format!("{{{{ true{} }}}}", " and true".repeat(n));
        let half = MAX_NESTING / 2;
        let mixed = |n: usize| {
            format!(
                "{}{}{}",
                "{% for i in [1] %}".repeat(half),
                sums(n - half),
                "{% endfor %}".repeat(half)
            )
        };
        let shapes: [&dyn Fn(usize) -> String; 5] = [&ifs, &brackets, &sums, &ands, &mixed];
        for shape in shapes {
            let deepest = shape(MAX_NESTING);
            render_on_small_stack(deepest.clone()).unwrap_or_else(|e| panic!("{deepest}: {e}"));
            let err = render_on_small_stack(shape(MAX_NESTING + 1)).unwrap_err();
            assert_eq!(
                err.message,
                "the template nests blocks, brackets and operators 65 deep; at most 64"
            );
            let err = Renderer::default()
                .check_syntax(&shape(10 * MAX_NESTING), origin())
                .unwrap_err();
            assert!(err.message.starts_with("the template nests"), "{err}");
        }
    }

    #[test]
    fn nesting_counts_only_what_tera_parses() {
        let mut r = Renderer::default();
        let deep_text = format!(
            "{0}{{# {0} #}}{{% raw %}}{{{{ {0} }}}}{{% endraw %}}{{{{ '{0}' ~ index ~ origin }}}}",
            "((((".repeat(MAX_NESTING)
        );
        let context = tera::Context::from_value(json!({"index": 1, "origin": 2})).unwrap();
        let text = r.render_text(&deep_text, &context, origin()).unwrap();
        assert!(text.ends_with("12"), "{text}");
    }
}
