//! Exit statuses, as documented in `--help`.

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Success: the input is valid (warnings allowed).
    Ok = 0,
    /// The command ran, and the input has problems.
    Invalid = 1,
    /// A usage or I/O error: the command could not do its job.
    Error = 2,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
