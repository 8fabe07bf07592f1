//! The master's logic, free of gRPC, SQL and etcd.

pub mod pki;
pub mod token;
pub mod token_registry;
