//! The arguments of the commands that talk to a Batch API service:
//! `batchkit files` and `batchkit batches` (and, for its connection,
//! `batchkit run`).

use std::path::PathBuf;

use batchkit_client::{ClientConfig, DEFAULT_MAX_RETRIES, Provider};
use clap::{Args, Subcommand, ValueEnum};

use super::{parse_duration, parse_pair, poll_every};
use crate::cmd::{batches, files, service};

/// Which service, and how to reach it.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service: openai (also `batchkit serve` and other compatible
    /// servers, with --base-url), azure, groq, together, mistral, vllm (the
    /// `batchkit serve` in front of it, at --base-url).
    #[arg(long, global = true, value_name = "NAME", default_value = "openai")]
    pub provider: Provider,

    #[command(flatten)]
    pub conn: ConnArgs,

    /// Output: for people, or the service's JSON objects, one per line.
    #[arg(long, global = true, value_enum, default_value_t = ObjectFormat::Human)]
    pub format: ObjectFormat,
}

/// How to reach a service.
#[derive(Debug, Args)]
pub struct ConnArgs {
    /// The API key [default: from the provider's environment variable].
    #[arg(long, global = true, value_name = "KEY")]
    pub api_key: Option<String>,

    /// The API's base URL, with its version path
    /// [default: OPENAI_BASE_URL, or the provider's].
    #[arg(long, global = true, value_name = "URL")]
    pub base_url: Option<String>,

    /// Retries of 408/409/429/5xx replies and connection errors
    /// (exponential backoff with jitter, at least Retry-After).
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_MAX_RETRIES)]
    pub max_retries: u32,

    /// Seconds one request may take.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 600)]
    pub request_timeout: u64,
}

impl ConnArgs {
    /// The client configuration for `provider`.
    pub fn to_config(&self, provider: Provider) -> anyhow::Result<ClientConfig> {
        let mut cfg =
            ClientConfig::from_env(provider, self.base_url.as_deref(), self.api_key.as_deref())?;
        cfg.max_retries = self.max_retries;
        cfg.timeout = std::time::Duration::from_secs(self.request_timeout.max(1));
        Ok(cfg)
    }
}

impl ServiceArgs {
    fn options(&self) -> anyhow::Result<service::Options> {
        Ok(service::Options {
            client: self.conn.to_config(self.provider)?,
            format: match self.format {
                ObjectFormat::Human => service::ObjectFormat::Human,
                ObjectFormat::Json => service::ObjectFormat::Json,
            },
        })
    }
}

/// How service objects are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ObjectFormat {
    /// A summary for people.
    Human,
    /// The service's objects unchanged, one JSON object per line.
    Json,
}

/// Arguments of `batchkit files`.
#[derive(Debug, Args)]
pub struct FilesArgs {
    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(subcommand)]
    pub command: FilesCommand,
}

/// `batchkit files ...`.
#[derive(Debug, Subcommand)]
pub enum FilesCommand {
    /// Upload a file (streamed from disk).
    Upload {
        /// The file.
        file: PathBuf,
        /// Its purpose.
        #[arg(long, default_value = "batch")]
        purpose: String,
    },
    /// List files, newest first.
    List {
        /// Only files of this purpose (batch, batch_output, ...).
        #[arg(long)]
        purpose: Option<String>,
        /// At most this many.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start after this file id.
        #[arg(long, value_name = "ID")]
        after: Option<String>,
    },
    /// Get a file's object (name, size, purpose, status).
    Get {
        /// The file id.
        id: String,
    },
    /// Download a file's content (to stdout, or atomically to -o FILE).
    Content {
        /// The file id.
        id: String,
        /// Where to write it.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete a file.
    Delete {
        /// The file id.
        id: String,
    },
}

impl FilesArgs {
    /// The options of the call.
    pub fn options(&self) -> anyhow::Result<files::Options> {
        use files::Action;
        let action = match &self.command {
            FilesCommand::Upload { file, purpose } => Action::Upload {
                file: file.clone(),
                purpose: purpose.clone(),
            },
            FilesCommand::List {
                purpose,
                limit,
                after,
            } => Action::List {
                purpose: purpose.clone(),
                limit: *limit,
                after: after.clone(),
            },
            FilesCommand::Get { id } => Action::Get { id: id.clone() },
            FilesCommand::Content { id, output } => Action::Content {
                id: id.clone(),
                output: output.clone().unwrap_or_else(|| "-".into()),
            },
            FilesCommand::Delete { id } => Action::Delete { id: id.clone() },
        };
        Ok(files::Options {
            service: self.service.options()?,
            action,
        })
    }
}

/// Arguments of `batchkit batches`.
#[derive(Debug, Args)]
pub struct BatchesArgs {
    #[command(flatten)]
    pub service: ServiceArgs,

    #[command(subcommand)]
    pub command: BatchesCommand,
}

/// `batchkit batches ...`.
#[derive(Debug, Subcommand)]
pub enum BatchesCommand {
    /// Create a batch from an uploaded file, or upload one first (--file).
    Create {
        /// The uploaded request file.
        #[arg(
            long,
            value_name = "ID",
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        input_file_id: Option<String>,
        /// Upload this request file first.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// The endpoint of every request (/v1/chat/completions, ...).
        #[arg(long)]
        endpoint: String,
        /// The completion window.
        #[arg(long, default_value = "24h", value_name = "WINDOW")]
        completion_window: String,
        /// A metadata pair (at most 16; keys up to 64, values up to 512
        /// characters).
        #[arg(long, value_name = "KEY=VALUE", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// Seconds after creation that the output files expire
        /// (3600-2592000).
        #[arg(long, value_name = "SECS")]
        output_expires_after: Option<i64>,
    },
    /// Get a batch's object (status, request counts, file ids).
    Get {
        /// The batch id.
        id: String,
    },
    /// List batches, newest first.
    List {
        /// At most this many per page (1-100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Start after this batch id.
        #[arg(long, value_name = "ID")]
        after: Option<String>,
        /// Follow every page.
        #[arg(long)]
        all: bool,
    },
    /// Cancel a batch.
    Cancel {
        /// The batch id.
        id: String,
    },
    /// Wait until batches end; exit 0 if all completed.
    Wait {
        /// The batch ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Give up after this long (e.g. 90s, 30m, 24h).
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Seconds between polls (`--interval` is the old name).
        #[arg(long, alias = "interval", value_name = "SECS", default_value_t = 5.0)]
        poll_interval: f64,
    },
    /// Download a finished batch's output and error files, atomically, as
    /// <DIR>/<batch id>_output.jsonl and <DIR>/<batch id>_error.jsonl.
    Download {
        /// The batch id.
        id: String,
        /// Where to write them.
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        output: PathBuf,
    },
}

impl BatchesArgs {
    /// The options of the call.
    pub fn options(&self) -> anyhow::Result<batches::Options> {
        use batches::Action;
        let action = match &self.command {
            BatchesCommand::Create {
                input_file_id,
                file,
                endpoint,
                completion_window,
                metadata,
                output_expires_after,
            } => Action::Create {
                input_file_id: input_file_id.clone(),
                file: file.clone(),
                endpoint: endpoint.clone(),
                completion_window: completion_window.clone(),
                metadata: metadata.clone(),
                output_expires_after: *output_expires_after,
            },
            BatchesCommand::Get { id } => Action::Get { id: id.clone() },
            BatchesCommand::List { limit, after, all } => Action::List {
                limit: *limit,
                after: after.clone(),
                all: *all,
            },
            BatchesCommand::Cancel { id } => Action::Cancel { id: id.clone() },
            BatchesCommand::Wait {
                ids,
                timeout,
                poll_interval,
            } => Action::Wait {
                ids: ids.clone(),
                timeout: *timeout,
                every: poll_every(*poll_interval),
            },
            BatchesCommand::Download { id, output } => Action::Download {
                id: id.clone(),
                dir: output.clone(),
            },
        };
        Ok(batches::Options {
            service: self.service.options()?,
            action,
        })
    }
}
