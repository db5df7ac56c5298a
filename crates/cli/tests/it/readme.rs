//! Every `console` block of the README is run, from a copy of the
//! repository's `testdata/`, and its output compared byte for byte, so the
//! README cannot drift from what batchkit prints.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One `$ command` and the lines shown after it.
struct Step {
    command: String,
    expected: String,
}

fn blocks(readme: &str) -> Vec<(usize, Vec<Step>)> {
    let mut out = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim() != "```console" {
            continue;
        }
        let mut steps: Vec<Step> = Vec::new();
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            match l.strip_prefix("$ ") {
                Some(cmd) => steps.push(Step {
                    command: cmd.to_owned(),
                    expected: String::new(),
                }),
                None => {
                    let step = steps
                        .last_mut()
                        .expect("a console block starts with a command");
                    step.expected.push_str(l);
                    step.expected.push('\n');
                }
            }
        }
        out.push((n + 1, steps));
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

#[test]
fn every_console_block_prints_what_the_readme_shows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let bin_dir: PathBuf = Path::new(env!("CARGO_BIN_EXE_batchkit"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let all = blocks(&readme);
    assert!(all.len() >= 5, "the README has its console blocks");
    for (line, steps) in all {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&root.join("testdata"), &dir.path().join("testdata"));
        let mut last_status = 0;
        for step in steps {
            let got = if step.command == "echo $?" {
                format!("{last_status}\n")
            } else {
                let out = Command::new("bash")
                    .arg("-c")
                    .arg(format!("{} 2>&1", step.command))
                    .current_dir(dir.path())
                    .env("PATH", &path)
                    .env("NO_COLOR", "1")
                    .env_remove("CLICOLOR_FORCE")
                    .output()
                    .unwrap();
                last_status = out.status.code().unwrap_or(-1);
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            assert!(
                got == step.expected,
                "README.md line {line}: `{}` printed\n{got}\nbut the README shows\n{}",
                step.command,
                step.expected
            );
        }
    }
}
