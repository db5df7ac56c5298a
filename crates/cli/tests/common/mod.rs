//! Running the real `batchkit` binary, shared by the CLI test files.

// Each test file uses its own part of this module.
#![allow(dead_code)]

pub mod serve;

use std::io::Write;
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
