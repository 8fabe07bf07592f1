//! What a run reports: per node, per task results, a recap per node, and the one JSON
//! schema (`weft.run/v1`) that local and cluster runs share. The text form prints each
//! result the moment it arrives.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const RUN_SCHEMA: &str = "weft.run/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Ok,
    Changed,
    Failed,
    Skipped,
    /// Failed, with `ignore_errors: true`.
    Ignored,
    /// The node could not be reached (cluster runs).
    Unreachable,
}

impl TaskStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Ok => "ok",
            TaskStatus::Changed => "changed",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::Ignored => "ignored",
            TaskStatus::Unreachable => "unreachable",
        }
    }

    /// Whether the node stops running the TaskBook after this.
    pub fn stops_node(self) -> bool {
        matches!(self, TaskStatus::Failed | TaskStatus::Unreachable)
    }
}

/// One loop item's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemResult {
    pub item: Value,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

/// One task on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub node: String,
    pub step: String,
    pub task: String,
    pub module: String,
    /// `file:line:col` of the task.
    pub location: String,
    #[serde(default)]
    pub handler: bool,
    pub status: TaskStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// A unified diff (file content) or a short before/after summary (mode, state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemResult>,
    /// The module's result as `register` stores it; null under `no_log`.
    #[serde(default)]
    pub output: Value,
    pub attempts: u32,
    pub started_unix_ms: u64,
    pub duration_ms: f64,
}

impl TaskResult {
    /// The result as JSON of at most about `max_bytes`: as it is when it fits (one
    /// serialization, the common case), else trimmed as [`TaskResult::trimmed_to`] says.
    /// A node sends what fits its session rather than losing it.
    pub fn into_bounded_json(self, max_bytes: usize) -> String {
        let json = serde_json::to_string(&self).expect("results serialize");
        if json.len() <= max_bytes {
            return json;
        }
        serde_json::to_string(&self.trimmed_to(max_bytes)).expect("results serialize")
    }

    /// The result within `max_bytes` of JSON: past that its diffs are cut, then its
    /// output replaced by a note, then its items' diffs and messages dropped, each
    /// saying so.
    fn trimmed_to(mut self, max_bytes: usize) -> TaskResult {
        let size = |result: &TaskResult| serde_json::to_vec(result).map_or(0, |json| json.len());
        let mut total = size(&self);
        if total <= max_bytes {
            return self;
        }
        let diff_share = max_bytes / 4;
        if let Some(diff) = &mut self.diff {
            cut(diff, diff_share, "diff");
        }
        total = size(&self);
        if total > max_bytes {
            self.output = Value::String(format!(
                "(output left out: this result weighed {total} bytes, more than the {max_bytes} a result carries)"
            ));
            total = size(&self);
        }
        if total > max_bytes {
            for item in &mut self.items {
                item.diff = None;
                item.msg = item.msg.take().map(|mut msg| {
                    cut(&mut msg, 256, "message");
                    msg
                });
            }
        }
        if let Some(msg) = &mut self.msg {
            cut(msg, diff_share, "message");
        }
        self
    }
}

/// Cuts `text` to about `max_bytes` at a character boundary, saying what was left out.
fn cut(text: &mut String, max_bytes: usize, what: &str) {
    if text.len() <= max_bytes {
        return;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let left_out = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("\n... ({what} cut: {left_out} more bytes)"));
}

/// Counts of task results for one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecap {
    pub node: String,
    pub ok: u32,
    pub changed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub ignored: u32,
    pub unreachable: u32,
}

impl NodeRecap {
    pub fn count(&mut self, status: TaskStatus) {
        let counter = match status {
            TaskStatus::Ok => &mut self.ok,
            TaskStatus::Changed => &mut self.changed,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Skipped => &mut self.skipped,
            TaskStatus::Ignored => &mut self.ignored,
            TaskStatus::Unreachable => &mut self.unreachable,
        };
        *counter += 1;
    }
}

/// A whole run: `weft run taskbook -o json` prints exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub schema: String,
    /// The master's job id; absent for local runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    pub taskbook: String,
    pub file: String,
    pub check_mode: bool,
    pub started_unix_ms: u64,
    pub duration_ms: f64,
    pub results: Vec<TaskResult>,
    pub recap: Vec<NodeRecap>,
    /// True when any task failed or any node was unreachable (exit status 2).
    pub failed: bool,
}

impl RunReport {
    pub fn new(taskbook: &str, file: &str, check_mode: bool) -> Self {
        RunReport {
            schema: RUN_SCHEMA.to_string(),
            job: None,
            taskbook: taskbook.to_string(),
            file: file.to_string(),
            check_mode,
            started_unix_ms: unix_ms_now(),
            duration_ms: 0.0,
            results: Vec::new(),
            recap: Vec::new(),
            failed: false,
        }
    }

    /// Records a result and counts it in the node's recap.
    pub fn record(&mut self, result: TaskResult) {
        let recap = match self.recap.iter_mut().position(|r| r.node == result.node) {
            Some(index) => &mut self.recap[index],
            None => {
                self.recap.push(NodeRecap {
                    node: result.node.clone(),
                    ..NodeRecap::default()
                });
                self.recap.last_mut().expect("just pushed")
            }
        };
        recap.count(result.status);
        self.failed |= result.status.stops_node();
        self.results.push(result);
    }

    /// Adds a node with no results yet, so it appears in the recap even if nothing ran.
    pub fn add_node(&mut self, node: &str) {
        if !self.recap.iter().any(|r| r.node == node) {
            self.recap.push(NodeRecap {
                node: node.to_string(),
                ..NodeRecap::default()
            });
        }
    }

    pub fn finish(&mut self) {
        self.duration_ms = unix_ms_now().saturating_sub(self.started_unix_ms) as f64;
    }
}

pub fn unix_ms_now() -> u64 {
    unix_ms(SystemTime::now())
}

/// Milliseconds since the Unix epoch, the unit every stored time uses; 0 before it.
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Receives a run's progress as it happens.
pub trait RunObserver {
    fn step_started(&mut self, _index: usize, _total: usize, _step: &str, _nodes: &[String]) {}
    fn task_finished(&mut self, _result: &TaskResult) {}
}

/// Observes nothing: for `-o json`, where only the final report is printed.
pub struct Silent;

impl RunObserver for Silent {}

/// Prints each result as a line the moment it arrives, for people at a terminal.
pub struct TextPrinter<W: Write> {
    out: W,
    show_diff: bool,
    color: bool,
}

impl<W: Write> TextPrinter<W> {
    pub fn new(out: W, show_diff: bool, color: bool) -> Self {
        TextPrinter {
            out,
            show_diff,
            color,
        }
    }

    fn paint(&self, status: TaskStatus) -> String {
        let word = format!("{:<8}", status.as_str());
        if !self.color {
            return word;
        }
        let code = match status {
            TaskStatus::Ok => "32",
            TaskStatus::Changed => "33",
            TaskStatus::Failed | TaskStatus::Unreachable => "31",
            TaskStatus::Skipped => "36",
            TaskStatus::Ignored => "35",
        };
        format!("\x1b[{code}m{word}\x1b[0m")
    }

    /// The recap table at the end of a run.
    pub fn write_recap(&mut self, report: &RunReport) -> io::Result<()> {
        let width = report.recap.iter().map(|r| r.node.len()).max().unwrap_or(0);
        writeln!(
            self.out,
            "\nRECAP {} ({:.0} ms{})",
            report.taskbook,
            report.duration_ms,
            if report.check_mode {
                ", check mode: nothing was changed"
            } else {
                ""
            }
        )?;
        for r in &report.recap {
            writeln!(
                self.out,
                "  {:<width$}  ok={} changed={} failed={} skipped={} ignored={} unreachable={}",
                r.node, r.ok, r.changed, r.failed, r.skipped, r.ignored, r.unreachable
            )?;
        }
        self.out.flush()
    }

    fn write_result(&mut self, result: &TaskResult) -> io::Result<()> {
        let status = self.paint(result.status);
        let handler = if result.handler { "handler: " } else { "" };
        let attempts = if result.attempts > 1 {
            format!(", {} attempts", result.attempts)
        } else {
            String::new()
        };
        writeln!(
            self.out,
            "  {status} {}  {handler}{}  ({:.1} ms{attempts})",
            result.node, result.task, result.duration_ms
        )?;
        for item in &result.items {
            let item_text = compact(&item.item);
            writeln!(
                self.out,
                "      {:<8} item={item_text}",
                item.status.as_str()
            )?;
            self.write_details(item.msg.as_deref(), item.diff.as_deref(), 8)?;
        }
        self.write_details(result.msg.as_deref(), result.diff.as_deref(), 6)?;
        self.out.flush()
    }

    fn write_details(
        &mut self,
        msg: Option<&str>,
        diff: Option<&str>,
        indent: usize,
    ) -> io::Result<()> {
        let pad = " ".repeat(indent);
        if let Some(msg) = msg {
            for line in msg.lines() {
                writeln!(self.out, "{pad}{line}")?;
            }
        }
        if self.show_diff {
            if let Some(diff) = diff {
                for line in diff.lines() {
                    writeln!(self.out, "{pad}{line}")?;
                }
            }
        }
        Ok(())
    }
}

fn compact(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl<W: Write> RunObserver for TextPrinter<W> {
    fn step_started(&mut self, index: usize, total: usize, step: &str, nodes: &[String]) {
        let plural = if nodes.len() == 1 { "" } else { "s" };
        // A closed stdout (piped into `head`) must not abort the run.
        let _ = writeln!(
            self.out,
            "STEP {}/{total}  {step}  ({} node{plural})",
            index + 1,
            nodes.len()
        );
    }

    fn task_finished(&mut self, result: &TaskResult) {
        let _ = self.write_result(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(node: &str, status: TaskStatus) -> TaskResult {
        TaskResult {
            node: node.into(),
            step: "s".into(),
            task: "t".into(),
            module: "ping".into(),
            location: "a.yml:1:1".into(),
            handler: false,
            status,
            msg: None,
            diff: Some("--- a\n+++ b".into()),
            items: vec![],
            output: Value::Null,
            attempts: 1,
            started_unix_ms: 0,
            duration_ms: 1.25,
        }
    }

    #[test]
    fn a_result_past_its_bound_is_cut_and_says_so() {
        let small = result("a", TaskStatus::Changed);
        assert_eq!(small.clone().trimmed_to(10_000), small);
        assert_eq!(
            small.clone().into_bounded_json(10_000),
            serde_json::to_string(&small).unwrap()
        );

        let mut big = result("a", TaskStatus::Changed);
        big.diff = Some("+é line\n".repeat(5_000));
        big.output = serde_json::json!({"stdout": "x".repeat(20_000)});
        let json = big.into_bounded_json(10_000);
        assert!(json.len() <= 10_000, "{}", json.len());
        let trimmed: TaskResult = serde_json::from_str(&json).unwrap();
        let diff = trimmed.diff.unwrap();
        assert!(diff.starts_with("+é line\n"), "{diff}");
        assert!(diff.ends_with("more bytes)"), "{diff}");
        assert!(trimmed
            .output
            .as_str()
            .unwrap()
            .starts_with("(output left out"));
    }

    #[test]
    fn recap_counts_and_failure() {
        let mut report = RunReport::new("book", "a.yml", false);
        report.record(result("a", TaskStatus::Changed));
        report.record(result("a", TaskStatus::Ok));
        report.record(result("b", TaskStatus::Ignored));
        assert!(!report.failed);
        report.record(result("b", TaskStatus::Failed));
        assert!(report.failed);
        assert_eq!(report.recap[0].changed, 1);
        assert_eq!(report.recap[1].ignored, 1);
        assert_eq!(report.recap[1].failed, 1);
    }

    #[test]
    fn text_lines_show_diff_only_when_asked() {
        let mut plain = TextPrinter::new(Vec::new(), false, false);
        plain.task_finished(&result("web-1", TaskStatus::Changed));
        let text = String::from_utf8(plain.out).unwrap();
        assert_eq!(text, "  changed  web-1  t  (1.2 ms)\n");

        let mut with_diff = TextPrinter::new(Vec::new(), true, false);
        with_diff.task_finished(&result("web-1", TaskStatus::Changed));
        let text = String::from_utf8(with_diff.out).unwrap();
        assert!(text.ends_with("      --- a\n      +++ b\n"), "{text}");
    }
}
