//! The Python package (`crates/python`): its wheel installed in a clean
//! virtual environment, and its pytest suite run there, with the
//! cargo-built binary to compare the wheel's `batchkit` command with.
//!
//! `.ci/run` builds the wheel and installs it (`BATCHKIT_TEST_WHEEL_PYTHON`
//! names that environment's Python, `BATCHKIT_TEST_WHEEL_TARGET` the cargo
//! target folder it was built in); without them, the test builds the
//! wheel itself with maturin under `target/wheel-test/` (its own cargo
//! target folder: this cargo's is locked while the tests run). The
//! pre-commit test builds the package from source once more, in the same
//! target folder, so that only batchkit's own crates are compiled again.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Run `cmd`, failing the test with its output if it fails.
fn check(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Where the wheel's crates are compiled.
fn wheel_target() -> PathBuf {
    std::env::var_os("BATCHKIT_TEST_WHEEL_TARGET")
        .map_or_else(|| root().join("target/wheel-test/target"), PathBuf::from)
}

/// A Python with the wheel, pytest and pre-commit installed (made once
/// per test run).
pub fn wheel_python() -> PathBuf {
    static MADE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MADE.get_or_init(make_wheel_python).clone()
}

fn make_wheel_python() -> PathBuf {
    if let Some(p) = std::env::var_os("BATCHKIT_TEST_WHEEL_PYTHON") {
        return p.into();
    }
    let dir = root().join("target/wheel-test");
    let tools = dir.join("tools");
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    if !tools.join("bin/maturin").exists() {
        check(
            Command::new("python3").args(["-m", "venv"]).arg(&tools),
            "python3 -m venv",
        );
        check(
            Command::new(tools.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "maturin>=1.9,<2",
            ]),
            "pip install maturin",
        );
    }
    // Built every time: maturin (cargo) rebuilds only what changed.
    let dist = dir.join("dist");
    let _ = std::fs::remove_dir_all(&dist);
    check(
        Command::new(tools.join("bin/maturin"))
            .args(["build", "--out"])
            .arg(&dist)
            .current_dir(root())
            .env("CARGO_TARGET_DIR", wheel_target()),
        "maturin build",
    );
    if !python.exists() {
        check(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv",
        );
    }
    if !venv.join("bin/pre-commit").exists() {
        check(
            Command::new(venv.join("bin/pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "pytest",
                "pre-commit",
            ]),
            "pip install pytest pre-commit",
        );
    }
    let wheel = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .expect("maturin wrote no wheel");
    check(
        Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--force-reinstall",
                "--no-deps",
            ])
            .arg(&wheel),
        "pip install the wheel",
    );
    python
}

/// The pytest suite of the Python package passes against its installed
/// wheel: the command's output equals the cargo-built binary's on every
/// shipped test file, and the API's validate, stats, split, merge (streamed),
/// merge_to and retry do what the commands do, with the GIL released; the
/// pre-commit hook installs the package and validates.
#[test]
fn the_python_package_passes_its_pytest_suite() {
    let python = wheel_python();
    let out = Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root().join("crates/python/tests"))
        .env("BATCHKIT_BIN", env!("CARGO_BIN_EXE_batchkit"))
        .env("BATCHKIT_TESTDATA", root().join("testdata"))
        .env("CARGO_TARGET_DIR", wheel_target())
        .current_dir(root())
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    eprintln!("pytest: {last}");
    assert!(
        last.contains(" passed") && !last.contains("skipped"),
        "{last}"
    );
}
