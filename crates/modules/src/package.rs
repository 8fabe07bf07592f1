//! `package`: packages installed, absent or at their newest version, through PackageKit
//! (`packagekit.rs`), so one module serves apt, dnf and the other PackageKit backends.

use std::time::{Duration, Instant};

use serde::Deserialize;
use weft_taskbook::task::StringList;

use crate::dbus;
use crate::module::{Module, ModuleContext, ModuleError, Outcome};
use crate::packagekit::{
    self, Changes, PackageKit, PackageKitError, FILTER_ARCH, FILTER_INSTALLED, FILTER_NEWEST,
    FILTER_NOT_INSTALLED,
};

/// Installing a large set of packages takes minutes; a task's own `timeout` shortens this.
const PACKAGE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub struct Package;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageArgs {
    /// One package name or a list of them.
    name: StringList,
    #[serde(default)]
    state: PackageState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum PackageState {
    #[default]
    Present,
    Absent,
    Latest,
}

impl Module for Package {
    const NAME: &'static str = "package";
    type Args = PackageArgs;

    fn check_apply(
        &self,
        args: PackageArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let names = package_names(args.name)?;
        let deadline = dbus::deadline_within(context.deadline, PACKAGE_TIMEOUT);
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let converged = dbus::block_on(converge(&names, args.state, apply, deadline))
            .map_err(ModuleError::Failed)??;
        if apply && !converged.changes.is_empty() {
            crate::facts::forget_installed_count();
        }
        Ok(converged.into_outcome(context.want_diff))
    }
}

/// The names, trimmed and without repeats; PackageKit would take `;` for an id separator.
fn package_names(list: StringList) -> Result<Vec<String>, ModuleError> {
    let mut names: Vec<String> = Vec::new();
    for spanned in list.0 {
        let name = spanned.value.trim();
        if name.is_empty() || name.contains([';', ' ', '\t', '\n']) {
            return Err(ModuleError::Failed(format!(
                "`{}` (line {}) is not a package name: expected a name such as `nginx`, \
                 without spaces or `;`",
                spanned.value, spanned.line
            )));
        }
        if !names.iter().any(|known| known == name) {
            names.push(name.to_string());
        }
    }
    if names.is_empty() {
        return Err(ModuleError::Failed(
            "`name` lists no package: give one name or a list of names".into(),
        ));
    }
    Ok(names)
}

/// What the module did, or would do, before it becomes an [`Outcome`].
struct Converged {
    changes: Changes,
    /// The named packages that were installed beforehand, for the messages.
    installed_before: Vec<packagekit::Package>,
    apply: bool,
    state: PackageState,
    names: Vec<String>,
}

async fn converge(
    names: &[&str],
    state: PackageState,
    apply: bool,
    deadline: Instant,
) -> Result<Converged, ModuleError> {
    let packagekit = PackageKit::connect(deadline).await.map_err(failed)?;
    // Installing an installed package is a silent no-op in PackageKit, and removing a
    // missing one a silent success: only this tells whether anything changes.
    let installed = packagekit
        .resolve(FILTER_INSTALLED, names)
        .await
        .map_err(failed)?;
    let mut changes = Changes::default();
    match state {
        PackageState::Present | PackageState::Latest => {
            let missing: Vec<&str> = names
                .iter()
                .copied()
                .filter(|name| !installed.iter().any(|p| p.name == *name))
                .collect();
            if !missing.is_empty() {
                let candidates = newest_candidates(&packagekit, &missing).await?;
                changes.extend(
                    packagekit
                        .install(&candidates, !apply)
                        .await
                        .map_err(failed)?,
                );
            }
            if state == PackageState::Latest && !installed.is_empty() {
                let updates: Vec<_> = packagekit
                    .updates()
                    .await
                    .map_err(failed)?
                    .into_iter()
                    .filter(|update| names.contains(&update.name.as_str()))
                    .collect();
                if !updates.is_empty() {
                    changes.extend(packagekit.update(&updates, !apply).await.map_err(failed)?);
                }
            }
        }
        PackageState::Absent if !installed.is_empty() => {
            // PackageKit removes reverse dependencies even when told not to, so what the
            // simulation would take decides whether to go ahead.
            let simulated = packagekit.remove(&installed, true).await.map_err(failed)?;
            let dragged: Vec<String> = simulated
                .removed
                .iter()
                .filter(|package| !names.contains(&package.name.as_str()))
                .map(ToString::to_string)
                .collect();
            if !dragged.is_empty() {
                return Err(ModuleError::Failed(format!(
                    "removing {} would also remove {} more: {}; name those packages too if \
                     they should go, or leave {} installed",
                    names.join(", "),
                    dragged.len(),
                    dragged.join(", "),
                    if names.len() == 1 { "it" } else { "them" },
                )));
            }
            changes = if apply {
                packagekit.remove(&installed, false).await.map_err(failed)?
            } else {
                simulated
            };
        }
        PackageState::Absent => {}
    }
    Ok(Converged {
        changes,
        installed_before: installed,
        apply,
        state,
        names: names.iter().map(|name| name.to_string()).collect(),
    })
}

/// The version to install of each name, all of them known to PackageKit.
async fn newest_candidates(
    packagekit: &PackageKit,
    names: &[&str],
) -> Result<Vec<packagekit::Package>, ModuleError> {
    let mut candidates: Vec<packagekit::Package> = Vec::new();
    for package in packagekit
        .resolve(FILTER_NOT_INSTALLED | FILTER_NEWEST | FILTER_ARCH, names)
        .await
        .map_err(failed)?
    {
        if !candidates.iter().any(|known| known.name == package.name) {
            candidates.push(package);
        }
    }
    let unknown: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| !candidates.iter().any(|p| p.name == *name))
        .collect();
    if unknown.is_empty() {
        Ok(candidates)
    } else {
        Err(ModuleError::Failed(format!(
            "no package named {} in the package lists PackageKit reads: check the name \
             (`apt-cache search`), or refresh the lists (`apt-get update`) if it is new",
            unknown
                .iter()
                .map(|name| format!("`{name}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

fn failed(error: PackageKitError) -> ModuleError {
    ModuleError::Failed(error.to_string())
}

impl Converged {
    fn into_outcome(self, want_diff: bool) -> Outcome {
        let changed = !self.changes.is_empty();
        let diff = (want_diff && changed).then(|| self.diff());
        let list = |packages: &[packagekit::Package]| {
            packages
                .iter()
                .map(packagekit::Package::to_json)
                .collect::<Vec<_>>()
        };
        Outcome::changed(changed)
            .with_msg(self.message())
            .with_diff(diff)
            .with_output("installed", list(&self.changes.installed))
            .with_output("updated", list(&self.changes.updated))
            .with_output("removed", list(&self.changes.removed))
    }

    fn message(&self) -> String {
        let joined = |packages: &[packagekit::Package]| {
            packages
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        for (verb, done, packages) in [
            ("install", "installed", &self.changes.installed),
            ("update", "updated", &self.changes.updated),
            ("remove", "removed", &self.changes.removed),
        ] {
            if !packages.is_empty() {
                let verb = if self.apply {
                    done.to_string()
                } else {
                    format!("would {verb}")
                };
                parts.push(format!("{verb} {}", joined(packages)));
            }
        }
        if !parts.is_empty() {
            return parts.join("; ");
        }
        match self.state {
            PackageState::Present => {
                format!("already installed: {}", joined(&self.installed_before))
            }
            PackageState::Latest => {
                format!("already the newest: {}", joined(&self.installed_before))
            }
            PackageState::Absent => format!("not installed: {}", self.names.join(", ")),
        }
    }

    /// `name: before -> after` lines, as `file` reports attributes.
    fn diff(&self) -> String {
        let before = |name: &str| {
            self.installed_before
                .iter()
                .find(|package| package.name == name)
                .map(|package| package.version.clone())
                .unwrap_or_else(|| "absent".into())
        };
        let mut lines = Vec::new();
        for package in self.changes.installed.iter().chain(&self.changes.updated) {
            lines.push(format!(
                "{}: {} -> {} ({})",
                package.name,
                before(&package.name),
                package.version,
                package.arch
            ));
        }
        for package in &self.changes.removed {
            lines.push(format!("{}: {} -> absent", package.name, package.version));
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_taskbook::de::Spanned;

    fn list(names: &[&str]) -> StringList {
        StringList(
            names
                .iter()
                .map(|name| Spanned {
                    line: 3,
                    col: 5,
                    value: name.to_string(),
                })
                .collect(),
        )
    }

    fn error(result: Result<Vec<String>, ModuleError>) -> String {
        match result {
            Err(ModuleError::Failed(message)) => message,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn names_are_trimmed_and_repeats_dropped() {
        assert_eq!(
            package_names(list(&[" hello", "curl", "hello "])).unwrap(),
            ["hello", "curl"]
        );
    }

    #[test]
    fn a_name_that_could_not_be_a_package_is_refused_before_any_bus_call() {
        let message = error(package_names(list(&["hello;1.0;amd64;main"])));
        assert!(message.contains("is not a package name"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        let message = error(package_names(list(&[])));
        assert!(message.contains("lists no package"), "{message}");
    }

    fn hello(version: &str) -> packagekit::Package {
        packagekit::Package {
            name: "hello".into(),
            version: version.into(),
            arch: "amd64".into(),
            id: format!("hello;{version};amd64;main"),
        }
    }

    #[test]
    fn check_mode_says_what_would_change_and_the_diff_shows_versions() {
        let converged = Converged {
            changes: Changes {
                updated: vec![hello("2.11")],
                ..Changes::default()
            },
            installed_before: vec![hello("2.10")],
            apply: false,
            state: PackageState::Latest,
            names: vec!["hello".into()],
        };
        let outcome = converged.into_outcome(true);
        assert!(outcome.changed);
        assert_eq!(
            outcome.msg.as_deref(),
            Some("would update hello 2.11 (amd64)")
        );
        assert_eq!(outcome.diff.as_deref(), Some("hello: 2.10 -> 2.11 (amd64)"));
        assert_eq!(outcome.output["updated"][0]["version"], "2.11");
    }

    #[test]
    fn nothing_to_do_is_unchanged_and_says_so() {
        let converged = Converged {
            changes: Changes::default(),
            installed_before: vec![hello("2.10")],
            apply: true,
            state: PackageState::Present,
            names: vec!["hello".into()],
        };
        let outcome = converged.into_outcome(true);
        assert!(!outcome.changed);
        assert_eq!(outcome.diff, None);
        assert_eq!(
            outcome.msg.as_deref(),
            Some("already installed: hello 2.10 (amd64)")
        );
    }
}
