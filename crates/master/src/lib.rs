//! The weft master. `core/` holds the logic (nodes, tokens, jobs, rollouts, scheduler)
//! and knows no gRPC, SQL or etcd; `store/` implements one store trait on sqlite and
//! etcd; `api/` serves pubapi, vpnapi and adminapi by calling into the core. Filled by
//! the master/minion issue.
