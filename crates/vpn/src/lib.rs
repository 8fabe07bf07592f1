//! The WireGuard full mesh. Master side, as plain data the master stores: the IP pool
//! (`ip_pool`: an address stays with its node; the longest-idle offline node's address
//! is reclaimed when full) and the peer registry (`peer_registry`: versioned, answering
//! "changes since version V"; `departed_peers`: the master's interface keeps a peer
//! that left a moment, so its goodbye gets an answer). Node side: the key pair (`vpn_key`), the peers it knows
//! and caches (`peer_set`), and the interface itself (`device`).

pub mod departed_peers;
pub mod device;
pub mod ip_pool;
pub mod peer_registry;
pub mod peer_set;
pub mod vpn_key;
