//! The weft master. `core/` holds the logic (nodes, tokens, jobs, rollouts) and knows
//! no gRPC, SQL or etcd; `store/` implements one store trait on sqlite and on
//! etcd; `api/` serves pubapi, vpnapi and adminapi by calling into the core;
//! `init` and `daemon` are `weft master init` and `weft master`; `git_mirror` is the
//! git plumbing behind GitRepository objects.

pub mod api;
pub mod ca_rotation;
pub mod core;
pub mod daemon;
pub mod git_mirror;
pub mod init;
pub mod store;
