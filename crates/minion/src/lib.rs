//! The weft node agent: runs tasks on this node (`executor`), and local mode
//! (`local`), which runs a whole TaskBook here with no master.

pub mod executor;
pub mod local;
