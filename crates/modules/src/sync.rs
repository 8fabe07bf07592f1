//! `sync`: a file or a registered value from one node, written on the nodes of the
//! step (seed 001: a token or certificate made on one node, needed on the others).
//!
//! The content travels through the master: for `var` it is the source node's
//! registered result or `set_var` value from an earlier step; for `src` the master
//! reads the file on the source node (`slurp`) before the step starts. Either way it
//! reaches the targets with its SHA-256, and a target whose file already has that hash
//! is left alone, so a rerun changes nothing.

use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use weft_taskbook::yaml::Node;
use weft_taskbook::Error;

use crate::files::{
    arg_error, literal_arg, place_file, read_existing, validate_mode, WriteOptions,
};
use crate::module::{MasterNeeds, Module, ModuleContext, ModuleError, Outcome};
use crate::slurp::sha256_hex;

/// Where the master puts what the step's `sync` tasks carry, in the task context.
pub const SYNCED_VAR: &str = "weft_synced";

pub struct Sync;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncArgs {
    /// The node the content comes from.
    pub from: String,
    /// A file on that node.
    pub src: Option<String>,
    /// A registered result or set_var value of that node, by dotted path
    /// (`token.stdout`).
    pub var: Option<String>,
    dest: PathBuf,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    /// Write through a symbolic link at `dest` instead of replacing it.
    #[serde(default)]
    follow: bool,
}

const SRC_OR_VAR: &str =
    "sync takes exactly one of `src` (a file on the `from` node) and `var` (a value it registered)";

impl SyncArgs {
    fn source(&self) -> SyncSource {
        SyncSource {
            from: self.from.clone(),
            src: self.src.clone(),
            var: self.var.clone(),
        }
    }
}

/// Where a `sync` task's content comes from; fixed before the run, since the master
/// reads it before the step starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSource {
    pub from: String,
    pub src: Option<String>,
    pub var: Option<String>,
}

impl SyncSource {
    /// A `sync` task's source, from its arguments as written.
    pub fn of(args: &Node) -> Option<SyncSource> {
        let text = |key| literal_arg(args, key).map(|(_, text)| text.to_string());
        Some(SyncSource {
            from: text("from")?,
            src: text("src"),
            var: text("var"),
        })
    }

    /// The task the master runs on the `from` node to read a file source (`slurp`, whose
    /// `content` it decodes); `None` for a registered value, which it already holds.
    pub fn read_task(&self) -> Option<Value> {
        let src = self.src.as_ref()?;
        Some(serde_json::json!({"name": "read for sync", "slurp": {"src": src}}))
    }

    /// How the master names this content in the step's context.
    pub fn key(&self) -> String {
        match (&self.src, &self.var) {
            (Some(src), _) => format!("{}:file:{src}", self.from),
            (None, Some(var)) => format!("{}:var:{var}", self.from),
            (None, None) => format!("{}:", self.from),
        }
    }
}

/// What the master sends for one source: the content, base64, and its SHA-256.
pub fn synced_entry(content: &[u8]) -> Value {
    serde_json::json!({
        "content": base64::engine::general_purpose::STANDARD.encode(content),
        "sha256": sha256_hex(content),
    })
}

impl Module for Sync {
    const NAME: &'static str = "sync";
    type Args = SyncArgs;

    fn master_needs(args: &Node) -> MasterNeeds<'_> {
        MasterNeeds {
            synced: SyncSource::of(args),
            ..MasterNeeds::default()
        }
    }

    fn validate(args: &Node, _base_dir: &std::path::Path) -> Result<(), Error> {
        validate_mode(args)?;
        if args.get("src").is_some() == args.get("var").is_some() {
            return Err(Error::new(SRC_OR_VAR).at(args.span));
        }
        for key in ["from", "src", "var"] {
            if let Some(node) = args.get(key).filter(|node| node.is_template()) {
                return Err(arg_error(
                    node,
                    key,
                    format!("sync's `{key}` cannot be a template: the master reads the source before the step starts"),
                ));
            }
        }
        Ok(())
    }

    fn check_apply(
        &self,
        args: SyncArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let key = args.source().key();
        let entry = context
            .vars
            .get(SYNCED_VAR)
            .and_then(|synced| synced.get(&key))
            .ok_or_else(|| {
                ModuleError::Failed(format!(
                    "the master sent no content for {key}: sync runs through a master (`weft run taskbook` without --local)"
                ))
            })?;
        let sha256 = entry["sha256"].as_str().unwrap_or_default().to_string();
        let content = base64::engine::general_purpose::STANDARD
            .decode(entry["content"].as_str().unwrap_or_default())
            .map_err(|e| ModuleError::Failed(format!("the master sent {key} garbled: {e}")))?;
        if sha256_hex(&content) != sha256 {
            return Err(ModuleError::Failed(format!(
                "the content of {key} does not match its SHA-256: not written"
            )));
        }
        let options = WriteOptions::new(
            args.mode.as_deref(),
            args.owner.as_deref(),
            args.group.as_deref(),
            false,
            args.follow,
            apply,
        )?;
        let unchanged = read_existing(&args.dest, args.follow)?
            .is_some_and(|current| sha256_hex(&current) == sha256);
        // Same hash: the content is in place; only attributes may still differ.
        let outcome = place_file(
            &args.dest,
            None,
            &content,
            &options,
            context.want_diff && !unchanged,
            apply,
        )?;
        Ok(outcome
            .with_output("sha256", sha256)
            .with_output("from", args.from))
    }
}
