//! The arguments of `batchkit merge` and `batchkit retry`, which both join
//! result files to request files.

use std::path::PathBuf;

use anyhow::Context;
use batchkit_core::Provider;
use batchkit_core::merge::MergeConfig;
use batchkit_core::results::Status;
use clap::{Args, ValueEnum};

use super::Format;
use crate::cmd::{join, merge, retry};

/// Request and result files to join.
#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Request files, in order (several after one --input, or --input
    /// again); the result files come after them.
    #[arg(long = "input", short = 'i', required_unless_present = "manifest", value_name = "REQUESTS", num_args = 1..)]
    pub inputs: Vec<PathBuf>,

    /// The manifest.json of a split: its chunks are the request files, in
    /// order, and merged lines give the line in the file that was split
    /// (`line`) and the chunk (`chunk`).
    #[arg(long, value_name = "MANIFEST", conflicts_with = "inputs")]
    pub manifest: Option<PathBuf>,

    /// Output and error files, in any order (an empty file is fine).
    #[arg(value_name = "RESULT_FILE")]
    pub results: Vec<PathBuf>,

    /// Where to write (`-` for stdout); written atomically.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,

    /// Which of two different successful results for one request to keep.
    #[arg(long, value_enum, default_value_t = Prefer::First)]
    pub prefer: Prefer,

    /// Print at most N problems (all are counted); 0 prints all.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub max_problems: usize,

    /// human: the summary on stderr; json: the summary as one object on
    /// stdout (when -o is a file).
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Sync outputs to disk before renaming them into place, so they also
    /// survive a power cut (slower on large outputs).
    #[arg(long)]
    pub fsync: bool,
}

/// Which result wins a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Prefer {
    /// The first, in the order the files were given.
    First,
    /// The last.
    Last,
}

impl JoinArgs {
    fn options(&self) -> join::Options {
        join::Options {
            inputs: self.inputs.clone(),
            manifest: self.manifest.clone(),
            results: self.results.clone(),
            output: self.output.clone(),
            config: MergeConfig {
                prefer_last: self.prefer == Prefer::Last,
                keep: super::at_most(self.max_problems).unwrap_or(usize::MAX),
            },
            format: self.format.into(),
            fsync: self.fsync,
        }
    }
}

/// Arguments of `batchkit merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    #[command(flatten)]
    pub join: JoinArgs,

    /// Add the request body to each merged line (`"request"`).
    #[arg(long)]
    pub with_request: bool,

    /// Add the answer text (`"text"`): chat message content, completion
    /// text, Responses output text.
    #[arg(long)]
    pub text: bool,

    /// Write result lines whose custom_id is in no request file here.
    #[arg(long, value_name = "FILE")]
    pub unknown: Option<PathBuf>,
}

impl MergeArgs {
    /// The options of the merge.
    pub fn options(&self) -> merge::Options {
        merge::Options {
            join: self.join.options(),
            with_request: self.with_request,
            text: self.text,
            unknown: self.unknown.clone(),
        }
    }
}

/// Arguments of `batchkit retry`.
#[derive(Debug, Args)]
pub struct RetryArgs {
    #[command(flatten)]
    pub join: JoinArgs,

    /// Retry the requests of these statuses (failed, expired, cancelled,
    /// missing) [default: what can succeed when sent again: expired,
    /// cancelled, missing, and failures with 408/409/429/5xx, status 0 or no
    /// response].
    #[arg(long, value_delimiter = ',', value_name = "STATUS", value_parser = parse_status)]
    pub status: Vec<Status>,

    /// Retry only requests whose error code is one of these (with no
    /// --status: among every request that did not succeed).
    #[arg(long, value_delimiter = ',', value_name = "CODE")]
    pub code: Vec<String>,

    /// Whose batch rules the retry file must meet (one endpoint, one model
    /// for openai and azure, the request and size limits): when the
    /// requests do not fit one batch, they are written as one file per
    /// batch into a directory named after -o, with a manifest.
    #[arg(long, value_name = "NAME", default_value = "openai")]
    pub provider: Provider,
}

impl RetryArgs {
    /// The options of the retry.
    pub fn options(&self) -> retry::Options {
        retry::Options {
            join: self.join.options(),
            status: self.status.clone(),
            code: self.code.clone(),
            provider: self.provider,
        }
    }
}

fn parse_status(s: &str) -> anyhow::Result<Status> {
    Status::parse(s).with_context(|| {
        format!("unknown status '{s}' (use succeeded, failed, expired, cancelled, missing)")
    })
}
