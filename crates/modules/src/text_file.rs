//! What the modules that edit a text file in place share (`lineinfile`, `blockinfile`,
//! `replace`): the file's arguments, reading it whole as UTF-8 text, a link at its path
//! refused unless the task follows it, and the edited text converged with the file's
//! attributes, a diff and a backup as `copy` would.

use std::path::Path;

use crate::files::{converge_file, read_existing, refuse_symlink, WriteOptions};
use crate::module::{ModuleContext, ModuleError, Outcome};

/// The arguments every text-editing module takes besides its own. (Not a flattened
/// struct of theirs: serde's `flatten` cannot deny unknown fields.)
pub(crate) struct TextFile<'a> {
    pub path: &'a Path,
    pub mode: Option<&'a str>,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    pub backup: bool,
    /// Edit the file a symbolic link at `path` points to, instead of refusing.
    pub follow: bool,
}

/// What to do when there is no file at the path yet.
pub(crate) enum WhenMissing {
    /// Edit an empty text and create the file (`create: true`).
    Create,
    /// Nothing to remove from a file that is not there: ok, unchanged.
    NothingToDo,
    /// A failure, with what to do about it.
    Fail { hint: &'static str },
}

/// An edit's result: the new text and what was done (`line added`).
#[derive(Debug, PartialEq)]
pub(crate) struct Edited {
    pub text: String,
    pub msg: String,
}

/// Reads the file at `file.path`, hands its text to `edit`, and converges the file to
/// what `edit` returns (`None`: the text stays as it is, the attributes still converge).
pub(crate) fn edit_text_file(
    module: &str,
    file: &TextFile,
    when_missing: WhenMissing,
    context: &ModuleContext,
    apply: bool,
    edit: impl FnOnce(&str) -> Result<Option<Edited>, ModuleError>,
) -> Result<Outcome, ModuleError> {
    let options = WriteOptions::new(
        file.mode,
        file.owner,
        file.group,
        file.backup,
        file.follow,
        apply,
    )?;
    let path = file.path;
    // Replacing a link with a file holding only the edit would lose what it pointed
    // to, so a link is refused rather than replaced.
    refuse_symlink(path, file.follow, "edits")?;
    let current = read_existing(path, file.follow)?;
    let text = match (&current, when_missing) {
        (Some(bytes), _) => std::str::from_utf8(bytes).map_err(|_| {
            ModuleError::Failed(format!(
                "{} is not UTF-8 text; {module} edits text files",
                path.display()
            ))
        })?,
        (None, WhenMissing::Create) => "",
        (None, WhenMissing::NothingToDo) => {
            return Ok(Outcome::unchanged()
                .with_msg(format!("{} does not exist", path.display()))
                .with_output("path", path.display().to_string()))
        }
        (None, WhenMissing::Fail { hint }) => {
            return Err(ModuleError::Failed(format!(
                "{} does not exist; {hint}",
                path.display()
            )))
        }
    };
    let edited = edit(text)?;
    let new_text = edited.as_ref().map_or(text, |edited| edited.text.as_str());
    let mut outcome = converge_file(
        path,
        current.as_deref(),
        new_text.as_bytes(),
        &options,
        context.want_diff,
        apply,
    )?;
    outcome.msg = edited.map(|edited| edited.msg);
    Ok(outcome.with_output("path", path.display().to_string()))
}
