//! weft's object model, as a library others can embed: read TaskBooks and cluster
//! objects from YAML with file:line:column errors, validate them, resolve variables,
//! render Tera templates, plan rollouts, report results, bundle a TaskBook with the
//! files it reads, and keep weft's own YAML state files. No network; it writes only
//! where its caller says: a bundle unpacked for a run, and files replaced whole
//! (`whole_file`: weft's state files, and what the file modules write).

pub mod bundle;
pub mod cluster_vars;
pub mod de;
pub mod duration;
pub mod error;
pub mod limits;
pub mod objects;
pub mod references;
pub mod regular_file;
pub mod render;
pub mod report;
pub mod rollout;
pub mod schedule;
pub mod secrets;
pub mod selector;
pub mod state_file;
pub mod task;
pub mod taskbook;
pub mod vars;
pub mod whole_file;
pub mod yaml;

pub use error::{Error, Result, Span};

/// The unit tests measure what renderings allocate, as the `weft` binary does.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: render::CountingAllocator = render::CountingAllocator;
pub use task::Task;
pub use taskbook::{Step, TaskBook};
pub use vars::Vars;
