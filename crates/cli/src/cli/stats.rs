//! `batchkit stats`' arguments.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{Format, RuleArgs};
use crate::cmd::stats::{Options, Prices};

/// Arguments of `batchkit stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Request files, or `-` for standard input.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub rules: RuleArgs,

    /// Most estimated input tokens per chunk, for the chunk count (not the
    /// body's `max_tokens`).
    #[arg(long = "max-chunk-tokens", alias = "max-tokens", value_name = "N")]
    pub max_tokens: Option<u64>,

    /// Tokenize with this encoding whatever the model: o200k_base, cl100k_base.
    #[arg(long, value_name = "NAME")]
    pub encoding: Option<batchkit_core::tokens::Encoding>,

    /// Price of input tokens, USD per million (your batch price).
    #[arg(long, value_name = "USD")]
    pub price_input: Option<f64>,

    /// Price of output tokens, USD per million (your batch price).
    #[arg(long, value_name = "USD")]
    pub price_output: Option<f64>,

    /// One model's prices, input/output USD per million tokens (repeat for
    /// several models; --price-input/--price-output cover the rest).
    #[arg(long, value_name = "MODEL=IN/OUT", value_parser = parse_price)]
    pub price: Vec<(String, f64, f64)>,

    /// human: the report for people, on stdout; json: the same as one
    /// object per file, on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

impl StatsArgs {
    /// The options of the report.
    pub fn options(&self) -> Options {
        Options {
            files: self.files.clone(),
            config: self
                .rules
                .to_split_config(self.max_tokens, self.encoding, true),
            prices: Prices {
                input: self.price_input,
                output: self.price_output,
                per_model: self.price.clone(),
            },
            format: self.format.into(),
        }
    }
}

fn parse_price(s: &str) -> anyhow::Result<(String, f64, f64)> {
    let bad = || {
        format!(
            "'{s}' is not MODEL=INPUT/OUTPUT (USD per million tokens, e.g. gpt-4o-mini=0.075/0.30)"
        )
    };
    let (model, prices) = s.rsplit_once('=').with_context(bad)?;
    let (input, output) = prices.split_once('/').with_context(bad)?;
    let number = |v: &str| {
        v.trim()
            .parse::<f64>()
            .ok()
            .filter(|p| p.is_finite() && *p >= 0.0)
    };
    match (number(input), number(output)) {
        (Some(i), Some(o)) if !model.is_empty() => Ok((model.to_owned(), i, o)),
        _ => anyhow::bail!(bad()),
    }
}
