//! Running the real `batchkit` binary, shared by the CLI test files.

// Each test file uses its own part of this module.
#![allow(dead_code)]

pub mod serve;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The binary, with the colour switches of the caller's environment removed.
pub fn batchkit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_batchkit"));
    cmd.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
    cmd
}

/// Run `batchkit args`.
pub fn run(args: &[&str]) -> Output {
    batchkit().args(args).output().expect("run batchkit")
}

/// Run `batchkit args` with `input` on its stdin (written from another
/// thread, so that a large input cannot block on a full pipe).
pub fn run_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = batchkit()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn batchkit");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer thread");
    out
}

/// What the run printed on stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert that the run exited 0, showing what it printed on stderr if not
/// (a full disk, say, is then named in the failure, not only "2 != 0").
#[track_caller]
pub fn succeeded(o: &Output) {
    assert_eq!(
        o.status.code(),
        Some(0),
        "batchkit failed; its stderr:\n{}",
        stderr(o)
    );
}

/// Run `batchkit args` to the end once to learn how long it takes, then
/// again once per fraction in `fractions`, killed with SIGKILL after that
/// fraction of the full run's time; `check` looks at what each killed run
/// left (it gets the fraction). `prepare` runs before every start. Kill
/// points come from the measured duration, not fixed sleeps, so they land
/// inside the run on a fast machine and a slow one alike.
pub fn kill_at_fractions(
    args: &[&str],
    fractions: &[f64],
    mut prepare: impl FnMut(),
    mut check: impl FnMut(f64),
) -> std::time::Duration {
    prepare();
    let started = std::time::Instant::now();
    let o = run(args);
    let full = started.elapsed();
    assert!(o.status.success(), "the full run failed: {}", stderr(&o));
    for &f in fractions {
        prepare();
        let mut child = batchkit()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn batchkit");
        std::thread::sleep(full.mul_f64(f));
        // It may have finished already; then its result is what is checked.
        let _ = child.kill();
        let _ = child.wait();
        check(f);
    }
    full
}

/// The names in `dir`, sorted.
pub fn names(dir: &std::path::Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .expect("list a folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// A small tmpfs mounted on a new folder for as long as it lives, to fill
/// (needs root; `None` where mounting is not allowed, and the caller says
/// the test was not run).
pub struct SmallDisk {
    pub path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { path, _dir: dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The `node_modules` that has the `openai` Node SDK:
/// `BATCHKIT_TEST_NODE_MODULES`, or `target/sdk-node/node_modules`
/// installed (once) with npm from `tests/sdk/package.json`.
pub fn sdk_node_modules() -> PathBuf {
    if let Some(p) = std::env::var_os("BATCHKIT_TEST_NODE_MODULES") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let prefix = root.join("target/sdk-node");
    let modules = prefix.join("node_modules");
    if !modules.join("openai/package.json").exists() {
        let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/package.json");
        let made = std::fs::create_dir_all(&prefix).is_ok()
            && std::fs::copy(&package, prefix.join("package.json")).is_ok()
            && Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&prefix)
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            made,
            "cannot set up the openai Node SDK in {}: run `mkdir -p target/sdk-node && cp crates/cli/tests/sdk/package.json target/sdk-node/ && npm install --prefix target/sdk-node`, or set BATCHKIT_TEST_NODE_MODULES",
            prefix.display()
        );
    }
    modules
}

/// The Python that has the `openai` SDK: `BATCHKIT_TEST_PYTHON`, or a venv
/// under `target/` made (once) from `tests/sdk/requirements.txt`.
pub fn sdk_python() -> PathBuf {
    if let Some(p) = std::env::var_os("BATCHKIT_TEST_PYTHON") {
        return p.into();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let venv = root.join("target/sdk-venv");
    let python = venv.join("bin/python");
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/requirements.txt");
    let ready = Command::new(&python)
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        let made = Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&python)
                .args(["-m", "pip", "install", "-q", "-r"])
                .arg(&requirements)
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            made,
            "cannot set up the openai SDK in {}: run `python3 -m venv target/sdk-venv && target/sdk-venv/bin/pip install -r crates/cli/tests/sdk/requirements.txt`, or set BATCHKIT_TEST_PYTHON",
            venv.display()
        );
    }
    python
}
