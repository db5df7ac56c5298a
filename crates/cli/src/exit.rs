//! Exit statuses, as documented in `--help`.

use std::sync::atomic::{AtomicU8, Ordering};

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Success: the input is valid (warnings allowed).
    Ok = 0,
    /// The command ran, and the input has problems.
    Invalid = 1,
    /// A usage or I/O error: the command could not do its job.
    Error = 2,
    /// Interrupted (Ctrl-C) before the end; the work can be resumed (the
    /// shells' code for SIGINT, 128 + 2).
    Interrupted = 130,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// The worst verdict reached so far (see [`record`]).
static VERDICT: AtomicU8 = AtomicU8::new(Exit::Ok as u8);

/// Record a verdict as soon as it is known, before it is printed: if the
/// reader of stdout or stderr goes away (`batchkit validate f | head -1`),
/// the process still exits with it, and a rejection never becomes a pass.
pub fn record(e: Exit) {
    VERDICT.fetch_max(e as u8, Ordering::Relaxed);
}

/// The worst verdict recorded.
pub fn recorded() -> Exit {
    match VERDICT.load(Ordering::Relaxed) {
        0 => Exit::Ok,
        1 => Exit::Invalid,
        130 => Exit::Interrupted,
        _ => Exit::Error,
    }
}
