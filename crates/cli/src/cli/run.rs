//! `batchkit run`'s arguments.

use std::path::PathBuf;

use clap::Args;

use super::service::ConnArgs;
use super::{RuleArgs, TokenArgs, parse_pair, poll_every};
use crate::cmd::run::Options;

/// Arguments of `batchkit run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The request file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Where to write the merged results (merge's line format).
    #[arg(long, short = 'o', value_name = "MERGED")]
    pub output: PathBuf,

    #[command(flatten)]
    pub rules: RuleArgs,

    #[command(flatten)]
    pub tokens: TokenArgs,

    #[command(flatten)]
    pub conn: ConnArgs,

    /// The batches' completion window.
    #[arg(long, default_value = "24h", value_name = "WINDOW")]
    pub completion_window: String,

    /// A metadata pair for every batch (at most 14: batchkit adds two).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
    pub metadata: Vec<(String, String)>,

    /// Rounds in all: the first, and resubmissions of what can succeed.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_rounds: u32,

    /// Print the plan and the token estimate; send nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// With --dry-run: price of input tokens, USD per million (your batch
    /// price).
    #[arg(long, value_name = "USD")]
    pub price_input: Option<f64>,

    /// With --dry-run: price of output tokens, USD per million.
    #[arg(long, value_name = "USD")]
    pub price_output: Option<f64>,

    /// The state file [default: <MERGED>.run.json].
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,

    /// Once the merged results are written, delete the run's work folder
    /// (its chunks and downloaded results) and its state file.
    #[arg(long)]
    pub clean: bool,

    /// On Ctrl-C, leave the batches running without asking.
    #[arg(long)]
    pub yes: bool,

    /// Seconds between polls of the batches.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub poll_interval: f64,
}

impl RunArgs {
    /// The options of the run.
    pub fn options(&self) -> anyhow::Result<Options> {
        Ok(Options {
            file: self.file.clone(),
            output: self.output.clone(),
            config: self.tokens.split_config(&self.rules, self.dry_run),
            // vLLM's Batch API is the `batchkit serve` in front of it.
            client: self
                .conn
                .to_config(self.rules.provider)
                .map_err(|e| e.to_string()),
            completion_window: self.completion_window.clone(),
            metadata: self.metadata.clone(),
            max_rounds: self.max_rounds,
            dry_run: self.dry_run,
            prices: (self.price_input, self.price_output),
            state: self.state.clone(),
            clean: self.clean,
            yes: self.yes,
            every: poll_every(self.poll_interval),
        })
    }
}
