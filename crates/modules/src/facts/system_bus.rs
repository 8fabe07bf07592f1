//! `packages` and `systemd`: what PackageKit and systemd answer on the system bus.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::in_background;
use crate::dbus::{name_has_owner, system_bus};
use crate::packagekit::PackageKit;

/// How long facts wait for PackageKit's backend name and systemd's presence: a cold start
/// of packagekitd answers in about 50 ms, and a host without them answers at once.
const DBUS_FACT_TIMEOUT: Duration = Duration::from_secs(1);

/// How long counting the installed packages may take: PackageKit's apt backend loads its
/// whole cache for it (1.7 s measured for 735 packages).
const INSTALLED_COUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// What facts learn over D-Bus; the defaults stand for a host without an answer.
#[derive(Default)]
pub(super) struct BusFacts {
    /// PackageKit's backend (`apt`, `dnf`), `None` without PackageKit.
    pub(super) package_manager: Option<String>,
    pub(super) systemd_running: bool,
}

/// Asks PackageKit and systemd over one connection; never fails, never outlasts
/// [`DBUS_FACT_TIMEOUT`].
pub(super) fn bus_facts() -> BusFacts {
    let deadline = Instant::now() + DBUS_FACT_TIMEOUT;
    let asked = crate::dbus::block_on(async {
        let connecting = tokio::time::timeout_at(deadline.into(), system_bus(DBUS_FACT_TIMEOUT));
        let Ok(Ok(connection)) = connecting.await else {
            return BusFacts::default();
        };
        // Where systemd is not the init system its bus name is still activatable, and
        // asking would only start a helper that fails.
        let systemd_running = crate::systemd::unsupported_reason().is_none()
            && tokio::time::timeout_at(
                deadline.into(),
                name_has_owner(&connection, "org.freedesktop.systemd1"),
            )
            .await
            .unwrap_or(false);
        let package_manager = match PackageKit::on(connection, deadline).await {
            Ok(packagekit) => packagekit.backend_name().await.ok(),
            Err(_) => None,
        };
        BusFacts {
            package_manager,
            systemd_running,
        }
    });
    asked.unwrap_or_default()
}

/// The installed-package count, kept for the life of the process once counted: it costs a
/// PackageKit transaction of over a second, and facts are gathered on every run.
static INSTALLED_COUNT: Mutex<Option<usize>> = Mutex::new(None);

/// Adds `packages.installed_count` (null when PackageKit cannot tell). Only the minion and
/// `weft facts --local` call this: a local run would pay a second for a count it rarely uses.
pub fn add_installed_package_count(facts: &mut Value) {
    let count = installed_package_count();
    if let Some(packages) = facts.get_mut("packages").and_then(Value::as_object_mut) {
        packages.insert("installed_count".into(), json!(count));
    }
}

fn installed_package_count() -> Option<usize> {
    let mut cached = INSTALLED_COUNT
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if cached.is_none() {
        // On a thread of its own: the caller may be inside an async runtime.
        *cached = in_background(|sender| {
            let deadline = Instant::now() + INSTALLED_COUNT_TIMEOUT;
            let counted = crate::dbus::block_on(async {
                let packagekit = PackageKit::connect(deadline).await.ok()?;
                packagekit.installed_count().await.ok()
            });
            let _ = sender.send(counted.ok().flatten());
        })
        .recv_timeout(INSTALLED_COUNT_TIMEOUT)
        .ok()
        .flatten();
    }
    *cached
}

/// After the package module changed something, the next count is taken afresh.
pub(crate) fn forget_installed_count() {
    *INSTALLED_COUNT
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = None;
}
