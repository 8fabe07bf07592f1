//! `service`: a systemd unit started, stopped, restarted or reloaded, and enabled or not
//! at boot, through systemd's D-Bus API (`systemd.rs`).

use std::time::{Duration, Instant};

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
        if args.state.is_none() && args.enabled.is_none() {
            return Err(ModuleError::Failed(format!(
                "nothing asked of {unit}: give `state` (started, stopped, restarted, reloaded) \
                 and/or `enabled` (true or false)"
            )));
        }
        if let Some(reason) = systemd::unsupported_reason() {
            return Err(ModuleError::Failed(format!(
                "service: unsupported on this host: {reason}; the service module drives \
                 systemd only, so run the host's own service manager through `command`"
            )));
        }
        let deadline = match context.deadline {
            Some(task_deadline) => task_deadline.min(Instant::now() + SERVICE_TIMEOUT),
            None => Instant::now() + SERVICE_TIMEOUT,
        };
        dbus::block_on(async {
            let connection = system_bus(SERVICE_TIMEOUT).await.map_err(|error| {
                format!(
                    "cannot reach systemd on the system bus ({}): {error}",
                    dbus::system_bus_address()
                )
            })?;
            let systemd = Systemd::new(connection, deadline).await?;
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
