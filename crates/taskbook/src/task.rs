//! A task: one module call plus the keys that say when, how often and how to judge it.
//! Every key other than the task keywords names the module; there must be exactly one.

use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::de::{error_at, Spanned};
use crate::duration::Duration;
use crate::error::{closest_match, Span};
use crate::yaml::Node;

/// The keys a task may carry besides its module.
pub const TASK_KEYWORDS: &[&str] = &[
    "name",
    "when",
    "loop",
    "register",
    "notify",
    "changed_when",
    "failed_when",
    "ignore_errors",
    "retries",
    "delay",
    "until",
    "tags",
    "check_mode",
    "no_log",
    "run_once",
    "timeout",
];

/// Ansible keys users will type, with what to write in weft instead.
const ANSIBLE_KEYS: &[(&str, &str)] = &[
    ("with_items", "use `loop:` instead of `with_items:`"),
    ("with_list", "use `loop:` instead of `with_list:`"),
    (
        "become",
        "tasks run as the weft minion's user; there is no `become`",
    ),
    (
        "vars",
        "set variables on the step (`steps[].vars`) or with `set_var`",
    ),
    ("listen", "name the handler in `notify` directly"),
];

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: Option<String>,
    pub module: Spanned<String>,
    /// The module's arguments, kept as written: templates render per node at run time.
    pub args: Node,
    pub when: Conditions,
    /// A list, or a template that renders to one.
    pub loop_items: Option<Node>,
    pub register: Option<Spanned<String>>,
    pub notify: Vec<Spanned<String>>,
    pub changed_when: Conditions,
    pub failed_when: Conditions,
    pub ignore_errors: bool,
    pub retries: u32,
    pub delay: Duration,
    pub until: Conditions,
    pub tags: Vec<String>,
    /// `Some(true)`: always check only; `Some(false)`: run even under `--check`.
    pub check_mode: Option<bool>,
    pub no_log: bool,
    pub run_once: bool,
    pub timeout: Option<Duration>,
    pub span: Span,
}

impl Task {
    /// The name shown in output: the task's own, or the module and its first argument.
    pub fn display_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let first = match self.args.scalar() {
            Some(text) => Some(text.to_string()),
            None => match &self.args.value {
                crate::yaml::NodeValue::Mapping(entries) => entries
                    .first()
                    .and_then(|(_, v)| v.scalar())
                    .map(str::to_string),
                _ => None,
            },
        };
        match first {
            Some(text) => format!("{} {}", self.module.value, truncate(&text, 40)),
            None => self.module.value.clone(),
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}...", text.chars().take(max - 3).collect::<String>())
    }
}

/// One or more expressions, AND-ed (Ansible's list form). Empty means "not set".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conditions(pub Vec<Spanned<String>>);

impl Conditions {
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Conditions {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        StringList::deserialize(deserializer).map(|list| Conditions(list.0))
    }
}

/// A string or a list of strings, each with its position (`notify`, `tags`, conditions,
/// and module arguments such as `package`'s `name`).
#[derive(Debug)]
pub struct StringList(pub Vec<Spanned<String>>);

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let outer: Spanned<OneOrMany> = Spanned::deserialize(deserializer)?;
        Ok(StringList(match outer.value {
            OneOrMany::One(value) => vec![Spanned {
                line: outer.line,
                col: outer.col,
                value,
            }],
            OneOrMany::Many(values) => values,
        }))
    }
}

impl StringList {
    /// The items as Ansible reads a list argument: a string of comma-separated items
    /// is split, blanks around them dropped, empty items skipped.
    pub fn comma_separated_items(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|item| item.value.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_string)
            .collect()
    }
}

enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrManyVisitor;
        impl<'de> Visitor<'de> for OneOrManyVisitor {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        deserializer.deserialize_any(OneOrManyVisitor)
    }
}

impl<'de> Deserialize<'de> for Task {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let spanned: Spanned<TaskFields> = Spanned::deserialize(deserializer)?;
        let span = spanned.span();
        let fields = spanned.value;
        let Some((module, args)) = fields.module else {
            return Err(error_at(
                span,
                "this task names no module: add one such as `command: ...` or `copy: {...}`",
            ));
        };
        Ok(Task {
            name: fields.name,
            module,
            args,
            when: fields.when,
            loop_items: fields.loop_items,
            register: fields.register,
            notify: fields.notify,
            changed_when: fields.changed_when,
            failed_when: fields.failed_when,
            ignore_errors: fields.ignore_errors,
            retries: fields.retries,
            delay: fields.delay.unwrap_or(Duration::from_secs(1)),
            until: fields.until,
            tags: fields.tags,
            check_mode: fields.check_mode,
            no_log: fields.no_log,
            run_once: fields.run_once,
            timeout: fields.timeout,
            span,
        })
    }
}

#[derive(Default)]
struct TaskFields {
    name: Option<String>,
    module: Option<(Spanned<String>, Node)>,
    when: Conditions,
    loop_items: Option<Node>,
    register: Option<Spanned<String>>,
    notify: Vec<Spanned<String>>,
    changed_when: Conditions,
    failed_when: Conditions,
    ignore_errors: bool,
    retries: u32,
    delay: Option<Duration>,
    until: Conditions,
    tags: Vec<String>,
    check_mode: Option<bool>,
    no_log: bool,
    run_once: bool,
    timeout: Option<Duration>,
}

impl<'de> Deserialize<'de> for TaskFields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TaskVisitor)
    }
}

struct TaskVisitor;

impl<'de> Visitor<'de> for TaskVisitor {
    type Value = TaskFields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a task (a mapping with a module key such as `command:`)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TaskFields, A::Error> {
        let mut task = TaskFields::default();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            match key.value.as_str() {
                "name" => task.name = Some(map.next_value()?),
                "when" => task.when = map.next_value()?,
                "loop" => task.loop_items = Some(map.next_value()?),
                "register" => task.register = Some(map.next_value()?),
                "notify" => task.notify = map.next_value::<StringList>()?.0,
                "changed_when" => task.changed_when = map.next_value()?,
                "failed_when" => task.failed_when = map.next_value()?,
                "ignore_errors" => task.ignore_errors = map.next_value()?,
                "retries" => task.retries = map.next_value()?,
                "delay" => task.delay = Some(map.next_value()?),
                "until" => task.until = map.next_value()?,
                "tags" => {
                    task.tags = map
                        .next_value::<StringList>()?
                        .0
                        .into_iter()
                        .map(|t| t.value)
                        .collect()
                }
                "check_mode" => task.check_mode = Some(map.next_value()?),
                "no_log" => task.no_log = map.next_value()?,
                "run_once" => task.run_once = map.next_value()?,
                "timeout" => task.timeout = Some(map.next_value()?),
                other => {
                    if let Some((_, advice)) = ANSIBLE_KEYS.iter().find(|(k, _)| *k == other) {
                        return Err(error_at(
                            key.span(),
                            format!("unknown task key `{other}`: {advice}"),
                        ));
                    }
                    if let Some((first, _)) = &task.module {
                        let typo = closest_match(other, TASK_KEYWORDS.iter().copied())
                            .map(|k| format!(" (did you mean `{k}`?)"))
                            .unwrap_or_default();
                        return Err(error_at(
                            key.span(),
                            format!(
                                "a task runs exactly one module, but this one has `{}` and `{other}`{typo}",
                                first.value
                            ),
                        ));
                    }
                    let args: Node = map.next_value()?;
                    task.module = Some((key, args));
                }
            }
        }
        Ok(task)
    }
}
