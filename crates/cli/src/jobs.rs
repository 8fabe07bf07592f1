//! `weft jobs`, `weft job show ID`.

use serde_json::Value;
use weft_proto::adminapi::{GetJobRequest, ListJobsRequest};
use weft_taskbook::report::{RunReport, TextPrinter};

use crate::admin::AdminClient;
use crate::output::{print_json, table, timestamp, Output};
use crate::CliError;

pub async fn list_jobs(
    client: &mut AdminClient,
    limit: u32,
    output: Output,
) -> Result<(), CliError> {
    let jobs = client
        .list_jobs(ListJobsRequest { limit })
        .await?
        .into_inner()
        .jobs;
    match output {
        Output::Json => {
            let jobs: Vec<Value> = jobs
                .iter()
                .map(|job| {
                    serde_json::json!({
                        "job_id": job.job_id,
                        "taskbook": job.taskbook,
                        "state": job.state,
                        "nodes": job.node_count,
                        "origin": (!job.origin.is_empty()).then_some(&job.origin),
                        "commits": serde_json::from_str::<Value>(&job.commits_json).unwrap_or(Value::Null),
                        "started_unix_ms": job.started_unix_ms,
                        "finished_unix_ms": (job.finished_unix_ms != 0).then_some(job.finished_unix_ms),
                    })
                })
                .collect();
            print_json(&jobs);
        }
        Output::Text => {
            let rows: Vec<Vec<String>> = jobs
                .iter()
                .map(|job| {
                    let took = match job.finished_unix_ms.checked_sub(job.started_unix_ms) {
                        _ if job.finished_unix_ms == 0 => "-".to_string(),
                        Some(ms) if ms < 10_000 => format!("{ms} ms"),
                        Some(ms) => format!("{:.0} s", ms as f64 / 1000.0),
                        None => "-".to_string(),
                    };
                    vec![
                        job.job_id.clone(),
                        job.state.clone(),
                        job.node_count.to_string(),
                        timestamp(job.started_unix_ms),
                        took,
                        job.taskbook.clone(),
                        if job.origin.is_empty() {
                            "-".into()
                        } else {
                            job.origin.clone()
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["JOB", "STATE", "NODES", "STARTED", "TOOK", "TASKBOOK", "BY"],
                    &rows
                )
            );
        }
    }
    Ok(())
}

pub async fn show_job(
    client: &mut AdminClient,
    job_id: &str,
    output: Output,
) -> Result<(), CliError> {
    let job = client
        .get_job(GetJobRequest {
            job_id: job_id.to_string(),
        })
        .await?
        .into_inner();
    let detail: Value = serde_json::from_str(&job.job_json)
        .map_err(|e| CliError::Master(format!("the master sent a job that is not JSON: {e}")))?;
    if output == Output::Json {
        print_json(&detail);
        return Ok(());
    }
    println!("job:      {}", job.job_id);
    println!("taskbook: {}", job.taskbook);
    println!("state:    {}", job.state);
    if !job.origin.is_empty() {
        println!("by:       {}", job.origin);
    }
    if let Some(commits) = detail["commits"].as_object() {
        for (repo, commit) in commits {
            println!("commit:   {repo} {}", commit.as_str().unwrap_or_default());
        }
    }
    // The internal jobs the run started for its inputs (computed variables, `sync`).
    for input in detail["input_jobs"].as_array().into_iter().flatten() {
        let field = |key: &str| input[key].as_str().unwrap_or_default().to_string();
        println!(
            "input:    {} on {}: {}",
            field("job_id"),
            field("node"),
            field("purpose")
        );
    }
    println!("started:  {}", timestamp(job.started_unix_ms));
    println!("finished: {}", timestamp(job.finished_unix_ms));
    if let Some(message) = detail["message"].as_str() {
        println!("message:  {message}");
    }
    let steps = detail["steps"].as_array().cloned().unwrap_or_default();
    let node_steps = detail["node_steps"].as_array().cloned().unwrap_or_default();
    for (index, step) in steps.iter().enumerate() {
        println!(
            "\nstep {} `{}`",
            index + 1,
            step["name"].as_str().unwrap_or_default()
        );
        let rows: Vec<Vec<String>> = node_steps
            .iter()
            .filter(|record| record["step_index"].as_u64() == Some(index as u64))
            .map(|record| {
                vec![
                    record["node"].as_str().unwrap_or_default().to_string(),
                    record["state"].as_str().unwrap_or_default().to_string(),
                    record["note"].as_str().unwrap_or_default().to_string(),
                ]
            })
            .collect();
        if rows.is_empty() {
            println!("  not started");
        } else {
            for line in table(&["NODE", "STATE", "NOTE"], &rows).lines() {
                println!("  {line}");
            }
        }
    }
    let report: RunReport = serde_json::from_value(detail["report"].clone()).map_err(|e| {
        CliError::Master(format!(
            "the master sent a report that is not weft.run/v1: {e}"
        ))
    })?;
    let mut printer = TextPrinter::new(std::io::stdout().lock(), false, false);
    printer
        .write_recap(&report)
        .map_err(|e| CliError::Input(format!("cannot print: {e}")))?;
    Ok(())
}
