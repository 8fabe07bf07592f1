//! `slurp`: reads a file on the node into the task's result, base64-encoded with its
//! SHA-256 (Ansible's `slurp`). The master reads a `sync` task's source file with it.

use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;

use crate::module::{Module, ModuleContext, ModuleError, Outcome};

/// Larger files are refused: a slurped file travels through the master in one message.
pub const MAX_SLURP_BYTES: u64 = 1024 * 1024;

pub struct Slurp;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurpArgs {
    src: PathBuf,
}

impl Module for Slurp {
    const NAME: &'static str = "slurp";
    type Args = SlurpArgs;

    fn check_apply(
        &self,
        args: SlurpArgs,
        _context: &mut ModuleContext,
        _apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let size = std::fs::metadata(&args.src)
            .map_err(|e| ModuleError::io(&args.src, "read", e))?
            .len();
        if size > MAX_SLURP_BYTES {
            return Err(ModuleError::Failed(format!(
                "{} is {size} bytes; slurp and sync carry files of at most {MAX_SLURP_BYTES} bytes",
                args.src.display()
            )));
        }
        let content =
            std::fs::read(&args.src).map_err(|e| ModuleError::io(&args.src, "read", e))?;
        Ok(Outcome::unchanged()
            .with_output("src", args.src.display().to_string())
            .with_output("size", content.len())
            .with_output("sha256", sha256_hex(&content))
            .with_output(
                "content",
                base64::engine::general_purpose::STANDARD.encode(&content),
            ))
    }
}

pub fn sha256_hex(content: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(content)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
