//! `service`: a systemd unit started, stopped, restarted or reloaded, and enabled or not
//! at boot, through systemd's D-Bus API (`systemd.rs`); with `daemon_reload`, systemd
//! first reads the unit files again, so a unit file copied by an earlier task starts
//! as written.

use std::time::Duration;

use serde::Deserialize;

use crate::dbus::{self, system_bus};
use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::systemd::{self, Job, Systemd};

/// systemd gives up on a unit's start after 90 s by default; a job still queued long after
/// that is not coming back. A task's own `timeout` shortens this.
const SERVICE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

pub struct Service;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    name: String,
    state: Option<ServiceState>,
    enabled: Option<bool>,
    /// `systemctl daemon-reload` first (as Ansible's `systemd` module; not a change).
    #[serde(default)]
    daemon_reload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ServiceState {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

impl Module for Service {
    const NAME: &'static str = "service";
    type Args = ServiceArgs;

    fn check_apply(
        &self,
        args: ServiceArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let unit = unit_name(&args.name)?;
        if args.state.is_none() && args.enabled.is_none() && !args.daemon_reload {
            return Err(ModuleError::Failed(format!(
                "nothing asked of {unit}: give `state` (started, stopped, restarted, reloaded) \
                 and/or `enabled` (true or false), or `daemon_reload: true`"
            )));
        }
        if let Some(reason) = systemd::unsupported_reason() {
            return Err(ModuleError::Failed(format!(
                "service: unsupported on this host: {reason}; the service module drives \
                 systemd only, so run the host's own service manager through `command`"
            )));
        }
        let deadline = dbus::deadline_within(context.deadline, SERVICE_TIMEOUT);
        dbus::block_on(async {
            let connection = system_bus(SERVICE_TIMEOUT).await.map_err(|error| {
                format!(
                    "cannot reach systemd on the system bus ({}): {error}",
                    dbus::system_bus_address()
                )
            })?;
            let systemd = Systemd::new(connection, deadline).await?;
            if args.daemon_reload && apply {
                systemd.daemon_reload().await?;
            }
            converge(&systemd, &unit, args.state, args.enabled, apply).await
        })
        .and_then(|result| result)
        .map_err(ModuleError::Failed)
    }
}

/// `nginx` means `nginx.service`, as with systemctl; other unit types keep their suffix.
fn unit_name(name: &str) -> Result<String, ModuleError> {
    let name = name.trim();
    if name.is_empty() || name.contains(['/', ' ', '\t', '\n']) {
        return Err(ModuleError::Failed(format!(
            "`{name}` is not a unit name: expected a name such as `nginx` or `nginx.service`"
        )));
    }
    Ok(if name.contains('.') {
        name.to_string()
    } else {
        format!("{name}.service")
    })
}

async fn converge(
    systemd: &Systemd,
    unit: &str,
    state: Option<ServiceState>,
    enabled: Option<bool>,
    apply: bool,
) -> Result<Outcome, String> {
    let before = systemd.unit_state(unit).await?;
    let mut actions: Vec<&str> = Vec::new();
    if let Some(enabled) = enabled {
        if !enabled && before.unit_file_state == "static" {
            return Err(format!(
                "{unit} is static (its unit file has no [Install] section), so it cannot be \
                 disabled: drop `enabled: false`, or mask the unit"
            ));
        }
        if before.is_enabled() != enabled {
            actions.push(if enabled { "enable" } else { "disable" });
            if apply {
                systemd.set_enabled(unit, enabled).await?;
            }
        }
    }
    let job = match state {
        Some(ServiceState::Started) => (!before.is_active()).then_some(Job::Start),
        Some(ServiceState::Stopped) => before.is_active().then_some(Job::Stop),
        Some(ServiceState::Restarted) => Some(Job::Restart),
        // A unit that is not running has nothing to reload: it is started, as Ansible does.
        Some(ServiceState::Reloaded) if before.is_active() => Some(Job::Reload),
        Some(ServiceState::Reloaded) => Some(Job::Start),
        None => None,
    };
    if let Some(job) = job {
        actions.push(job.verb());
        if apply {
            systemd.run_job(job, unit).await?;
        }
    }
    let after = if apply && !actions.is_empty() {
        systemd.unit_state(unit).await?
    } else {
        before
    };
    let msg = match (actions.is_empty(), apply) {
        (true, _) => format!(
            "{unit} is {} and {}",
            after.active_state, after.unit_file_state
        ),
        (false, true) => format!("{unit}: {}", past_tense(&actions).join(", ")),
        (false, false) => format!("{unit}: would {}", actions.join(", ")),
    };
    Ok(Outcome::changed(!actions.is_empty())
        .with_msg(msg)
        .with_output("unit", unit)
        .with_output("active_state", after.active_state)
        .with_output("unit_file_state", after.unit_file_state)
        .with_output("actions", actions))
}

fn past_tense(actions: &[&str]) -> Vec<String> {
    actions
        .iter()
        .map(|action| match *action {
            "stop" => "stopped".to_string(),
            action => format!("{}ed", action.trim_end_matches('e')),
        })
        .collect()
}

/// The D-Bus logic against a small mock of systemd's Manager and Unit objects, served
/// on a private dbus-daemon: PID 1 here is not systemd, and a mock is enough to check
/// which calls are made, in which order, and what is reported.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use zbus::object_server::SignalEmitter;
    use zbus::{interface, Connection, ObjectPath, OwnedObjectPath};

    use super::*;

    #[derive(Clone)]
    struct MockUnit {
        load_state: &'static str,
        active_state: String,
        unit_file_state: String,
        /// How its jobs end (`done`, `failed`, ...).
        job_result: &'static str,
    }

    type Units = Arc<Mutex<HashMap<String, MockUnit>>>;
    type Calls = Arc<Mutex<Vec<String>>>;

    fn unit_path(name: &str) -> OwnedObjectPath {
        let escaped: String = name
            .chars()
            .map(|c| match c {
                'a'..='z' | 'A'..='Z' | '0'..='9' => c.to_string(),
                other => format!("_{:02x}", other as u32),
            })
            .collect();
        OwnedObjectPath::try_from(format!("/org/freedesktop/systemd1/unit/{escaped}")).unwrap()
    }

    struct MockManager {
        units: Units,
        calls: Calls,
    }

    impl MockManager {
        async fn job(
            &self,
            emitter: &SignalEmitter<'_>,
            method: &str,
            name: &str,
            after: &str,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            self.calls.lock().unwrap().push(format!("{method} {name}"));
            let result = {
                let mut units = self.units.lock().unwrap();
                let unit = units.get_mut(name).expect("a known unit");
                if unit.job_result == "done" {
                    unit.active_state = after.to_string();
                }
                unit.job_result
            };
            let job = OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/7").unwrap();
            Self::job_removed(emitter, 7, job.as_ref(), name, result).await?;
            Ok(job)
        }

        fn set_file_state(&self, files: &[String], state: &str) {
            let mut units = self.units.lock().unwrap();
            for file in files {
                units.get_mut(file).expect("a known unit").unit_file_state = state.into();
            }
        }
    }

    #[interface(name = "org.freedesktop.systemd1.Manager")]
    impl MockManager {
        fn subscribe(&self) {}

        fn load_unit(&self, name: &str) -> zbus::fdo::Result<OwnedObjectPath> {
            if self.units.lock().unwrap().contains_key(name) {
                Ok(unit_path(name))
            } else {
                Err(zbus::fdo::Error::Failed(format!("mock knows no {name}")))
            }
        }

        async fn start_unit(
            &self,
            name: &str,
            _mode: &str,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            self.job(&emitter, "StartUnit", name, "active").await
        }

        async fn stop_unit(
            &self,
            name: &str,
            _mode: &str,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            self.job(&emitter, "StopUnit", name, "inactive").await
        }

        async fn restart_unit(
            &self,
            name: &str,
            _mode: &str,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            self.job(&emitter, "RestartUnit", name, "active").await
        }

        async fn reload_unit(
            &self,
            name: &str,
            _mode: &str,
            #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        ) -> zbus::fdo::Result<OwnedObjectPath> {
            self.job(&emitter, "ReloadUnit", name, "active").await
        }

        fn enable_unit_files(
            &self,
            files: Vec<String>,
            _runtime: bool,
            _force: bool,
        ) -> (bool, Vec<(String, String, String)>) {
            self.calls
                .lock()
                .unwrap()
                .push(format!("EnableUnitFiles {}", files.join(" ")));
            self.set_file_state(&files, "enabled");
            (true, Vec::new())
        }

        fn disable_unit_files(
            &self,
            files: Vec<String>,
            _runtime: bool,
        ) -> Vec<(String, String, String)> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("DisableUnitFiles {}", files.join(" ")));
            self.set_file_state(&files, "disabled");
            Vec::new()
        }

        fn reload(&self) {
            self.calls.lock().unwrap().push("Reload".into());
        }

        #[zbus(signal)]
        async fn job_removed(
            emitter: &SignalEmitter<'_>,
            id: u32,
            job: ObjectPath<'_>,
            unit: &str,
            result: &str,
        ) -> zbus::Result<()>;
    }

    struct MockUnitObject {
        name: String,
        units: Units,
    }

    impl MockUnitObject {
        fn read(&self) -> MockUnit {
            self.units.lock().unwrap()[&self.name].clone()
        }
    }

    #[interface(name = "org.freedesktop.systemd1.Unit")]
    impl MockUnitObject {
        #[zbus(property)]
        fn load_state(&self) -> String {
            self.read().load_state.into()
        }
        #[zbus(property)]
        fn active_state(&self) -> String {
            self.read().active_state
        }
        #[zbus(property)]
        fn unit_file_state(&self) -> String {
            self.read().unit_file_state
        }
    }

    /// A dbus-daemon of the test's own, killed when dropped.
    struct PrivateBus {
        daemon: Child,
        address: String,
        _dir: tempfile::TempDir,
    }

    impl Drop for PrivateBus {
        fn drop(&mut self) {
            let _ = self.daemon.kill();
            let _ = self.daemon.wait();
        }
    }

    fn private_bus() -> Option<PrivateBus> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\" \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>session</type><listen>unix:path={}</listen><auth>EXTERNAL</auth>\
                 <policy context=\"default\"><allow send_destination=\"*\"/><allow receive_sender=\"*\"/><allow own=\"*\"/>\
                 </policy></busconfig>\n",
                dir.path().join("socket").display()
            ),
        )
        .unwrap();
        let mut daemon = match Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .spawn()
        {
            Ok(daemon) => daemon,
            Err(error) => {
                eprintln!("SKIPPED the systemd mock tests: dbus-daemon cannot run ({error}); install the Debian package dbus");
                return None;
            }
        };
        let mut address = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        Some(PrivateBus {
            daemon,
            address: address.trim().to_string(),
            _dir: dir,
        })
    }

    fn unit(active_state: &str, unit_file_state: &str) -> MockUnit {
        MockUnit {
            load_state: "loaded",
            active_state: active_state.into(),
            unit_file_state: unit_file_state.into(),
            job_result: "done",
        }
    }

    /// Serves `units` as a mock systemd and runs `body` with a client of it.
    fn with_mock_systemd<T>(
        units: &[(&str, MockUnit)],
        body: impl AsyncFnOnce(&Systemd, &Units, &Calls) -> T,
    ) -> Option<T> {
        let bus = private_bus()?;
        let units: Units = Arc::new(Mutex::new(
            units
                .iter()
                .map(|(name, unit)| (name.to_string(), unit.clone()))
                .collect(),
        ));
        let calls: Calls = Arc::default();
        // A policy or protocol mistake shows as a hang; it should fail the test instead.
        let conversation = async {
            let mut server = zbus::connection::Builder::address(bus.address.as_str())
                .name("org.freedesktop.systemd1")
                .serve_at(
                    "/org/freedesktop/systemd1",
                    MockManager {
                        units: units.clone(),
                        calls: calls.clone(),
                    },
                );
            let names: Vec<String> = units.lock().unwrap().keys().cloned().collect();
            for name in names {
                server = server.serve_at(
                    unit_path(&name),
                    MockUnitObject {
                        name,
                        units: units.clone(),
                    },
                );
            }
            let _server: Connection = server.build().await.expect("the mock is served");
            let client = zbus::connection::Builder::address(bus.address.as_str())
                .build()
                .await
                .expect("the client connects");
            let systemd = Systemd::new(client, Instant::now() + Duration::from_secs(30))
                .await
                .unwrap();
            body(&systemd, &units, &calls).await
        };
        let done = dbus::block_on(async {
            tokio::time::timeout(Duration::from_secs(30), conversation).await
        });
        Some(
            done.expect("a runtime")
                .expect("the conversation with the mock ends within 30 s"),
        )
    }

    #[test]
    fn started_and_enabled_converges_once_and_check_mode_only_reports() {
        with_mock_systemd(
            &[("nginx.service", unit("inactive", "disabled"))],
            async |systemd, units, calls| {
                let unit = "nginx.service";
                let wanted = (Some(ServiceState::Started), Some(true));

                let check = converge(systemd, unit, wanted.0, wanted.1, false)
                    .await
                    .unwrap();
                assert!(check.changed);
                assert_eq!(
                    check.msg.as_deref(),
                    Some("nginx.service: would enable, start")
                );
                assert!(
                    calls.lock().unwrap().is_empty(),
                    "check mode called {:?}",
                    calls.lock().unwrap()
                );

                let applied = converge(systemd, unit, wanted.0, wanted.1, true)
                    .await
                    .unwrap();
                assert!(applied.changed);
                assert_eq!(
                    applied.msg.as_deref(),
                    Some("nginx.service: enabled, started")
                );
                assert_eq!(
                    *calls.lock().unwrap(),
                    [
                        "EnableUnitFiles nginx.service",
                        "Reload",
                        "StartUnit nginx.service"
                    ]
                );
                assert_eq!(applied.output["active_state"], "active");
                assert_eq!(units.lock().unwrap()[unit].unit_file_state, "enabled");

                let again = converge(systemd, unit, wanted.0, wanted.1, true)
                    .await
                    .unwrap();
                assert!(!again.changed);
                assert_eq!(
                    again.msg.as_deref(),
                    Some("nginx.service is active and enabled")
                );
                assert_eq!(calls.lock().unwrap().len(), 3, "nothing more was called");
            },
        );
    }

    #[test]
    fn daemon_reload_asks_systemd_to_read_its_unit_files_again() {
        with_mock_systemd(
            &[("new.service", unit("inactive", "disabled"))],
            async |systemd, _units, calls| {
                systemd.daemon_reload().await.unwrap();
                converge(
                    systemd,
                    "new.service",
                    Some(ServiceState::Started),
                    None,
                    true,
                )
                .await
                .unwrap();
                assert_eq!(*calls.lock().unwrap(), ["Reload", "StartUnit new.service"]);
            },
        );
    }

    #[test]
    fn stop_restart_and_reload_pick_the_job_from_the_state() {
        with_mock_systemd(
            &[
                ("cron.service", unit("active", "enabled")),
                ("idle.service", unit("inactive", "disabled")),
            ],
            async |systemd, _units, calls| {
                let stopped = converge(
                    systemd,
                    "cron.service",
                    Some(ServiceState::Stopped),
                    None,
                    true,
                )
                .await
                .unwrap();
                assert!(stopped.changed);
                let restarted = converge(
                    systemd,
                    "cron.service",
                    Some(ServiceState::Restarted),
                    None,
                    true,
                )
                .await
                .unwrap();
                assert!(restarted.changed, "restarted always acts");
                let reloaded = converge(
                    systemd,
                    "cron.service",
                    Some(ServiceState::Reloaded),
                    None,
                    true,
                )
                .await
                .unwrap();
                assert_eq!(reloaded.msg.as_deref(), Some("cron.service: reloaded"));
                // Reloading what is not running starts it.
                converge(
                    systemd,
                    "idle.service",
                    Some(ServiceState::Reloaded),
                    None,
                    true,
                )
                .await
                .unwrap();
                assert_eq!(
                    *calls.lock().unwrap(),
                    [
                        "StopUnit cron.service",
                        "RestartUnit cron.service",
                        "ReloadUnit cron.service",
                        "StartUnit idle.service"
                    ]
                );
            },
        );
    }

    #[test]
    fn failed_jobs_missing_units_and_static_units_are_clear_errors() {
        let broken = MockUnit {
            job_result: "failed",
            ..unit("inactive", "enabled")
        };
        let missing = MockUnit {
            load_state: "not-found",
            ..unit("inactive", "")
        };
        with_mock_systemd(
            &[
                ("broken.service", broken),
                ("nope.service", missing),
                ("dbus.service", unit("active", "static")),
            ],
            async |systemd, _units, _calls| {
                let error = converge(
                    systemd,
                    "broken.service",
                    Some(ServiceState::Started),
                    None,
                    true,
                )
                .await
                .unwrap_err();
                assert_eq!(
                    error,
                    "systemd could not start broken.service: the job ended `failed`; see `journalctl -u broken.service`"
                );
                let error = converge(
                    systemd,
                    "nope.service",
                    Some(ServiceState::Started),
                    None,
                    false,
                )
                .await
                .unwrap_err();
                assert!(
                    error.starts_with("systemd has no unit named `nope.service`"),
                    "{error}"
                );
                let error = converge(systemd, "dbus.service", None, Some(false), false)
                    .await
                    .unwrap_err();
                assert!(error.starts_with("dbus.service is static"), "{error}");
                let kept = converge(systemd, "dbus.service", None, Some(true), true)
                    .await
                    .unwrap();
                assert!(!kept.changed, "a static unit is as enabled as it gets");
            },
        );
    }

    #[test]
    fn unit_names_default_to_services_and_bad_ones_are_refused() {
        assert_eq!(unit_name("nginx").unwrap(), "nginx.service");
        assert_eq!(unit_name(" backup.timer ").unwrap(), "backup.timer");
        assert!(unit_name("").is_err());
        assert!(unit_name("../etc/passwd").is_err());
    }
}
