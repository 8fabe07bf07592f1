//! What the PackageKit and systemd clients share. Modules and facts are synchronous and
//! may run on a thread of the minion's blocking pool, where starting a runtime of one's
//! own is allowed (unlike inside an async task), so each D-Bus conversation gets a private
//! current-thread runtime.

use std::future::Future;
use std::time::{Duration, Instant};

use zbus::Connection;

/// Where `zbus` connects for the system bus when `DBUS_SYSTEM_BUS_ADDRESS` is unset.
const DEFAULT_SYSTEM_BUS: &str = "unix:path=/var/run/dbus/system_bus_socket";

/// The system bus address, for error messages that say where weft looked.
pub(crate) fn system_bus_address() -> String {
    std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .ok()
        .filter(|address| !address.is_empty())
        .unwrap_or_else(|| DEFAULT_SYSTEM_BUS.to_string())
}

/// Runs `work` on a private runtime; the clients bound their own calls by their deadlines.
pub(crate) fn block_on<T>(work: impl Future<Output = T>) -> Result<T, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a runtime for D-Bus: {error}"))?;
    Ok(runtime.block_on(work))
}

/// When a module's D-Bus work must end: after `limit`, or at the task's own deadline
/// when that comes first.
pub(crate) fn deadline_within(task_deadline: Option<Instant>, limit: Duration) -> Instant {
    let limit = Instant::now() + limit;
    task_deadline.map_or(limit, |task_deadline| task_deadline.min(limit))
}

/// Connects to the system bus; every method call on it gives up after `method_timeout`.
pub(crate) async fn system_bus(method_timeout: Duration) -> zbus::Result<Connection> {
    zbus::connection::Builder::system()
        .method_timeout(method_timeout)
        .build()
        .await
}

/// Whether a D-Bus error means no one provides the service called (not installed, or not
/// activatable), as opposed to the service failing.
pub(crate) fn is_service_missing(error: &zbus::Error) -> bool {
    match error {
        zbus::Error::FDO(fdo) => matches!(
            **fdo,
            zbus::fdo::Error::ServiceUnknown(_)
                | zbus::fdo::Error::NameHasNoOwner(_)
                | zbus::fdo::Error::SpawnChildExited(_)
                | zbus::fdo::Error::SpawnExecFailed(_)
                | zbus::fdo::Error::SpawnFailed(_)
                | zbus::fdo::Error::SpawnServiceNotFound(_)
        ),
        _ => false,
    }
}

/// Whether someone owns `name` on the bus now; no answer counts as no.
pub(crate) async fn name_has_owner(connection: &Connection, name: &str) -> bool {
    let Ok(bus) = zbus::fdo::DBusProxy::new(connection).await else {
        return false;
    };
    let Ok(name) = zbus::names::BusName::try_from(name) else {
        return false;
    };
    bus.name_has_owner(name).await.unwrap_or(false)
}
