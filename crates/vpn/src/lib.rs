//! The WireGuard full mesh. Master side: the IP pool (an address stays with its node;
//! the longest-idle offline node's address is reclaimed when full) and the peer registry
//! (versioned, answering "changes since version V"). Node side: the device (kernel
//! WireGuard, else embedded boringtun) and the loop that converges it. Filled by the
//! mesh issue.
