//! weft's object model, as a library others can embed: read TaskBooks and cluster
//! objects from YAML with file:line:column errors, validate them, resolve variables,
//! render Tera templates, plan rollouts, report results, and bundle a TaskBook with the
//! files it reads. No network, no I/O beyond reading the files it is pointed at and
//! writing a bundle out where it is told.

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
pub mod task;
pub mod taskbook;
pub mod vars;
pub mod yaml;

pub use error::{Error, Result, Span};

/// The unit tests measure what renderings allocate, as the `weft` binary does.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: render::CountingAllocator = render::CountingAllocator;
pub use task::Task;
pub use taskbook::{Step, TaskBook};
pub use vars::Vars;
