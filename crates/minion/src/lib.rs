//! The weft node agent: joins a cluster (`join`, `identity`), keeps a session with the
//! master and runs the steps it sends (`agent`), keeps its place in the WireGuard mesh
//! (`mesh`), runs tasks (`executor`), and local
//! mode (`local`), which runs a whole TaskBook here with no master.

pub mod agent;
mod beacon_checks;
pub mod beacons;
pub mod executor;
pub mod identity;
pub mod join;
pub mod leave;
pub mod local;
pub mod mesh;

use weft_proto::bootstrap_token::TokenFormatError;
use weft_proto::tls::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum MinionError {
    #[error(transparent)]
    Token(#[from] TokenFormatError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the master refused to join this node: {0}")]
    Refused(String),
    #[error("this node already joined a cluster ({0}); run it with `weft minion`, or remove that file to join again")]
    AlreadyJoined(String),
    #[error("cannot make this node's key: {0}")]
    Key(String),
    #[error("the identity lists no master endpoint; join again")]
    NoMaster,
    #[error("{0}")]
    Io(String),
    #[error("the mesh: {0}")]
    Mesh(String),
    #[error("the master refused: {0}")]
    Master(String),
    #[error(transparent)]
    File(#[from] weft_taskbook::Error),
}
