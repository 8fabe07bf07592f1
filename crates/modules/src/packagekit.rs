//! A client for PackageKit's D-Bus API (`org.freedesktop.PackageKit`). PackageKit runs
//! one method per transaction and answers with signals, so every call here creates a
//! transaction, subscribes before calling, and reads the results until `Finished`.

use std::fmt;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{json, Value};
use zbus::{proxy, Connection, OwnedObjectPath};

use crate::dbus::{is_service_missing, system_bus, system_bus_address};

const SERVICE: &str = "org.freedesktop.PackageKit";

/// A failed activation of packagekitd takes up to 25 s before the bus gives up; a method
/// call that waits longer than this is not coming back.
pub(crate) const METHOD_TIMEOUT: Duration = Duration::from_secs(30);

/// Filters (bitfields, `1 << enum`): what `Resolve` and `GetPackages` return.
pub const FILTER_NONE: u64 = 0;
pub const FILTER_INSTALLED: u64 = 1 << 2;
pub const FILTER_NOT_INSTALLED: u64 = 1 << 3;
pub const FILTER_NEWEST: u64 = 1 << 16;
pub const FILTER_ARCH: u64 = 1 << 18;

const FLAG_ONLY_TRUSTED: u64 = 1 << 1;
const FLAG_SIMULATE: u64 = 1 << 2;

/// The `info` of a `Package` signal that says what the transaction does to it.
const INFO_INSTALLED: u32 = 1;
const INFO_UPDATING: u32 = 11;
const INFO_INSTALLING: u32 = 12;
const INFO_REMOVING: u32 = 13;
const INFO_OBSOLETING: u32 = 15;

const EXIT_SUCCESS: u32 = 1;

#[proxy(
    interface = "org.freedesktop.PackageKit",
    default_service = "org.freedesktop.PackageKit",
    default_path = "/org/freedesktop/PackageKit"
)]
trait Daemon {
    fn create_transaction(&self) -> zbus::Result<OwnedObjectPath>;

    #[zbus(property)]
    fn backend_name(&self) -> zbus::Result<String>;
}

#[proxy(
    interface = "org.freedesktop.PackageKit.Transaction",
    default_service = "org.freedesktop.PackageKit"
)]
trait Transaction {
    fn set_hints(&self, hints: &[&str]) -> zbus::Result<()>;
    fn resolve(&self, filter: u64, packages: &[&str]) -> zbus::Result<()>;
    fn install_packages(&self, transaction_flags: u64, package_ids: &[&str]) -> zbus::Result<()>;
    fn remove_packages(
        &self,
        transaction_flags: u64,
        package_ids: &[&str],
        allow_deps: bool,
        autoremove: bool,
    ) -> zbus::Result<()>;
    fn update_packages(&self, transaction_flags: u64, package_ids: &[&str]) -> zbus::Result<()>;
    fn get_packages(&self, filter: u64) -> zbus::Result<()>;
    fn get_updates(&self, filter: u64) -> zbus::Result<()>;

    #[zbus(property)]
    fn status(&self) -> zbus::Result<u32>;
    #[zbus(property)]
    fn percentage(&self) -> zbus::Result<u32>;
}

/// A package as PackageKit names it: the id `name;version;arch;data`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The whole id, as PackageKit wants it back.
    pub id: String,
}

impl Package {
    fn parse(id: &str) -> Option<Package> {
        let mut parts = id.split(';');
        let (name, version, arch) = (parts.next()?, parts.next()?, parts.next()?);
        Some(Package {
            name: name.to_string(),
            version: version.to_string(),
            arch: arch.to_string(),
            id: id.to_string(),
        })
    }

    pub fn to_json(&self) -> Value {
        json!({"name": self.name, "version": self.version, "arch": self.arch})
    }
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} {} ({})", self.name, self.version, self.arch)
    }
}

/// What a transaction did, or would do when simulated, to each package it touched.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub installed: Vec<Package>,
    pub updated: Vec<Package>,
    pub removed: Vec<Package>,
}

impl Changes {
    fn from_reports(reports: Vec<(u32, Package)>) -> Changes {
        let mut changes = Changes::default();
        for (info, package) in reports {
            let list = match info {
                INFO_INSTALLING => &mut changes.installed,
                INFO_UPDATING => &mut changes.updated,
                INFO_REMOVING | INFO_OBSOLETING => &mut changes.removed,
                _ => continue,
            };
            // Ids differ in their data part (`+manual:` while installing), not in what they name.
            if !list.iter().any(|known| {
                (&known.name, &known.version, &known.arch)
                    == (&package.name, &package.version, &package.arch)
            }) {
                list.push(package);
            }
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.installed.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }

    pub fn extend(&mut self, other: Changes) {
        self.installed.extend(other.installed);
        self.updated.extend(other.updated);
        self.removed.extend(other.removed);
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackageKitError {
    #[error(
        "PackageKit is not available on the system bus ({reason}): install the `packagekit` \
         package (and `dbus`, with the system bus running)"
    )]
    Unavailable { reason: String },
    #[error(
        "PackageKit did not finish `{action}` in time (last status: {progress}); \
         raise the task's `timeout` if the transaction is just slow"
    )]
    TimedOut { action: String, progress: String },
    #[error(
        "packagekitd left the system bus during `{action}` (last status: {progress}), so \
         its outcome is unknown: look at the package manager's log and run the task again"
    )]
    DaemonVanished { action: String, progress: String },
    #[error("PackageKit could not {action}: {details} ({code})")]
    Failed {
        action: String,
        code: String,
        details: String,
    },
    #[error("talking to PackageKit during `{action}` failed: {error}")]
    Bus { action: String, error: String },
}

/// The methods that change packages, which share flags and reporting.
enum Change {
    Install,
    Remove,
    Update,
}

/// One PackageKit method, run in a transaction of its own.
enum Call<'a> {
    Resolve(u64, &'a [&'a str]),
    Install(u64, &'a [&'a str]),
    Remove(u64, &'a [&'a str]),
    Update(u64, &'a [&'a str]),
    GetPackages(u64),
    GetUpdates(u64),
}

impl Call<'_> {
    async fn send(&self, transaction: &TransactionProxy<'_>) -> zbus::Result<()> {
        match *self {
            Call::Resolve(filter, names) => transaction.resolve(filter, names).await,
            Call::Install(flags, ids) => transaction.install_packages(flags, ids).await,
            // `allow_deps` is not enforced by the apt backend anyway: callers simulate first.
            Call::Remove(flags, ids) => transaction.remove_packages(flags, ids, false, false).await,
            Call::Update(flags, ids) => transaction.update_packages(flags, ids).await,
            Call::GetPackages(filter) => transaction.get_packages(filter).await,
            Call::GetUpdates(filter) => transaction.get_updates(filter).await,
        }
    }
}

/// The transaction's last `Status` and `Percentage`, for the message when it never ends.
#[derive(Default)]
struct Progress {
    status: Option<u32>,
    percentage: Option<u32>,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self.status {
            Some(status) => f.write_str(status_name(status))?,
            None => f.write_str("not started")?,
        }
        match self.percentage {
            // 101 is PackageKit's "unknown".
            Some(percentage) if percentage <= 100 => write!(f, ", {percentage}%"),
            _ => Ok(()),
        }
    }
}

fn status_name(status: u32) -> &'static str {
    match status {
        1 => "waiting in PackageKit's queue",
        2 => "setting up",
        3 => "running",
        4 => "querying",
        6 => "removing",
        7 => "refreshing the cache",
        8 => "downloading",
        9 => "installing",
        10 => "updating",
        13 => "resolving dependencies",
        16 => "committing",
        18 => "finished",
        27 => "loading the package cache",
        30 => "waiting for the package manager's lock",
        31 => "waiting for authorization (polkit)",
        _ => "busy",
    }
}

fn error_name(code: u32) -> String {
    match code {
        7 => "not-installed".into(),
        8 => "package-not-found".into(),
        9 => "already-installed".into(),
        13 => "dep-resolution-failed".into(),
        26 => "cannot-get-lock".into(),
        41 => "all-already-installed".into(),
        48 => "not-authorized".into(),
        other => format!("error {other}"),
    }
}

/// A connection to PackageKit whose every transaction ends by `deadline`.
pub struct PackageKit {
    connection: Connection,
    daemon: DaemonProxy<'static>,
    deadline: Instant,
}

impl PackageKit {
    pub async fn connect(deadline: Instant) -> Result<PackageKit, PackageKitError> {
        let connection = tokio::time::timeout_at(deadline.into(), system_bus(METHOD_TIMEOUT))
            .await
            .map_err(|_| unavailable("the bus did not answer"))?
            .map_err(unavailable)?;
        PackageKit::on(connection, deadline).await
    }

    /// On a connection made elsewhere (facts share theirs with the systemd question).
    pub async fn on(
        connection: Connection,
        deadline: Instant,
    ) -> Result<PackageKit, PackageKitError> {
        let daemon = DaemonProxy::new(&connection).await.map_err(unavailable)?;
        Ok(PackageKit {
            connection,
            daemon,
            deadline,
        })
    }

    /// The backend PackageKit drives (`apt`, `dnf`, ...).
    pub async fn backend_name(&self) -> Result<String, PackageKitError> {
        let action = "read the backend name";
        tokio::time::timeout_at(self.deadline.into(), self.daemon.backend_name())
            .await
            .map_err(|_| PackageKitError::TimedOut {
                action: action.into(),
                progress: Progress::default().to_string(),
            })?
            .map_err(|error| bus_error(action, error))
    }

    /// The packages with these names that pass `filter`; names PackageKit does not know
    /// are simply missing from the answer.
    pub async fn resolve(
        &self,
        filter: u64,
        names: &[&str],
    ) -> Result<Vec<Package>, PackageKitError> {
        let action = format!("resolve {}", names.join(", "));
        let reports = self.transact(&action, Call::Resolve(filter, names)).await?;
        Ok(reports.into_iter().map(|(_, package)| package).collect())
    }

    pub async fn install(
        &self,
        packages: &[Package],
        simulate: bool,
    ) -> Result<Changes, PackageKitError> {
        self.change(Change::Install, packages, simulate).await
    }

    pub async fn remove(
        &self,
        packages: &[Package],
        simulate: bool,
    ) -> Result<Changes, PackageKitError> {
        self.change(Change::Remove, packages, simulate).await
    }

    pub async fn update(
        &self,
        packages: &[Package],
        simulate: bool,
    ) -> Result<Changes, PackageKitError> {
        self.change(Change::Update, packages, simulate).await
    }

    /// The installed packages that have a newer version available.
    pub async fn updates(&self) -> Result<Vec<Package>, PackageKitError> {
        let reports = self
            .transact("list updates", Call::GetUpdates(FILTER_NONE))
            .await?;
        Ok(reports.into_iter().map(|(_, package)| package).collect())
    }

    /// How many packages are installed; PackageKit's backend loads its whole cache for this.
    pub async fn installed_count(&self) -> Result<usize, PackageKitError> {
        let reports = self
            .transact(
                "count installed packages",
                Call::GetPackages(FILTER_INSTALLED),
            )
            .await?;
        Ok(reports
            .iter()
            .filter(|(info, _)| *info == INFO_INSTALLED)
            .count())
    }

    async fn change(
        &self,
        change: Change,
        packages: &[Package],
        simulate: bool,
    ) -> Result<Changes, PackageKitError> {
        let ids: Vec<&str> = packages.iter().map(|p| p.id.as_str()).collect();
        let names: Vec<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        let flags = FLAG_ONLY_TRUSTED | if simulate { FLAG_SIMULATE } else { 0 };
        let (verb, call) = match change {
            Change::Install => ("install", Call::Install(flags, &ids)),
            Change::Remove => ("remove", Call::Remove(flags, &ids)),
            Change::Update => ("update", Call::Update(flags, &ids)),
        };
        let action = format!(
            "{}{verb} {}",
            if simulate { "simulate: " } else { "" },
            names.join(", ")
        );
        let reports = self.transact(&action, call).await?;
        Ok(Changes::from_reports(reports))
    }

    /// Runs `call` in a new transaction and returns every `Package` signal it sent.
    async fn transact(
        &self,
        action: &str,
        call: Call<'_>,
    ) -> Result<Vec<(u32, Package)>, PackageKitError> {
        let mut progress = Progress::default();
        let outcome = tokio::time::timeout_at(
            self.deadline.into(),
            self.transact_untimed(action, call, &mut progress),
        )
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(PackageKitError::TimedOut {
                action: action.to_string(),
                progress: progress.to_string(),
            }),
        }
    }

    async fn transact_untimed(
        &self,
        action: &str,
        call: Call<'_>,
        progress: &mut Progress,
    ) -> Result<Vec<(u32, Package)>, PackageKitError> {
        let bus = |error: zbus::Error| bus_error(action, error);
        // Subscribed before the transaction exists: if the daemon goes, `Finished` never comes.
        let mut owner_changes = zbus::fdo::DBusProxy::new(&self.connection)
            .await
            .map_err(bus)?
            .receive_name_owner_changed_with_args(&[(0, SERVICE)])
            .await
            .map_err(bus)?;
        let path = self.daemon.create_transaction().await.map_err(bus)?;
        let transaction = TransactionProxy::builder(&self.connection)
            .path(path)
            .build()
            .await
            .map_err(bus)?;
        let mut signals = transaction
            .inner()
            .receive_all_signals()
            .await
            .map_err(bus)?;
        let mut status_changes = transaction.receive_status_changed().await;
        let mut percentage_changes = transaction.receive_percentage_changed().await;
        transaction
            .set_hints(&[
                "locale=C",
                "interactive=false",
                "background=false",
                "supports-plural-signals=true",
            ])
            .await
            .map_err(bus)?;
        call.send(&transaction).await.map_err(bus)?;

        let mut reports = Vec::new();
        let mut error = None;
        loop {
            tokio::select! {
                Some(message) = signals.next() => {
                    let header = message.header();
                    let Some(member) = header.member() else { continue };
                    let body = message.body();
                    match member.as_str() {
                        "Package" => {
                            if let Ok((info, id, _summary)) = body.deserialize::<(u32, String, String)>() {
                                if let Some(package) = Package::parse(&id) {
                                    reports.push((info, package));
                                }
                            }
                        }
                        "Packages" => {
                            if let Ok((batch,)) = body.deserialize::<(Vec<(u32, String, String)>,)>() {
                                reports.extend(batch.into_iter().filter_map(|(info, id, _summary)| {
                                    Package::parse(&id).map(|package| (info, package))
                                }));
                            }
                        }
                        "ErrorCode" => {
                            if let Ok((code, details)) = body.deserialize::<(u32, String)>() {
                                error = Some((code, details));
                            }
                        }
                        "Finished" => {
                            let (exit, _runtime_ms) = body.deserialize::<(u32, u32)>().map_err(bus)?;
                            return match (exit, error) {
                                (EXIT_SUCCESS, None) => Ok(reports),
                                (_, Some((code, details))) => Err(PackageKitError::Failed {
                                    action: action.to_string(),
                                    code: error_name(code),
                                    details: details.trim().to_string(),
                                }),
                                (exit, None) => Err(PackageKitError::Failed {
                                    action: action.to_string(),
                                    code: format!("exit {exit}"),
                                    details: "the transaction failed without saying why".into(),
                                }),
                            };
                        }
                        _ => {}
                    }
                }
                Some(change) = status_changes.next() => {
                    progress.status = change.get().await.ok();
                }
                Some(change) = percentage_changes.next() => {
                    progress.percentage = change.get().await.ok();
                }
                Some(_) = owner_changes.next() => {
                    return Err(PackageKitError::DaemonVanished {
                        action: action.to_string(),
                        progress: progress.to_string(),
                    });
                }
                else => {
                    return Err(PackageKitError::Bus {
                        action: action.to_string(),
                        error: "the system bus closed the connection".into(),
                    });
                }
            }
        }
    }
}

fn unavailable(error: impl fmt::Display) -> PackageKitError {
    PackageKitError::Unavailable {
        reason: format!("cannot connect to {}: {error}", system_bus_address()),
    }
}

fn bus_error(action: &str, error: zbus::Error) -> PackageKitError {
    if is_service_missing(&error) {
        PackageKitError::Unavailable {
            reason: format!("{SERVICE} is not provided: {error}"),
        }
    } else {
        PackageKitError::Bus {
            action: action.to_string(),
            error: error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(id: &str) -> Package {
        Package::parse(id).expect("a well-formed id")
    }

    #[test]
    fn package_ids_split_into_name_version_arch() {
        let hello = package("hello;2.10-3;amd64;+manual:debian-oldstable-main");
        assert_eq!(
            (
                hello.name.as_str(),
                hello.version.as_str(),
                hello.arch.as_str()
            ),
            ("hello", "2.10-3", "amd64")
        );
        assert_eq!(hello.to_string(), "hello 2.10-3 (amd64)");
        assert_eq!(Package::parse("hello"), None);
    }

    #[test]
    fn changes_keep_one_entry_per_package_and_ignore_progress_infos() {
        let reports = vec![
            (10, package("hello;2.10-3;amd64;+manual:main")),
            (12, package("hello;2.10-3;amd64;+manual:main")),
            (18, package("hello;2.10-3;amd64;+manual:main")),
            (12, package("hello;2.10-3;amd64;main")),
            (13, package("cowsay-off;3.03;all;manual:main")),
            (11, package("zlib1g;1.3;amd64;main")),
        ];
        let changes = Changes::from_reports(reports);
        let names = |list: &[Package]| list.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&changes.installed), ["hello"]);
        assert_eq!(names(&changes.removed), ["cowsay-off"]);
        assert_eq!(names(&changes.updated), ["zlib1g"]);
    }

    #[test]
    fn progress_names_the_status_and_hides_an_unknown_percentage() {
        let progress = Progress {
            status: Some(8),
            percentage: Some(45),
        };
        assert_eq!(progress.to_string(), "downloading, 45%");
        let unknown = Progress {
            status: Some(30),
            percentage: Some(101),
        };
        assert_eq!(
            unknown.to_string(),
            "waiting for the package manager's lock"
        );
    }
}
