//! The weft command line: its arguments as clap reads them (`args`), finding the admin's credentials and calling
//! the adminapi (`admin`), printing nodes, jobs and tokens as tables or JSON, a cluster
//! run's live progress (`run`), cluster objects (`objects`), and the daemons' logging
//! (`logging`).

pub mod admin;
pub mod args;
pub mod cron_jobs;
pub mod events;
pub mod jobs;
pub mod logging;
pub mod masters;
pub mod nodes;
pub mod objects;
pub mod output;
pub mod run;
pub mod token;

/// Anything that stops a command before it did its work: exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Input(String),
    /// No admin credentials where they were looked for.
    #[error("{0}")]
    NoCredentials(String),
    #[error("{0}")]
    Master(String),
}

impl From<weft_taskbook::Error> for CliError {
    fn from(error: weft_taskbook::Error) -> Self {
        CliError::Input(error.render_for_terminal())
    }
}

impl From<tonic::Status> for CliError {
    fn from(status: tonic::Status) -> Self {
        let message = match status.code() {
            tonic::Code::Unavailable => format!(
                "cannot reach the master: {}; is `weft master` running there?",
                status.message()
            ),
            _ => status.message().to_string(),
        };
        CliError::Master(message)
    }
}
