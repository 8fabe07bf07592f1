//! Bad input of every kind gets an exact, positioned error; nothing panics and nothing
//! on disk is touched. Each case is a TaskBook (or a command line) with the first line
//! of the error weft must print and its exit status.

mod common;

use common::{run_local, snapshot, stderr};

struct Case {
    name: &'static str,
    book: &'static str,
    /// The first line weft prints on stderr; `{dir}` stands for the scratch folder.
    error: &'static str,
    hint: Option<&'static str>,
    exit: i32,
}

/// A book whose tasks are `tasks`, indented under the header's `tasks:`.
macro_rules! tasks {
    ($tasks:expr) => {
        concat!(
            "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: bad}\nspec:\n  steps:\n    - name: s\n      tasks:\n",
            $tasks
        )
    };
}

const CASES: &[Case] = &[
    Case {
        name: "yaml syntax: unclosed flow sequence",
        book: "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: bad}\nspec:\n  vars: {users: [a, b}\n",
        error: "{dir}/book.yml:5:22: YAML syntax error: while parsing a flow sequence, expected ',' or ']'",
        hint: Some("check the indentation and quoting around this position"),
        exit: 1,
    },
    Case {
        name: "yaml syntax: tab indentation",
        book: "apiVersion: weft/v1\nkind: TaskBook\nmetadata:\n\tname: bad\n",
        error: "{dir}/book.yml:4:2: YAML syntax error: tabs disallowed within this context (block indentation)",
        hint: Some("check the indentation and quoting around this position"),
        exit: 1,
    },
    Case {
        name: "duplicate key",
        book: tasks!("        - name: a\n          name: b\n          ping:\n"),
        error: "{dir}/book.yml:9:11: duplicate key `name`",
        hint: Some("a key may appear only once in a mapping"),
        exit: 1,
    },
    Case {
        name: "document is a list",
        book: "- apiVersion: weft/v1\n",
        error: "{dir}/book.yml:1:1: expected a weft object (a mapping with apiVersion, kind, metadata, spec), found a list",
        hint: Some("start the document with `apiVersion: weft/v1` and `kind: TaskBook`"),
        exit: 1,
    },
    Case {
        name: "wrong apiVersion",
        book: "apiVersion: v1\nkind: TaskBook\nmetadata: {name: bad}\n",
        error: "{dir}/book.yml:1:13: `apiVersion`: unsupported apiVersion `v1`",
        hint: Some("this weft reads `apiVersion: weft/v1`"),
        exit: 1,
    },
    Case {
        name: "unknown kind",
        book: "apiVersion: weft/v1\nkind: TaskBok\nmetadata: {name: bad}\n",
        error: "{dir}/book.yml:2:7: `kind`: unknown kind `TaskBok`",
        hint: Some("did you mean `TaskBook`?"),
        exit: 1,
    },
    Case {
        name: "unknown top-level key",
        book: "apiVersion: weft/v1\nkind: TaskBook\nmetdata: {name: bad}\n",
        error: "{dir}/book.yml:3:1: unknown key `metdata`",
        hint: Some("did you mean `metadata`?"),
        exit: 1,
    },
    Case {
        name: "missing metadata name",
        book: "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {labels: {a: b}}\nspec: {}\n",
        error: "{dir}/book.yml:3:11: `metadata`: missing required key `name`",
        hint: None,
        exit: 1,
    },
    Case {
        name: "invalid object name",
        book: "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: Web_Server!}\n",
        error: "{dir}/book.yml:3:18: `metadata.name`: `Web_Server!` is not a valid name: use 1 to 63 lowercase letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit",
        hint: None,
        exit: 1,
    },
    Case {
        name: "unknown step key",
        book: "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: bad}\nspec:\n  steps:\n    - name: s\n      taks: []\n",
        error: "{dir}/book.yml:7:7: `spec.steps[0]`: unknown key `taks`",
        hint: Some("did you mean `tasks`?"),
        exit: 1,
    },
    Case {
        name: "tasks is a mapping",
        book: "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: bad}\nspec:\n  steps:\n    - name: s\n      tasks: {ping: {}}\n",
        error: "{dir}/book.yml:7:14: `spec.steps[0].tasks`: expected a list, found a mapping",
        hint: None,
        exit: 1,
    },
    Case {
        name: "unknown module",
        book: tasks!("        - name: t\n          tempalte: {src: a, dest: b}\n"),
        error: "{dir}/book.yml:9:11: `spec.steps[0].tasks[0]`: no module `tempalte`: not built in and not found in /etc/weft/modules or /usr/local/share/weft/modules",
        hint: Some("did you mean `template`?"),
        exit: 1,
    },
    Case {
        name: "two modules in one task",
        book: tasks!("        - name: t\n          ping:\n          debug: {msg: hi}\n"),
        error: "{dir}/book.yml:10:11: `spec.steps[0].tasks[0]`: a task runs exactly one module, but this one has `ping` and `debug`",
        hint: None,
        exit: 1,
    },
    Case {
        name: "misspelled task keyword",
        book: tasks!("        - name: t\n          ping:\n          whne: true\n"),
        error: "{dir}/book.yml:10:11: `spec.steps[0].tasks[0]`: a task runs exactly one module, but this one has `ping` and `whne` (did you mean `when`?)",
        hint: None,
        exit: 1,
    },
    Case {
        name: "task without a module",
        book: tasks!("        - name: t\n          when: true\n"),
        error: "{dir}/book.yml:8:11: `spec.steps[0].tasks[0]`: this task names no module: add one such as `command: ...` or `copy: {...}`",
        hint: None,
        exit: 1,
    },
    Case {
        name: "ansible with_items",
        book: tasks!("        - debug: {msg: hi}\n          with_items: [a]\n"),
        error: "{dir}/book.yml:9:11: `spec.steps[0].tasks[0]`: unknown task key `with_items`: use `loop:` instead of `with_items:`",
        hint: None,
        exit: 1,
    },
    Case {
        name: "unknown module argument",
        book: tasks!("        - copy: {dset: /tmp/x, content: hi}\n"),
        error: "{dir}/book.yml:8:18: `spec.steps[0].tasks[0].copy`: unknown key `dset`",
        hint: Some("did you mean `dest`?"),
        exit: 1,
    },
    Case {
        name: "missing module argument",
        book: tasks!("        - copy: {content: hi}\n"),
        error: "{dir}/book.yml:8:17: `spec.steps[0].tasks[0].copy`: missing required key `dest`",
        hint: None,
        exit: 1,
    },
    Case {
        name: "wrong enum value",
        book: tasks!("        - file: {path: /tmp/x, state: directroy}\n"),
        error: "{dir}/book.yml:8:39: `spec.steps[0].tasks[0].file.state`: unknown value `directroy`",
        hint: Some("did you mean `directory`?"),
        exit: 1,
    },
    Case {
        name: "wrong type for retries",
        book: tasks!("        - ping:\n          retries: many\n"),
        error: "{dir}/book.yml:9:20: `spec.steps[0].tasks[0].retries`: expected a whole number, 0 or more, found the string \"many\"",
        hint: None,
        exit: 1,
    },
    Case {
        name: "bad duration",
        book: tasks!("        - ping:\n          delay: 5 minutes\n"),
        error: "{dir}/book.yml:9:18: `spec.steps[0].tasks[0].delay`: `5 minutes` has an unknown unit `minutes` (use ms, s, m, h or d)",
        hint: None,
        exit: 1,
    },
    Case {
        name: "notify names no handler",
        book: tasks!("        - ping:\n          notify: reload ngnix\n      handlers:\n        - name: reload nginx\n          ping:\n"),
        error: "{dir}/book.yml:9:19: `spec.steps[0].tasks[0].notify`: `notify` names `reload ngnix`, but this step has no handler of that name",
        hint: Some("did you mean `reload nginx`?"),
        exit: 1,
    },
    Case {
        name: "register is not a name",
        book: tasks!("        - ping:\n          register: 2fast\n"),
        error: "{dir}/book.yml:9:21: `spec.steps[0].tasks[0].register`: `2fast` cannot be a variable name: use letters, digits and `_`, not starting with a digit",
        hint: None,
        exit: 1,
    },
    Case {
        name: "bad tera in arguments",
        book: tasks!("        - debug: {msg: \"port {{ port + }}\"}\n"),
        error: "{dir}/book.yml:8:40: `spec.steps[0].tasks[0].debug`: template syntax error: expected an integer, a float, `true` or `false`, an identifier (must start with a-z), a square bracketed identifier (identifiers separated by `.` or `[]`s), or an expression",
        hint: Some("Tera syntax: `{{ var }}`, `{% if x %}...{% endif %}`, filters as `x | upper`"),
        exit: 1,
    },
    Case {
        name: "bad tera in when",
        book: tasks!("        - ping:\n          when: facts.os.family ==\n"),
        error: "{dir}/book.yml:9:36: `spec.steps[0].tasks[0].when`: template syntax error: expected an expression or a string or a concatenation of strings",
        hint: Some("Tera syntax: `{{ var }}`, `{% if x %}...{% endif %}`, filters as `x | upper`"),
        exit: 1,
    },
    Case {
        name: "bad batch size",
        book: "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: bad}\nspec:\n  steps:\n    - rollout: {batch: 0}\n      tasks: []\n",
        error: "{dir}/book.yml:6:24: `spec.steps[0].rollout.batch`: `0` is not a batch size: use a positive number or a percentage like \"25%\"",
        hint: None,
        exit: 1,
    },
    Case {
        name: "template src missing",
        book: tasks!("        - template: {src: nowhere.tera, dest: /tmp/x}\n"),
        error: "{dir}/book.yml:8:27: `spec.steps[0].tasks[0].template.src`: `src` nowhere.tera not found; looked for {dir}/nowhere.tera, {dir}/templates/nowhere.tera, {dir}/files/nowhere.tera",
        hint: None,
        exit: 1,
    },
    Case {
        name: "alias bomb",
        book: "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
        error: "{dir}/book.yml:6:5: the document has more than 200000 values (after expanding aliases)",
        hint: Some("this limit protects the master and nodes from runaway input"),
        exit: 1,
    },
    Case {
        name: "two taskbooks in one file",
        book: "apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: a}\n---\napiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: b}\n",
        error: "{dir}/book.yml: the file holds 2 TaskBooks (a, b); weft runs one TaskBook per file",
        hint: Some("put each TaskBook in its own file, and use `include` to combine them"),
        exit: 1,
    },
    Case {
        name: "undefined variable",
        book: tasks!("        - copy: {content: \"{{ prot }}\", dest: \"{dir}/out\"}\n"),
        error: "{dir}/book.yml:8:27: `copy.content`: undefined variable `prot`",
        hint: Some("define it in `vars`, pass it with `-e`, or test it with `is defined`"),
        exit: 2,
    },
    Case {
        name: "when is not boolean",
        book: tasks!("        - copy: {dest: \"{dir}/out\", content: x}\n          when: \"'yes'\"\n"),
        error: "{dir}/book.yml:9:17: `when`: the condition `'yes'` must be true or false, but it gave a string (\"yes\")",
        hint: Some("compare explicitly, e.g. `x | length > 0`, `x is defined`, or `x == \"yes\"`"),
        exit: 2,
    },
    Case {
        name: "loop over a string",
        book: tasks!("        - copy: {dest: \"{dir}/{{ item }}\", content: x}\n          loop: \"{{ 'abc' }}\"\n"),
        error: "{dir}/book.yml:9:17: `loop`: expected a list to loop over, found a string (\"abc\")",
        hint: Some("loop over a list: `loop: [a, b]` or `loop: \"{{ users }}\"`"),
        exit: 2,
    },
];

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

#[test]
fn malformed_taskbooks_get_exact_errors_and_touch_nothing() {
    assert!(CASES.len() >= 25);
    let mut failures = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let dir_text = dir.path().display().to_string();
        let book = dir.path().join("book.yml");
        std::fs::write(&book, case.book.replace("{dir}", &dir_text)).unwrap();
        let before = snapshot(dir.path());

        let output = run_local(&book, &[]);
        let err = stderr(&output).replace(&dir_text, "{dir}");
        let expected_exit = Some(case.exit);
        let expected_first = format!("error: {}", case.error);
        let line_matches = if case.exit == 2 {
            // Task failures print on stdout with the run; the error text is in the task line.
            common::stdout(&output)
                .replace(&dir_text, "{dir}")
                .contains(case.error)
        } else {
            first_line(&err) == expected_first
        };
        if output.status.code() != expected_exit || !line_matches {
            failures.push(format!(
                "{}: exit {:?} (want {expected_exit:?})\n  stderr: {err}\n  stdout: {}",
                case.name,
                output.status.code(),
                common::stdout(&output).replace(&dir_text, "{dir}")
            ));
        }
        if let Some(hint) = case.hint {
            let all = format!("{err}{}", common::stdout(&output));
            if !all.contains(&format!("hint: {hint}")) {
                failures.push(format!("{}: no hint `{hint}` in:\n{all}", case.name));
            }
        }
        assert_ne!(
            output.status.code(),
            Some(101),
            "{} panicked: {err}",
            case.name
        );
        assert_eq!(
            snapshot(dir.path()),
            before,
            "{} touched the disk",
            case.name
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Bad input that is not a TaskBook's content: paths, sizes, encodings, `-e`.
#[test]
fn malformed_command_lines_get_exact_errors() {
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    let ok_book = dir.path().join("ok.yml");
    std::fs::write(&ok_book, tasks!("        - ping:\n")).unwrap();
    let huge = dir.path().join("huge.yml");
    std::fs::write(&huge, "#".repeat(5 * 1024 * 1024)).unwrap();
    let latin1 = dir.path().join("latin1.yml");
    std::fs::write(
        &latin1,
        b"apiVersion: weft/v1\nkind: TaskBook\nmetadata: {name: caf\xe9}\n",
    )
    .unwrap();
    let before = snapshot(dir.path());

    let cases: Vec<(&str, std::path::PathBuf, Vec<&str>, &str)> = vec![
        ("a directory", dir.path().to_path_buf(), vec![], "{dir}: expected a YAML file, found a directory"),
        ("a missing file", dir.path().join("nope.yml"), vec![], "{dir}/nope.yml: cannot read the file: No such file or directory (os error 2)"),
        ("a huge file", huge.clone(), vec![], "{dir}/huge.yml: the file is 5242880 bytes; weft reads YAML files of at most 4194304 bytes"),
        ("not UTF-8", latin1.clone(), vec![], "{dir}/latin1.yml:3:21: the file is not UTF-8 text"),
        ("-e without =", ok_book.clone(), vec!["-e", "novalue"], "`-e novalue`: `novalue` is not KEY=VALUE"),
        ("-e @missing", ok_book.clone(), vec!["-e", "@/nonexistent/vars.yml"], "/nonexistent/vars.yml: cannot read the file: No such file or directory (os error 2)"),
    ];
    let mut failures = Vec::new();
    for (name, file, args, expected) in cases {
        let output = run_local(&file, &args);
        let err = stderr(&output).replace(&dir_text, "{dir}");
        if output.status.code() != Some(1) || first_line(&err) != format!("error: {expected}") {
            failures.push(format!("{name}: exit {:?}\n  {err}", output.status.code()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(snapshot(dir.path()), before);

    // Without --local a run goes to the master: with no credentials, a usage error that
    // says where they come from, not a silent no-op.
    let output = common::weft()
        .args(["run", "taskbook"])
        .arg(&ok_book)
        .env("HOME", dir.path())
        .env_remove("WEFT_CONFIG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(
        err.contains("no admin credentials at") && err.contains("--local"),
        "{err}"
    );
}
