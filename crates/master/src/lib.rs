//! The weft master. `core/` holds the logic (nodes, tokens, jobs, rollouts, scheduler)
//! and knows no gRPC, SQL or etcd; `store/` implements one store trait on sqlite (and,
//! later, etcd); `api/` will serve pubapi, vpnapi and adminapi by calling into the core.

pub mod core;
pub mod store;
