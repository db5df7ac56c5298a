//! `batchkit validate`'s arguments.

use std::path::PathBuf;

use clap::Args;

use super::{Format, RuleArgs, ShownArgs, at_most};
use crate::cmd::validate::Options;

/// Arguments of `batchkit validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Request files (`.jsonl`, `.jsonl.gz`), or `-` for standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub rules: RuleArgs,

    #[command(flatten)]
    pub shown: ShownArgs,

    /// human: diagnostics and a summary for people, on stderr; json: one
    /// object per file on stdout, in the Batch API's `errors` shape.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Print only the diagnostics, without the summary.
    #[arg(long, short)]
    pub quiet: bool,

    /// Fail (exit 1) on warnings too: a request that will fail when it
    /// runs, a blank line, a file name other than `*.jsonl`.
    #[arg(long)]
    pub strict: bool,
}

impl ValidateArgs {
    /// The options of the validation.
    pub fn options(&self) -> Options {
        let mut config = self.rules.to_config();
        config.keep = at_most(self.shown.max_errors);
        Options {
            files: self.files.clone(),
            config,
            format: self.format.into(),
            max_per_code: self.shown.max_per_code,
            quiet: self.quiet,
            strict: self.strict,
        }
    }
}
