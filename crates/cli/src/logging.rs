//! The daemons' logs: to stderr, or with `--log-dir` to one file per day of which the
//! last seven are kept, plus `NAME.log` pointing at the newest (seed 002). `RUST_LOG`
//! picks the level (default `info`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::EnvFilter;

use crate::CliError;

pub const KEPT_LOG_FILES: usize = 7;

/// Keep the guard until the process ends: dropping it flushes the last lines.
pub fn init(daemon: &str, log_dir: Option<&Path>) -> Result<Option<WorkerGuard>, CliError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let Some(dir) = log_dir else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| {
        CliError::Input(format!(
            "cannot create the log directory {}: {e}",
            dir.display()
        ))
    })?;
    let appender = Builder::new()
        .rotation(Rotation::DAILY)
        .filename_prefix(daemon)
        .filename_suffix("log")
        .max_log_files(KEPT_LOG_FILES)
        .build(dir)
        .map_err(|e| CliError::Input(format!("cannot log to {}: {e}", dir.display())))?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer)
        .init();
    let (dir, daemon) = (dir.to_path_buf(), daemon.to_string());
    std::thread::spawn(move || loop {
        point_at_newest(&dir, &daemon);
        std::thread::sleep(Duration::from_secs(60));
    });
    Ok(Some(guard))
}

/// `DIR/NAME.log` -> the newest `NAME.YYYY-MM-DD.log`, for `tail -F`.
fn point_at_newest(dir: &Path, daemon: &str) {
    let prefix = format!("{daemon}.");
    let newest: Option<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.starts_with(&prefix) && name.ends_with(".log") && name.len() > prefix.len() + 4
        })
        .max()
        .map(PathBuf::from);
    if let Some(newest) = newest {
        let link = dir.join(format!("{daemon}.log"));
        if std::fs::read_link(&link).ok().as_ref() != Some(&newest) {
            let temporary = dir.join(format!(".{daemon}.log.new"));
            let _ = std::fs::remove_file(&temporary);
            if std::os::unix::fs::symlink(&newest, &temporary).is_ok() {
                let _ = std::fs::rename(&temporary, &link);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_log_points_at_the_newest_day() {
        let dir = tempfile::tempdir().unwrap();
        for day in ["2026-11-20", "2026-11-22", "2026-11-21"] {
            std::fs::write(dir.path().join(format!("weft-master.{day}.log")), day).unwrap();
        }
        point_at_newest(dir.path(), "weft-master");
        let main = dir.path().join("weft-master.log");
        assert_eq!(std::fs::read_to_string(main).unwrap(), "2026-11-22");
    }
}
