//! The options every command that reads request files shares: whose rules
//! apply, and how tokens are estimated.

use batchkit_core::split::SplitConfig;
use batchkit_core::tokens::{Encoding, TokenCounter};
use batchkit_core::{Config, Provider};
use clap::Args;

use super::parse_size;

/// The rules and limits a batch is checked against.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Whose rules apply: openai (OpenAI's batch guide and API reference),
    /// azure (Azure OpenAI global batch), groq, together, mistral (their
    /// batch docs), vllm (`vllm run-batch`: each line runs by its own url,
    /// and what fails only one request is a warning). See docs/rules.md.
    #[arg(long, default_value = "openai", value_name = "NAME")]
    pub provider: Provider,

    /// The batch endpoint (default: the first line's `url`; for together and
    /// mistral, whose lines have no url, the provider's chat endpoint).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,

    /// Most requests in one batch (0: no limit) [default: the provider's].
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,

    /// Largest file, e.g. 209715200, 200MiB, 100MB (0: no limit)
    /// [default: the provider's].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_bytes: Option<u64>,

    /// Most embedding inputs in one batch (0: no limit) [default: the provider's].
    #[arg(long, value_name = "N")]
    pub max_embedding_inputs: Option<u64>,
}

impl RuleArgs {
    /// The split config for these rules.
    pub fn to_split_config(
        &self,
        max_tokens: Option<u64>,
        encoding: Option<Encoding>,
        count_tokens: bool,
    ) -> SplitConfig {
        let cfg = self.to_config();
        SplitConfig {
            limits: cfg.limits,
            profile: cfg.profile,
            max_tokens,
            endpoint: self.endpoint.clone(),
            tokens: TokenCounter { forced: encoding },
            count_tokens: count_tokens || max_tokens.is_some(),
        }
    }

    /// The core's config for these rules.
    pub fn to_config(&self) -> Config {
        let mut cfg = Config::new(self.provider);
        cfg.endpoint.clone_from(&self.endpoint);
        let limit = |given: Option<u64>, default: Option<u64>| match given {
            Some(0) => None,
            Some(n) => Some(n),
            None => default,
        };
        let defaults = cfg.limits;
        cfg.limits.max_requests = limit(self.max_requests, defaults.max_requests);
        cfg.limits.max_bytes = limit(self.max_bytes, defaults.max_bytes);
        cfg.limits.max_embedding_inputs =
            limit(self.max_embedding_inputs, defaults.max_embedding_inputs);
        cfg
    }
}

/// How many diagnostics are printed (all are counted, and all are in the
/// JSON output).
#[derive(Debug, Args)]
pub struct ShownArgs {
    /// Print at most N diagnostics of each file (all are counted); 0 prints
    /// all.
    #[arg(long, value_name = "N", default_value_t = batchkit_core::validate::DEFAULT_KEEP)]
    pub max_errors: usize,

    /// Print the first N diagnostics of each code in full and the rest as
    /// one line with their line numbers; 0 prints all in full.
    #[arg(long, value_name = "N", default_value_t = super::DEFAULT_PER_CODE)]
    pub max_per_code: usize,
}

/// Token estimation.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Most estimated input tokens per chunk, for enqueued-token quotas
    /// (not the body's `max_tokens`).
    #[arg(long = "max-chunk-tokens", alias = "max-tokens", value_name = "N")]
    pub max_tokens: Option<u64>,

    /// Estimate tokens even without --max-chunk-tokens (shown in the manifest).
    #[arg(long)]
    pub count_tokens: bool,

    /// Tokenize with this encoding whatever the model: o200k_base, cl100k_base.
    #[arg(long, value_name = "NAME")]
    pub encoding: Option<Encoding>,
}

impl TokenArgs {
    /// The split config for `rules`, counting tokens when these options
    /// ask (or `always`).
    pub fn split_config(&self, rules: &RuleArgs, always: bool) -> SplitConfig {
        rules.to_split_config(self.max_tokens, self.encoding, self.count_tokens || always)
    }
}
