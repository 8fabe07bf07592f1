//! The master's logic, free of gRPC, SQL and etcd.

pub mod admin_registry;
pub mod beacons;
pub mod cron_jobs;
pub mod events;
pub mod git_poller;
pub mod git_repositories;
pub mod job;
pub mod join;
pub mod leadership;
pub mod mesh;
pub mod node_registry;
pub mod objects;
pub mod pki;
pub mod record;
pub mod run;
pub mod secret_box;
pub mod sessions;
pub mod token;
pub mod token_registry;
pub mod triggers;
