//! The one `weft` binary: parses the command line and calls into the crates.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use weft_minion::executor::RunOptions;
use weft_minion::local::{run_local, LocalRun};
use weft_taskbook::report::{RunObserver, Silent, TextPrinter};
use weft_taskbook::vars::parse_extra_vars;
use weft_taskbook::Error;

/// Exit statuses, as documented in `weft --help`.
const EXIT_INPUT_ERROR: u8 = 1;
const EXIT_TASK_FAILED: u8 = 2;

#[derive(Parser)]
#[command(
    name = "weft",
    version,
    about = "Configuration management over its own WireGuard mesh",
    long_about = "weft runs TaskBooks (YAML steps of tasks) on this machine or, through a \
master, across a fleet.\n\nStart with a local run:\n  weft run taskbook site.yml --local --check --diff",
    after_help = "Exit status: 0 all ok, 1 usage or input error, 2 some task failed."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run something now.
    #[command(subcommand)]
    Run(RunCommand),
    /// Show the facts tasks see as `facts.*`.
    Facts(FactsArgs),
}

#[derive(Subcommand)]
enum RunCommand {
    /// Run a TaskBook file.
    #[command(
        after_help = "Examples:\n  weft run taskbook taskbooks/sshd-hardening.yml --local --check --diff\n  weft run taskbook site.yml --local -e port=8080 -e @vars.yml --tags config\n  weft run taskbook site.yml --local -o json | jq '.recap'"
    )]
    Taskbook(RunTaskbookArgs),
}

#[derive(Args)]
struct RunTaskbookArgs {
    /// The TaskBook file (YAML).
    file: PathBuf,
    /// Run on this machine, with no master (like `ansible-playbook -c local`).
    #[arg(long)]
    local: bool,
    /// Report what would change without changing anything.
    #[arg(long)]
    check: bool,
    /// Show the changes made (or that would be made) to files as unified diffs.
    #[arg(long)]
    diff: bool,
    /// Extra variables: KEY=VALUE (typed as YAML), a YAML/JSON mapping, or @FILE. Repeatable;
    /// these override every variable but registered results.
    #[arg(short = 'e', long = "extra-vars", value_name = "VARS")]
    extra_vars: Vec<String>,
    /// Run only tasks with one of these tags (comma-separated); `always` tasks still run.
    #[arg(long, value_delimiter = ',')]
    tags: Vec<String>,
    /// Skip tasks with any of these tags (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip_tags: Vec<String>,
    /// Output: live text lines, or one JSON document (schema weft.run/v1) at the end.
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Args)]
struct FactsArgs {
    /// Gather this machine's facts (cluster nodes' facts come with `weft facts NODE`).
    #[arg(long)]
    local: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(RunCommand::Taskbook(args)) => run_taskbook(args),
        Command::Facts(args) => show_facts(args),
    }
}

fn run_taskbook(args: RunTaskbookArgs) -> ExitCode {
    if !args.local {
        return usage_error(
            "running on a cluster needs a master, which this version of weft does not have yet; \
             pass --local to run on this machine",
        );
    }
    let extra_vars = match args
        .extra_vars
        .iter()
        .map(|e| parse_extra_vars(e))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(vars) => vars,
        Err(error) => return input_error(&error),
    };
    let run = LocalRun {
        file: args.file,
        options: RunOptions {
            check_mode: args.check,
            diff: args.diff,
            tags: args.tags,
            skip_tags: args.skip_tags,
        },
        extra_vars,
    };
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let mut printer = TextPrinter::new(std::io::stdout().lock(), args.diff, color);
    let observer: &mut dyn RunObserver = match args.output {
        Output::Text => &mut printer,
        Output::Json => &mut Silent,
    };
    let report = match run_local(&run, observer) {
        Ok(report) => report,
        Err(error) => return input_error(&error),
    };
    match args.output {
        Output::Text => {
            let _ = printer.write_recap(&report);
        }
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("a report always serializes")
        ),
    }
    if report.failed {
        ExitCode::from(EXIT_TASK_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

fn show_facts(args: FactsArgs) -> ExitCode {
    if !args.local {
        return usage_error(
            "weft facts NODE needs a master; pass --local for this machine's facts",
        );
    }
    match weft_modules::facts::gather_facts() {
        Ok(facts) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&facts).expect("facts always serialize")
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: gathering facts: {error}");
            ExitCode::from(EXIT_INPUT_ERROR)
        }
    }
}

fn input_error(error: &Error) -> ExitCode {
    eprintln!("error: {}", error.render_for_terminal());
    ExitCode::from(EXIT_INPUT_ERROR)
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(EXIT_INPUT_ERROR)
}
