//! `batchkit split`'s arguments.

use std::path::PathBuf;

use clap::Args;

use super::{Format, RuleArgs, ShownArgs, TokenArgs, at_most};
use crate::cmd::split::Options;

/// Arguments of `batchkit split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The request file, or `-` for standard input.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Where to write the chunks and manifest.json.
    #[arg(long, value_name = "DIR", required_unless_present = "dry_run")]
    pub out_dir: Option<PathBuf>,

    #[command(flatten)]
    pub rules: RuleArgs,

    #[command(flatten)]
    pub tokens: TokenArgs,

    /// Write invalid lines to <out-dir>/rejects/<stem>.rejects.jsonl instead
    /// of refusing.
    #[arg(long)]
    pub skip_invalid: bool,

    /// Print the plan; write nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Write into --out-dir even if it holds files an earlier split did not
    /// write (they are left alone).
    #[arg(long)]
    pub force: bool,

    /// Write chunks through the page cache instead of straight to disk
    /// (direct I/O, the default where the file system supports it). May
    /// return sooner on slow disks, at the cost of memory.
    #[arg(long)]
    pub buffered: bool,

    #[command(flatten)]
    pub shown: ShownArgs,

    /// human: the chunks written, on stderr; json: the manifest, on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

impl SplitArgs {
    /// The options of the split.
    pub fn options(&self) -> Options {
        Options {
            file: self.file.clone(),
            out_dir: self.out_dir.clone(),
            config: self.tokens.split_config(&self.rules, false),
            skip_invalid: self.skip_invalid,
            dry_run: self.dry_run,
            force: self.force,
            direct: !self.buffered,
            keep: at_most(self.shown.max_errors),
            max_per_code: self.shown.max_per_code,
            format: self.format.into(),
        }
    }
}
