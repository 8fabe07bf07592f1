//! A client for systemd's D-Bus API (`org.freedesktop.systemd1`): a unit's state, the
//! jobs that start, stop, restart or reload it (waited for until systemd removes them),
//! and enabling or disabling its unit file.

use std::path::Path;
use std::time::Instant;

use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::{proxy, Connection, OwnedObjectPath};

use crate::dbus::is_service_missing;

#[proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    /// Without it systemd sends this client no `JobRemoved` signals.
    fn subscribe(&self) -> zbus::Result<()>;
    /// Loads the unit when it is not (GetUnit fails for units not loaded yet).
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    /// `systemctl daemon-reload`: enabling changes symlinks systemd reads only then.
    fn reload(&self) -> zbus::Result<()>;

    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: OwnedObjectPath, unit: String, result: String);
}

#[proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
}

/// Why the service module cannot work here, or `None` where systemd is the init system
/// (the sd_booted(3) test).
pub fn unsupported_reason() -> Option<String> {
    if Path::new("/run/systemd/system").is_dir() {
        return None;
    }
    let init = std::fs::read_to_string("/proc/1/comm").unwrap_or_default();
    let init = match init.trim() {
        "" => "unknown",
        name => name,
    };
    Some(format!("systemd is not running (PID 1 is `{init}`)"))
}

/// A job systemd runs on a unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Job {
    Start,
    Stop,
    Restart,
    Reload,
}

impl Job {
    pub fn verb(self) -> &'static str {
        match self {
            Job::Start => "start",
            Job::Stop => "stop",
            Job::Restart => "restart",
            Job::Reload => "reload",
        }
    }
}

/// What the module needs to know about a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitState {
    pub active_state: String,
    pub unit_file_state: String,
}

impl UnitState {
    pub fn is_active(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "reloading" | "activating"
        )
    }

    /// Enabled in the sense of `systemctl is-enabled` succeeding.
    pub fn is_enabled(&self) -> bool {
        matches!(
            self.unit_file_state.as_str(),
            "enabled" | "enabled-runtime" | "static" | "alias" | "indirect" | "generated"
        )
    }
}

pub struct Systemd {
    connection: Connection,
    manager: ManagerProxy<'static>,
    deadline: Instant,
}

impl Systemd {
    pub async fn new(connection: Connection, deadline: Instant) -> Result<Systemd, String> {
        let manager = ManagerProxy::new(&connection)
            .await
            .map_err(|error| describe(&error))?;
        Ok(Systemd {
            connection,
            manager,
            deadline,
        })
    }

    /// The unit's state; a unit systemd has no file for is an error naming it.
    pub async fn unit_state(&self, unit: &str) -> Result<UnitState, String> {
        self.bounded(&format!("read the state of {unit}"), async {
            let path = self.manager.load_unit(unit).await?;
            let proxy = UnitProxy::builder(&self.connection)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            Ok((
                proxy.load_state().await?,
                proxy.active_state().await?,
                proxy.unit_file_state().await?,
            ))
        })
        .await
        .and_then(|(load_state, active_state, unit_file_state)| {
            if load_state == "not-found" {
                Err(format!(
                    "systemd has no unit named `{unit}`: check the name (`systemctl list-unit-files`)"
                ))
            } else {
                Ok(UnitState {
                    active_state,
                    unit_file_state,
                })
            }
        })
    }

    /// Queues the job and waits until systemd removes it; anything but `done` is an error.
    pub async fn run_job(&self, job: Job, unit: &str) -> Result<(), String> {
        let action = format!("{} {unit}", job.verb());
        let result = self
            .bounded(&action, async {
                // Subscribed before the job exists, so its removal cannot be missed.
                self.manager.subscribe().await?;
                let mut removed = self.manager.receive_job_removed().await?;
                let mode = "replace";
                let path = match job {
                    Job::Start => self.manager.start_unit(unit, mode).await?,
                    Job::Stop => self.manager.stop_unit(unit, mode).await?,
                    Job::Restart => self.manager.restart_unit(unit, mode).await?,
                    Job::Reload => self.manager.reload_unit(unit, mode).await?,
                };
                while let Some(signal) = removed.next().await {
                    let args = signal.args()?;
                    if *args.job() == path {
                        return Ok(args.result().clone());
                    }
                }
                Err(zbus::Error::Failure(
                    "the system bus closed the connection".into(),
                ))
            })
            .await?;
        match result.as_str() {
            "done" => Ok(()),
            other => Err(format!(
                "systemd could not {action}: the job ended `{other}`; see `journalctl -u {unit}`"
            )),
        }
    }

    /// `systemctl daemon-reload`: systemd reads the unit files again.
    pub async fn daemon_reload(&self) -> Result<(), String> {
        self.bounded("reload its unit files", self.manager.reload())
            .await
    }

    pub async fn set_enabled(&self, unit: &str, enabled: bool) -> Result<(), String> {
        let verb = if enabled { "enable" } else { "disable" };
        self.bounded(&format!("{verb} {unit}"), async {
            if enabled {
                self.manager
                    .enable_unit_files(&[unit], false, false)
                    .await?;
            } else {
                self.manager.disable_unit_files(&[unit], false).await?;
            }
            self.manager.reload().await
        })
        .await
    }

    async fn bounded<T>(
        &self,
        action: &str,
        work: impl std::future::Future<Output = zbus::Result<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout_at(self.deadline.into(), work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(format!("systemd could not {action}: {}", describe(&error))),
            Err(_) => Err(format!(
                "systemd did not {action} in time; raise the task's `timeout` if the unit is \
                 just slow"
            )),
        }
    }
}

fn describe(error: &zbus::Error) -> String {
    if is_service_missing(error) {
        format!("org.freedesktop.systemd1 is not on the system bus ({error})")
    } else {
        error.to_string()
    }
}
