//! The kinds of weft object. The one list at the bottom of this file is the only
//! place a kind is declared: it makes [`Kind`] and [`AnyObject`], so a new kind is a
//! line there and its spec type.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{
    BeaconSpec, ClusterVariablesBindingSpec, ConfigSpec, CronJobSpec, EventSpec, GitRepositorySpec,
    Metadata, NamespaceSpec, NodeGroupSpec, NodeSpec, Object, SecretSpec, TriggerSpec,
    VariablesSpec,
};
use crate::de::from_node;
use crate::error::Result;
use crate::taskbook::TaskBookSpec;
use crate::yaml::Node;

macro_rules! kinds {
    ($($kind:ident($spec:ty): $scope:ident, short [$($short:literal),*];)*) => {
        /// What an object is: the `kind:` of its document.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Kind {
            $($kind,)*
        }

        impl Kind {
            /// Every kind, in the order `weft` lists them.
            pub const ALL: &'static [Kind] = &[$(Kind::$kind,)*];
            /// Every kind's name, in the order of [`Kind::ALL`].
            pub const NAMES: &'static [&'static str] = &[$(stringify!($kind),)*];

            /// The name documents and stored records carry: `NodeGroup`.
            pub fn name(self) -> &'static str {
                Kind::NAMES[self as usize]
            }

            /// Whether objects of this kind live in a namespace.
            pub fn is_namespaced(self) -> bool {
                match self {
                    $(Kind::$kind => kinds!(@namespaced $scope),)*
                }
            }

            /// The other names a command line may use besides the name, its lowercase
            /// and its plural: kubectl-style short names and irregular plurals.
            pub fn short_names(self) -> &'static [&'static str] {
                match self {
                    $(Kind::$kind => &[$($short),*],)*
                }
            }
        }

        /// Any weft object, by kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum AnyObject {
            $($kind(Object<$spec>),)*
        }

        impl AnyObject {
            pub fn kind(&self) -> Kind {
                match self {
                    $(AnyObject::$kind(_) => Kind::$kind,)*
                }
            }

            pub fn metadata(&self) -> &Metadata {
                match self {
                    $(AnyObject::$kind(object) => &object.metadata,)*
                }
            }

            /// Reads `root` as an object of `kind`.
            pub(super) fn from_node(kind: Kind, root: &Node) -> Result<AnyObject> {
                match kind {
                    $(Kind::$kind => from_node(root).map(AnyObject::$kind),)*
                }
            }
        }
    };
    (@namespaced namespaced) => { true };
    (@namespaced cluster_wide) => { false };
}

kinds! {
    Namespace(NamespaceSpec): cluster_wide, short ["ns"];
    Node(NodeSpec): cluster_wide, short ["no"];
    NodeGroup(NodeGroupSpec): cluster_wide, short ["ng"];
    Config(ConfigSpec): cluster_wide, short [];
    ClusterVariables(VariablesSpec): cluster_wide, short ["cv"];
    ClusterVariablesBinding(ClusterVariablesBindingSpec): cluster_wide, short ["cvb"];
    Variables(VariablesSpec): namespaced, short ["vars"];
    Secret(SecretSpec): namespaced, short [];
    TaskBook(TaskBookSpec): namespaced, short ["tb"];
    GitRepository(GitRepositorySpec): namespaced, short ["repo", "repos", "gitrepositories"];
    CronJob(CronJobSpec): namespaced, short ["cj"];
    Beacon(BeaconSpec): namespaced, short [];
    Trigger(TriggerSpec): namespaced, short [];
    Event(EventSpec): namespaced, short ["ev"];
}

impl Kind {
    /// The kind a document's `kind:` or a stored record names, spelled exactly.
    pub fn from_exact_name(name: &str) -> Option<Kind> {
        Kind::ALL.iter().copied().find(|kind| kind.name() == name)
    }

    /// The kind a command line names: `NodeGroup`, `nodegroup`, `nodegroups` or a short
    /// name such as `ng`, as kubectl reads them.
    pub fn named(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        Kind::ALL.iter().copied().find(|kind| {
            let kind_lower = kind.name().to_ascii_lowercase();
            lower == kind_lower
                || lower.strip_suffix('s') == Some(kind_lower.as_str())
                || kind.short_names().contains(&lower.as_str())
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is no kind, with the kinds there are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kind `{0}`; the kinds are {kinds}", kinds = Kind::NAMES.join(", "))]
pub struct UnknownKind(pub String);

impl FromStr for Kind {
    type Err = UnknownKind;

    /// Reads a kind as a command line names it (see [`Kind::named`]).
    fn from_str(name: &str) -> std::result::Result<Kind, UnknownKind> {
        Kind::named(name).ok_or_else(|| UnknownKind(name.to_string()))
    }
}

impl Serialize for Kind {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// Stored records and documents spell a kind exactly, so only its exact name reads.
impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Kind, D::Error> {
        let name = String::deserialize(deserializer)?;
        Kind::from_exact_name(&name).ok_or_else(|| serde::de::Error::custom(UnknownKind(name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_name_serde_and_from_str() {
        for &kind in Kind::ALL {
            assert_eq!(Kind::from_exact_name(kind.name()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(serde_json::from_str::<Kind>(&json).unwrap(), kind);
            for spelling in [
                kind.name().to_string(),
                kind.name().to_ascii_lowercase(),
                format!("{}s", kind.name().to_ascii_lowercase()),
                kind.name().to_ascii_uppercase(),
            ] {
                assert_eq!(spelling.parse::<Kind>(), Ok(kind), "{spelling}");
            }
        }
    }

    #[test]
    fn every_short_name_parses_to_its_kind_and_to_no_other() {
        let shorts = [
            ("ns", Kind::Namespace),
            ("no", Kind::Node),
            ("ng", Kind::NodeGroup),
            ("cv", Kind::ClusterVariables),
            ("cvb", Kind::ClusterVariablesBinding),
            ("vars", Kind::Variables),
            ("tb", Kind::TaskBook),
            ("repo", Kind::GitRepository),
            ("repos", Kind::GitRepository),
            ("gitrepositories", Kind::GitRepository),
            ("cj", Kind::CronJob),
            ("ev", Kind::Event),
        ];
        for (short, kind) in shorts {
            assert_eq!(Kind::named(short), Some(kind), "{short}");
            assert_eq!(Kind::named(&short.to_ascii_uppercase()), Some(kind));
        }
        let declared: usize = Kind::ALL.iter().map(|k| k.short_names().len()).sum();
        assert_eq!(declared, shorts.len());
        for &kind in Kind::ALL {
            for short in kind.short_names() {
                let claimed: Vec<Kind> = Kind::ALL
                    .iter()
                    .copied()
                    .filter(|other| {
                        let name = other.name().to_ascii_lowercase();
                        *short == name
                            || short.strip_suffix('s') == Some(name.as_str())
                            || other.short_names().contains(short)
                    })
                    .collect();
                assert_eq!(claimed, [kind], "{short} must name one kind");
            }
        }
    }

    #[test]
    fn namespaced_kinds_are_the_ones_that_live_in_a_namespace() {
        let namespaced: Vec<&str> = Kind::ALL
            .iter()
            .filter(|kind| kind.is_namespaced())
            .map(|kind| kind.name())
            .collect();
        assert_eq!(
            namespaced,
            [
                "Variables",
                "Secret",
                "TaskBook",
                "GitRepository",
                "CronJob",
                "Beacon",
                "Trigger",
                "Event"
            ]
        );
        assert_eq!(
            Kind::NAMES[..6],
            [
                "Namespace",
                "Node",
                "NodeGroup",
                "Config",
                "ClusterVariables",
                "ClusterVariablesBinding"
            ]
        );
    }

    #[test]
    fn an_unknown_name_fails_with_the_kinds_there_are() {
        let error = "Foo".parse::<Kind>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown kind `Foo`; the kinds are Namespace, Node, NodeGroup, Config, \
             ClusterVariables, ClusterVariablesBinding, Variables, Secret, TaskBook, \
             GitRepository, CronJob, Beacon, Trigger, Event"
        );
        assert_eq!(Kind::named(""), None);
        assert_eq!(Kind::named("s"), None);
        // Documents and stored records spell a kind exactly.
        assert_eq!(Kind::from_exact_name("nodegroup"), None);
        assert!(serde_json::from_str::<Kind>("\"ng\"").is_err());
    }
}
