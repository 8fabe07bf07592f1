//! `weft run taskbook FILE|NAME` on a cluster: checks a TaskBook file here first (so errors
//! name the admin's own files) and ships its folder to the master, or names one stored
//! in the cluster, then follows the job: each
//! result as a line, a progress bar per step on a terminal, then the recap, or one
//! weft.run/v1 JSON document with `-o json`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use weft_modules::{validate_taskbook, CustomModules};
use weft_proto::adminapi::{run_event, RunTaskBookRequest};
use weft_taskbook::bundle::Bundle;
use weft_taskbook::report::{RunObserver, RunReport, TaskResult, TextPrinter};
use weft_taskbook::taskbook::MasterReadsRepos;
use weft_taskbook::{TaskBook, Vars};

use crate::admin::AdminClient;
use crate::output::Output;
use crate::CliError;

pub struct RemoteRun {
    pub file: PathBuf,
    pub check_mode: bool,
    pub diff: bool,
    pub extra_vars: Vec<Vars>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    /// `--nodes`: names and k=v labels, comma-separated.
    pub nodes: Option<String>,
    pub output: Output,
    /// The namespace of a stored TaskBook or of `repo` (`-n`).
    pub namespace: Option<String>,
    /// `--repo`: `file` is a path in this GitRepository, read on the master.
    pub repo: Option<String>,
}

/// A TaskBook stored in the cluster when the argument is a name rather than a file
/// here: no such file, no `/`, no YAML extension.
fn stored_taskbook_name(file: &std::path::Path) -> Option<String> {
    let text = file.to_str()?;
    let looks_like_path = text.contains('/') || text.ends_with(".yml") || text.ends_with(".yaml");
    (!file.exists() && !looks_like_path).then(|| text.to_string())
}

pub async fn run_taskbook(client: &mut AdminClient, run: RemoteRun) -> Result<RunReport, CliError> {
    let source = match (&run.repo, stored_taskbook_name(&run.file)) {
        (Some(repo), _) => RunTaskBookRequest {
            repo: repo.clone(),
            repo_path: run.file.to_string_lossy().into_owned(),
            stored_taskbook_namespace: run.namespace.clone().unwrap_or_default(),
            ..Default::default()
        },
        (None, Some(name)) => RunTaskBookRequest {
            stored_taskbook: name,
            stored_taskbook_namespace: run.namespace.clone().unwrap_or_default(),
            ..Default::default()
        },
        (None, None) => {
            if run.namespace.is_some() {
                return Err(CliError::Input(format!(
                    "-n names the namespace of a stored TaskBook or of --repo, but {} is a file here",
                    run.file.display()
                )));
            }
            let taskbook = TaskBook::load_with_repos(&run.file, &mut MasterReadsRepos)?;
            validate_taskbook(&taskbook, CustomModules::OnNodes)?;
            let bundle = Bundle::for_taskbook(&taskbook, &CustomModules::OnNodes)?;
            RunTaskBookRequest {
                taskbook_file: bundle.taskbook_file.clone(),
                files: bundle.files.into_iter().collect(),
                ..Default::default()
            }
        }
    };
    let request = RunTaskBookRequest {
        nodes_selector: run.nodes.unwrap_or_default(),
        check_mode: run.check_mode,
        diff: run.diff,
        extra_vars_json: run
            .extra_vars
            .iter()
            .map(|vars| serde_json::Value::Object(vars.clone()).to_string())
            .collect(),
        tags: run.tags,
        skip_tags: run.skip_tags,
        ..source
    };
    let mut events = client.run_task_book(request).await?.into_inner();

    let text = run.output == Output::Text;
    let color = text && std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut printer = TextPrinter::new(std::io::stdout().lock(), run.diff, color);
    let progress = Progress::new(text && std::io::stderr().is_terminal());
    let mut job_id = String::new();
    let mut lost = String::from("the stream ended");
    loop {
        let event = match events.message().await {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(status) => {
                lost = status.message().to_string();
                break;
            }
        };
        match event.kind {
            Some(run_event::Kind::Started(started)) => {
                job_id = started.job_id;
                if text {
                    progress.suspend(|| eprintln!("job {job_id}"));
                }
            }
            Some(run_event::Kind::StepStarted(step)) => {
                progress.step(&step.step_name, step.node_names.len());
                if text {
                    progress.suspend(|| {
                        printer.step_started(
                            step.step_index as usize,
                            step.step_count as usize,
                            &step.step_name,
                            &step.node_names,
                        )
                    });
                }
            }
            Some(run_event::Kind::TaskResultJson(json)) => {
                let result: TaskResult = serde_json::from_str(&json).map_err(|e| {
                    CliError::Master(format!(
                        "the master sent a result that is not weft.run/v1: {e}"
                    ))
                })?;
                if text {
                    progress.suspend(|| printer.task_finished(&result));
                }
            }
            Some(run_event::Kind::NodeStepDone(_)) => progress.node_done(),
            Some(run_event::Kind::ReportJson(json)) => {
                progress.finish();
                let report: RunReport = serde_json::from_str(&json).map_err(|e| {
                    CliError::Master(format!(
                        "the master sent a report that is not weft.run/v1: {e}"
                    ))
                })?;
                if text {
                    let _ = printer.write_recap(&report);
                }
                return Ok(report);
            }
            None => {}
        }
    }
    progress.finish();
    Err(CliError::Master(format!(
        "lost the master before job {job_id} ended ({lost}); the job goes on if the master does, \
         and once it is back `weft job show {job_id}` tells how far the job got"
    )))
}

/// One bar per step: nodes done out of the step's nodes. Hidden off a terminal.
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new(visible: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(
            None,
            if visible {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} nodes {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(100));
        Progress { bar }
    }

    fn step(&self, name: &str, nodes: usize) {
        self.bar.reset();
        self.bar.set_length(nodes as u64);
        self.bar.set_message(name.to_string());
    }

    fn node_done(&self) {
        self.bar.inc(1);
    }

    fn suspend(&self, print: impl FnOnce()) {
        self.bar.suspend(print);
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
