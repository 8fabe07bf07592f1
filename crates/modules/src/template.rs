//! `template`: renders a Tera template file with every variable and fact, then puts the
//! result at `dest` as `copy` would.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use weft_taskbook::regular_file::read_regular_file;
use weft_taskbook::render::{Renderer, TemplateOrigin};
use weft_taskbook::yaml::Node;
use weft_taskbook::Error;

use crate::files::{
    place_file, resolve_src, validate_mode, validate_src, WriteOptions, FILE_LIMIT,
};
use crate::module::{MasterNeeds, Module, ModuleContext, ModuleError, Outcome};

pub struct Template;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateArgs {
    /// Relative paths are looked for next to the TaskBook, then in `templates/` and `files/`.
    src: String,
    dest: PathBuf,
    mode: Option<String>,
    owner: Option<String>,
    group: Option<String>,
    #[serde(default)]
    backup: bool,
    /// Write through a symbolic link at `dest` instead of replacing it.
    #[serde(default)]
    follow: bool,
}

const RENDERS_ONE_FILE: &str = "template renders one file";

fn read_template(path: &Path) -> Result<String, String> {
    let bytes = read_regular_file(path, true, &FILE_LIMIT)?;
    String::from_utf8(bytes).map_err(|_| format!("template {} is not UTF-8 text", path.display()))
}

impl Module for Template {
    const NAME: &'static str = "template";
    type Args = TemplateArgs;

    fn master_needs(args: &Node) -> MasterNeeds<'_> {
        MasterNeeds {
            files: crate::files::fixed_relative_src(args),
            renders_bundle_files: true,
            synced: None,
        }
    }

    /// A literal `src` must exist and compile, so a typo in a template fails before the run.
    fn validate(args: &Node, base_dir: &Path) -> Result<(), Error> {
        validate_mode(args)?;
        let Some(path) = validate_src(args, base_dir, RENDERS_ONE_FILE)? else {
            return Ok(());
        };
        let text = read_template(&path).map_err(|message| Error::new(message).in_file(&path))?;
        Renderer::default()
            .check_syntax(&text, TemplateOrigin::file())
            .map_err(|e| e.in_file(&path))
    }

    fn check_apply(
        &self,
        args: TemplateArgs,
        context: &mut ModuleContext,
        apply: bool,
    ) -> Result<Outcome, ModuleError> {
        let options = WriteOptions::new(
            args.mode.as_deref(),
            args.owner.as_deref(),
            args.group.as_deref(),
            args.backup,
            args.follow,
            apply,
        )?;
        let src = resolve_src(&args.src, context.base_dir, RENDERS_ONE_FILE)
            .map_err(ModuleError::Failed)?;
        let text = read_template(&src).map_err(ModuleError::Failed)?;
        let rendered = context
            .renderer
            .render_text(&text, context.vars, TemplateOrigin::file())
            .map_err(|e| ModuleError::Failed(e.in_file(&src).to_string()))?;
        place_file(
            &args.dest,
            Some(&src),
            rendered.as_bytes(),
            &options,
            context.want_diff,
            apply,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::files::test_support::{assert_converges, mode_of, run, snapshot, validate};

    /// A TaskBook folder with `templates/<name>` holding `text`.
    fn taskbook_dir(name: &str, text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("templates")).unwrap();
        fs::write(dir.path().join("templates").join(name), text).unwrap();
        dir
    }

    #[test]
    fn renders_with_variables_once() {
        let dir = taskbook_dir("hello.j2", "hello {{ name }}\n");
        let dest = dir.path().join("hello.txt");
        let task = format!("src: hello.j2\ndest: {}\nmode: '0600'", dest.display());
        let outcome = assert_converges(&Template, &task, dir.path());
        assert_eq!(fs::read_to_string(&dest).unwrap(), "hello world\n");
        assert_eq!(mode_of(&dest), 0o600);
        assert!(outcome.diff.unwrap().ends_with("+hello world"));
        assert_eq!(outcome.output["size"], 12);
    }

    #[test]
    fn a_changed_rendering_is_a_diff() {
        let dir = taskbook_dir("hello.j2", "a\nhello {{ name }}\n");
        let dest = dir.path().join("hello.txt");
        fs::write(&dest, "a\nhello nobody\n").unwrap();
        let task = format!("src: hello.j2\ndest: {}", dest.display());
        let outcome = assert_converges(&Template, &task, dir.path());
        assert_eq!(
            outcome.diff.unwrap(),
            format!(
                "--- {0} (before)\n+++ {0} (after)\n@@ -1,2 +1,2 @@\n a\n-hello nobody\n+hello world",
                dest.display()
            )
        );
    }

    #[test]
    fn rendering_errors_name_the_template_file_and_line() {
        let dir = taskbook_dir("bad.j2", "line one\n{{ nmae }}\n");
        let task = format!("src: bad.j2\ndest: {}", dir.path().join("out").display());
        let before = snapshot(dir.path());
        let err = run(&Template, &task, dir.path(), false)
            .unwrap_err()
            .to_string();
        let template = dir.path().join("templates/bad.j2");
        assert!(err.starts_with(&template.display().to_string()), "{err}");
        assert!(err.contains("undefined variable `nmae`"), "{err}");
        assert!(err.contains("did you mean `name`?"), "{err}");
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn validation_checks_the_template_syntax() {
        let dir = taskbook_dir("bad.j2", "ok\n{{ name + }}\n");
        fs::write(dir.path().join("templates/good.j2"), "{{ name }}").unwrap();
        validate(&Template, "src: good.j2\ndest: /x", dir.path()).unwrap();

        let err = validate(&Template, "src: bad.j2\ndest: /x", dir.path()).unwrap_err();
        assert_eq!(
            err.file.as_deref(),
            Some(dir.path().join("templates/bad.j2").as_path())
        );
        assert_eq!(err.span.unwrap().line, 2);
        assert!(err.message.starts_with("template syntax error"), "{err}");

        let err = validate(&Template, "src: missing.j2\ndest: /x", dir.path()).unwrap_err();
        assert_eq!(err.field_path(), "src");
        let err = validate(&Template, "src: templates\ndest: /x", dir.path()).unwrap_err();
        assert!(
            err.message
                .ends_with("is a directory; template renders one file"),
            "{err}"
        );
    }

    #[test]
    fn src_that_is_a_device_or_fifo_is_refused_at_once() {
        let dir = taskbook_dir("unused.j2", "");
        let fifo = dir.path().join("templates/fifo.j2");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let dest = dir.path().join("out");
        for (src, message) in [
            (
                "/dev/zero".to_string(),
                "`src` /dev/zero is a character device, not a regular file".to_string(),
            ),
            (
                "fifo.j2".to_string(),
                format!(
                    "`src` {} is a FIFO (named pipe), not a regular file",
                    fifo.display()
                ),
            ),
        ] {
            let task = format!("src: {src}\ndest: {}", dest.display());
            let err = validate(&Template, &task, dir.path()).unwrap_err();
            assert_eq!(err.message, message);
            assert_eq!(err.field_path(), "src");
            let err = run(&Template, &task, dir.path(), true).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        assert!(!dest.exists());
    }

    #[test]
    fn a_template_file_renders_under_the_budget() {
        let dir = taskbook_dir("bomb.j2", "ok\n{{ range(end=999999999) | length }}\n");
        let task = format!("src: bomb.j2\ndest: {}", dir.path().join("out").display());
        validate(&Template, &task, dir.path()).unwrap();
        let err = run(&Template, &task, dir.path(), true)
            .unwrap_err()
            .to_string();
        let template = dir.path().join("templates/bomb.j2");
        assert!(
            err.starts_with(&format!(
                "{}:1:1: range(end=999999999) asks for 999999999 numbers; at most 100000",
                template.display()
            )),
            "{err}"
        );
    }
}
