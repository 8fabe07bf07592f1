//! weft's wire protocols, as `.proto` files and the tonic code generated from them:
//! `pubapi` (the public, small API: Join with a bootstrap token), `vpnapi` (everything
//! a node does, reachable only through the mesh with a node certificate) and `adminapi`
//! (the admin CLI, with the admin certificate). Filled by the master/minion issue.
