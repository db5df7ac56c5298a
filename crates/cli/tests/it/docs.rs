//! The examples of the README, `ARCHITECTURE.md`, `CONTRIBUTING.md` and
//! `docs/*.md` are run, so a page cannot drift from what batchkit prints:
//!
//! - every `console` block: each `$ command` runs (with bash, from a copy of
//!   the repository's `testdata/`) and its output is compared byte for byte
//!   with the lines after it;
//! - every `json` block: the comment before it, `<!-- output of: COMMAND
//!   -->`, names the command that prints it; the command runs and the two
//!   are compared as JSON values (so the page may indent it);
//! - every `python` block: the comment before it, `<!-- python: against
//!   serve -->`, says it talks to a `batchkit serve`; one is started, the
//!   snippet runs with the official `openai` SDK in a folder holding
//!   `requests.jsonl`, and must exit 0. `<!-- python: with the package -->`
//!   says it uses the Python package: it runs with the wheel installed, in
//!   a folder holding `requests.jsonl`, `output.jsonl` and `errors.jsonl`
//!   (a batch's files), and must exit 0.
//!
//! The `batchkit` command lines of the other blocks (`sh`, `yaml`), which
//! need files or services that are not here, are parsed by the real
//! argument parser instead (`cli::tests::every_command_in_the_docs_parses`).
//!
//! A hand-written runner, not `trycmd` (which clap uses): the examples are
//! shell (pipes into `jq` and `sed`, `echo $?`, `gunzip -c`), run in a
//! sandbox holding `testdata/`, and a JSON sample is compared as a value;
//! `trycmd` runs one binary's argument lists and compares text.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use common::serve::Serve;

/// One fenced block of a page.
struct Block {
    page: String,
    /// 1-based line of the opening fence.
    line: usize,
    lang: String,
    /// The comment on the line before the fence (blank lines skipped).
    marker: Option<String>,
    body: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pages whose examples are run.
fn pages() -> Vec<PathBuf> {
    let root = root();
    let mut pages: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "CONTRIBUTING.md"]
        .iter()
        .map(|p| root.join(p))
        .collect();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn blocks() -> Vec<Block> {
    let root = root();
    let mut out = Vec::new();
    for path in pages() {
        let text = std::fs::read_to_string(&path).unwrap();
        let page = path.strip_prefix(&root).unwrap().display().to_string();
        let lines: Vec<&str> = text.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let Some(lang) = lines[i]
                .trim()
                .strip_prefix("```")
                .filter(|l| !l.is_empty())
            else {
                i += 1;
                continue;
            };
            let marker = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .and_then(|l| l.trim().strip_prefix("<!--"))
                .and_then(|l| l.strip_suffix("-->"))
                .map(|m| m.trim().to_owned());
            let start = i;
            let mut body = String::new();
            i += 1;
            while i < lines.len() && lines[i].trim() != "```" {
                body.push_str(lines[i]);
                body.push('\n');
                i += 1;
            }
            out.push(Block {
                page: page.clone(),
                line: start + 1,
                lang: lang.to_owned(),
                marker,
                body,
            });
            i += 1;
        }
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A folder holding a copy of `testdata/`, where examples run.
fn sandbox() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("testdata"), &dir.path().join("testdata"));
    dir
}

/// Run `command` with bash in `dir`, with the binary under test first on
/// the PATH; its stdout and stderr, in order, and its exit status.
fn shell(command: &str, dir: &Path, merge_stderr: bool) -> (String, i32) {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_batchkit")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = if merge_stderr {
        format!("{command} 2>&1")
    } else {
        command.to_owned()
    };
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env("NO_COLOR", "1")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn every_console_block_prints_what_the_page_shows() {
    let consoles: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.lang == "console")
        .collect();
    assert!(consoles.len() >= 6, "the pages have their console blocks");
    let mut wrong = Vec::new();
    for block in consoles {
        let dir = sandbox();
        let mut last_status = 0;
        let mut steps: Vec<(String, String)> = Vec::new();
        for l in block.body.lines() {
            match l.strip_prefix("$ ") {
                Some(cmd) => steps.push((cmd.to_owned(), String::new())),
                None => match steps.last_mut() {
                    Some((_, expected)) => {
                        expected.push_str(l);
                        expected.push('\n');
                    }
                    None => wrong.push(format!(
                        "{}:{}: a console block starts with `$ command`",
                        block.page, block.line
                    )),
                },
            }
        }
        for (command, expected) in steps {
            let got = if command == "echo $?" {
                format!("{last_status}\n")
            } else {
                let (out, status) = shell(&command, dir.path(), true);
                last_status = status;
                out
            };
            if got != expected {
                wrong.push(format!(
                    "{}:{}: `{command}` printed\n{got}\nbut the page shows\n{expected}",
                    block.page, block.line
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn every_json_sample_is_what_its_command_prints() {
    let samples: Vec<Block> = blocks().into_iter().filter(|b| b.lang == "json").collect();
    assert!(!samples.is_empty(), "the pages have their JSON samples");
    let mut wrong = Vec::new();
    for block in samples {
        let at = format!("{}:{}", block.page, block.line);
        let Some(command) = block
            .marker
            .as_deref()
            .and_then(|m| m.strip_prefix("output of:"))
        else {
            wrong.push(format!(
                "{at}: a JSON sample must follow `<!-- output of: COMMAND -->`"
            ));
            continue;
        };
        let shown: serde_json::Value = match serde_json::from_str(&block.body) {
            Ok(v) => v,
            Err(e) => {
                wrong.push(format!("{at}: the sample is not JSON: {e}"));
                continue;
            }
        };
        let dir = sandbox();
        let (out, _) = shell(command.trim(), dir.path(), false);
        match serde_json::from_str::<serde_json::Value>(&out) {
            Ok(got) if got == shown => {}
            Ok(got) => wrong.push(format!(
                "{at}: `{}` prints\n{}\nbut the page shows\n{}",
                command.trim(),
                serde_json::to_string_pretty(&got).unwrap(),
                serde_json::to_string_pretty(&shown).unwrap()
            )),
            Err(e) => wrong.push(format!(
                "{at}: `{}` did not print one JSON value ({e}):\n{out}",
                command.trim()
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn every_python_snippet_runs_against_batchkit_serve_or_with_the_package() {
    let snippets: Vec<Block> = blocks()
        .into_iter()
        .filter(|b| b.lang == "python")
        .collect();
    assert!(!snippets.is_empty(), "the pages have their Python snippets");
    for block in snippets {
        let at = format!("{}:{}", block.page, block.line);
        if block.marker.as_deref() == Some("python: with the package") {
            let dir = sandbox();
            for (from, to) in [
                ("requests.jsonl", "requests.jsonl"),
                ("round1.output.jsonl", "output.jsonl"),
                ("round1.errors.jsonl", "errors.jsonl"),
            ] {
                std::fs::copy(
                    dir.path().join("testdata/merge").join(from),
                    dir.path().join(to),
                )
                .unwrap();
            }
            run_snippet(&at, &crate::python::wheel_python(), dir.path(), &block.body);
            continue;
        }
        assert_eq!(
            block.marker.as_deref(),
            Some("python: against serve"),
            "{at}: a Python snippet must follow `<!-- python: against serve -->` or `<!-- python: with the package -->`"
        );
        const ADDRESS: &str = "http://127.0.0.1:8090/v1";
        assert!(
            block.body.contains(ADDRESS),
            "{at}: the snippet talks to {ADDRESS}, which the test replaces"
        );
        let dir = sandbox();
        let serve = Serve::start(&dir.path().join("data"), &[]);
        std::fs::copy(
            dir.path().join("testdata/example.jsonl"),
            dir.path().join("requests.jsonl"),
        )
        .unwrap();
        let body = block.body.replace(ADDRESS, &serve.url("/v1"));
        run_snippet(&at, &common::sdk_python(), dir.path(), &body);
    }
}

/// Run a page's Python snippet `body` (found at `at`) with `python` in
/// `dir`; it must exit 0.
fn run_snippet(at: &str, python: &Path, dir: &Path, body: &str) {
    let script = dir.join("snippet.py");
    std::fs::write(&script, body).unwrap();
    let out = Command::new(python)
        .arg(&script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{at}: the snippet failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
