//! `slurp`: reads a file on the node into the task's result, base64-encoded with its
//! SHA-256 (Ansible's `slurp`). The master reads a `sync` task's source file with it.

use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;
use weft_taskbook::regular_file::{read_regular_file, ReadLimit};

use crate::module::{Module, ModuleContext, ModuleError, Outcome};

/// Larger files are refused: a slurped file travels through the master in one message.
pub const MAX_SLURP_BYTES: u64 = 1024 * 1024;

const SLURP_LIMIT: ReadLimit = ReadLimit {
    max_bytes: MAX_SLURP_BYTES,
    reader: "slurp and sync carry",
};

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
        let content =
            read_regular_file(&args.src, true, &SLURP_LIMIT).map_err(ModuleError::Failed)?;
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
    hex(&sha2::Sha256::digest(content))
}

/// Lower-case hex, as `sha256sum` prints digests.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::test_support::run;

    #[test]
    fn only_a_regular_file_within_the_bound_is_slurped() {
        let dir = tempfile::tempdir().unwrap();
        let err = run(&Slurp, "src: /dev/zero", dir.path(), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/dev/zero is a character device, not a regular file"
        );
        let big = dir.path().join("big");
        std::fs::File::create(&big)
            .unwrap()
            .set_len(MAX_SLURP_BYTES + 1)
            .unwrap();
        let err = run(&Slurp, &format!("src: {}", big.display()), dir.path(), true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is 1048577 bytes; slurp and sync carry files of at most 1048576 bytes (1.0 MiB)",
                big.display()
            )
        );
        let small = dir.path().join("small");
        std::fs::write(&small, "hi").unwrap();
        let outcome = run(
            &Slurp,
            &format!("src: {}", small.display()),
            dir.path(),
            true,
        )
        .unwrap();
        assert_eq!(outcome.output["content"], "aGk=");
    }
}
