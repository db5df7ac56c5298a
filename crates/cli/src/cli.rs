//! The command line, as clap types. Nothing outside this file and `main.rs`
//! sees clap: each subcommand's arguments become a plain config here.

use std::path::PathBuf;

use anyhow::{Context, bail};
use batchkit_core::{Config, Provider};
use clap::{Args, Parser, Subcommand, ValueEnum};

const WORKFLOW: &str = "\
The workflow:
  batchkit validate requests.jsonl                         check it as the service would
  batchkit split requests.jsonl --out-dir chunks           cut it into batches that fit
  batchkit batches create --file chunks/... --endpoint E   upload and run each (or: batchkit run)
  batchkit merge --manifest chunks/manifest.json results/*.jsonl -o merged.jsonl
  batchkit retry --manifest chunks/manifest.json results/*.jsonl -o retry.jsonl

One command for all of it: batchkit run requests.jsonl -o merged.jsonl
`batchkit COMMAND --help` shows each command's options and examples.";

/// Diagnostics of one code printed in full before the rest are summed up.
pub const DEFAULT_PER_CODE: usize = 3;

/// A help template that prints `text` (examples, exit statuses) verbatim
/// after the options. clap re-wraps `after_help` to the terminal's width, at
/// most 100 columns, which breaks example commands in two; the literal text
/// of a template is printed as it is. (`after_help` still holds the text,
/// for the man page.) The text must not hold `{` without a `}` after it:
/// clap would drop that part.
fn verbatim(text: &str) -> String {
    format!(
        "{{before-help}}{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{{all-args}}\n\n{text}"
    )
}

/// The examples of a command that talks to a service, and how it finds it.
fn with_service_help(examples: &str) -> String {
    format!("{examples}\n\n{SERVICE_HELP}")
}

/// Validate, split and merge the JSONL files of LLM Batch APIs.
#[derive(Debug, Parser)]
#[command(
    name = "batchkit",
    version,
    about,
    propagate_version = true,
    after_help = WORKFLOW,
    help_template = verbatim(WORKFLOW)
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// When to colour the output.
    #[arg(long, value_enum, default_value_t = ColorWhen::Auto, global = true)]
    pub color: ColorWhen,

    /// Worker threads (default: one per core).
    #[arg(long, short = 'j', global = true, value_name = "N")]
    pub threads: Option<usize>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a batch request file as the service would, before upload.
    #[command(after_help = VALIDATE_EXAMPLES, help_template = verbatim(VALIDATE_EXAMPLES))]
    Validate(ValidateArgs),
    /// Join output and error files back to the requests, in input order.
    #[command(after_help = MERGE_EXAMPLES, help_template = verbatim(MERGE_EXAMPLES))]
    Merge(MergeArgs),
    /// Write the requests that still need to run, ready to upload.
    #[command(after_help = RETRY_EXAMPLES, help_template = verbatim(RETRY_EXAMPLES))]
    Retry(RetryArgs),
    /// Cut a request file into chunks that each fit every limit.
    #[command(after_help = SPLIT_EXAMPLES, help_template = verbatim(SPLIT_EXAMPLES))]
    Split(SplitArgs),
    /// What a request file holds, in requests, bytes, tokens and money.
    #[command(after_help = STATS_EXAMPLES, help_template = verbatim(STATS_EXAMPLES))]
    Stats(StatsArgs),
    /// Serve the Batch API (files and batches) in front of an
    /// OpenAI-compatible server such as vLLM, llama.cpp or Ollama.
    #[command(after_help = SERVE_EXAMPLES, help_template = verbatim(SERVE_EXAMPLES))]
    Serve(ServeArgs),
    /// Upload, list, get, download (`content`) and delete files on a Batch
    /// API service.
    #[command(after_help = with_service_help(FILES_EXAMPLES), help_template = verbatim(&with_service_help(FILES_EXAMPLES)))]
    Files(FilesArgs),
    /// Create, get, list, cancel, wait for and download batches.
    #[command(after_help = with_service_help(BATCHES_EXAMPLES), help_template = verbatim(&with_service_help(BATCHES_EXAMPLES)))]
    Batches(BatchesArgs),
    /// One command from a request file to merged results: validate, split,
    /// upload, create, wait, download, merge, resubmit what can succeed.
    #[command(after_help = RUN_EXAMPLES, help_template = verbatim(RUN_EXAMPLES))]
    Run(RunArgs),
    /// Print a shell completion script.
    #[command(after_help = COMPLETIONS_EXAMPLES, help_template = verbatim(COMPLETIONS_EXAMPLES))]
    Completions {
        /// The shell: bash, zsh, fish, powershell, elvish.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of batchkit or of one of its commands.
    #[command(after_help = MAN_EXAMPLES, help_template = verbatim(MAN_EXAMPLES))]
    Man {
        /// A command (validate, split, ...) and a subcommand of it (`files
        /// upload`); without one, batchkit's page.
        #[arg(num_args = 0..=2)]
        command: Vec<String>,
    },
}

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  batchkit completions bash > ~/.local/share/bash-completion/completions/batchkit
  batchkit completions zsh > ~/.zfunc/_batchkit
  batchkit completions fish > ~/.config/fish/completions/batchkit.fish";

const MAN_EXAMPLES: &str = "\
Examples:
  batchkit man | man -l -
  batchkit man validate > ~/.local/share/man/man1/batchkit-validate.1";

const RUN_EXAMPLES: &str = "\
Examples:
  batchkit run requests.jsonl -o results.jsonl
  batchkit run requests.jsonl -o results.jsonl --dry-run        # the plan and token estimate
  OPENAI_BASE_URL=http://127.0.0.1:8090/v1 batchkit run requests.jsonl -o results.jsonl --provider vllm
  batchkit run requests.jsonl -o results.jsonl --max-chunk-tokens 2000000   # enqueued-token quota per batch

Every file id and batch id is recorded in the state file (default
<output>.run.json, chunks and results in <output>.run/) as soon as it exists:
kill the command at any point and run it again with the same arguments to
carry on; nothing is uploaded or created twice. Requests that expired, were
cancelled, got no result or failed with 408/409/429/5xx are sent again, up
to --max-rounds rounds in all.

Exit status:
  0  every request succeeded
  1  the input has errors, or some request did not succeed (see the output)
  2  usage error, a file could not be read or written, or no answer";

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

    /// On Ctrl-C, leave the batches running without asking.
    #[arg(long)]
    pub yes: bool,

    /// Seconds between polls of the batches.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub poll_interval: f64,
}

const SERVICE_HELP: &str = "\
The service is OpenAI unless --provider says otherwise; the key and address
come from the environment as the official SDKs read them: OPENAI_API_KEY and
OPENAI_BASE_URL (e.g. http://127.0.0.1:8090/v1 for `batchkit serve`); for
azure AZURE_OPENAI_ENDPOINT, AZURE_OPENAI_API_KEY and OPENAI_API_VERSION; for
groq, together and mistral GROQ_API_KEY, TOGETHER_API_KEY, MISTRAL_API_KEY.
--api-key and --base-url override them.

Exit status:
  0  done
  1  the service answered with an error (its HTTP status and message are
     shown), or a batch waited for did not complete
  2  usage error, a limit checked before sending, or no answer at all";

const FILES_EXAMPLES: &str = "\
Examples:
  batchkit files upload requests.jsonl
  batchkit files list --purpose batch --limit 20
  batchkit files content file-abc123 -o results.jsonl
  batchkit files get file-abc123 --format json | jq .bytes
  OPENAI_BASE_URL=http://127.0.0.1:8090/v1 batchkit files list   # a local batchkit serve";

const BATCHES_EXAMPLES: &str = "\
Examples:
  batchkit batches create --file requests.jsonl --endpoint /v1/chat/completions
  batchkit batches create --input-file-id file-abc123 --endpoint /v1/embeddings \\
      --metadata project=search --output-expires-after 604800
  batchkit batches list --all
  batchkit batches wait batch_abc123 --timeout 24h
  batchkit batches download batch_abc123 -o results/";

/// Which service, and how to reach it.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service: openai (also `batchkit serve` and other compatible
    /// servers, with --base-url), azure, groq, together, mistral.
    #[arg(long, global = true, value_name = "NAME", default_value = "openai", value_parser = parse_service)]
    pub provider: batchkit_client::Service,

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

    /// Retries of 408/409/429/5xx replies and connection errors.
    #[arg(long, global = true, value_name = "N", default_value_t = 2)]
    pub max_retries: u32,

    /// Seconds one request may take.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 600)]
    pub request_timeout: u64,
}

impl ConnArgs {
    /// The client configuration for `service`.
    pub fn to_config(
        &self,
        service: batchkit_client::Service,
    ) -> anyhow::Result<batchkit_client::ClientConfig> {
        let mut cfg = batchkit_client::ClientConfig::from_env(
            service,
            self.base_url.as_deref(),
            self.api_key.as_deref(),
        )?;
        cfg.max_retries = self.max_retries;
        cfg.timeout = std::time::Duration::from_secs(self.request_timeout.max(1));
        Ok(cfg)
    }
}

impl ServiceArgs {
    /// The client configuration.
    pub fn to_config(&self) -> anyhow::Result<batchkit_client::ClientConfig> {
        self.conn.to_config(self.provider)
    }
}

fn parse_service(s: &str) -> anyhow::Result<batchkit_client::Service> {
    batchkit_client::Service::parse(s).with_context(|| {
        format!("unknown provider '{s}' (known: openai, azure, groq, together, mistral)")
    })
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

fn parse_pair(s: &str) -> anyhow::Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .with_context(|| format!("'{s}' is not KEY=VALUE"))?;
    Ok((k.to_owned(), v.to_owned()))
}

/// A duration: a number with `s`, `m`, `h` or `d` (seconds when bare).
pub fn parse_duration(s: &str) -> anyhow::Result<std::time::Duration> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let scale = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => bail!("'{s}' is not a duration (e.g. 90s, 30m, 24h, 7d)"),
    };
    let n: f64 = n
        .parse()
        .with_context(|| format!("'{s}' is not a duration (e.g. 90s, 30m, 24h, 7d)"))?;
    std::time::Duration::try_from_secs_f64(n * scale)
        .with_context(|| format!("'{s}' is out of range"))
}

const SERVE_EXAMPLES: &str = "\
Examples:
  batchkit serve --upstream http://127.0.0.1:8000/v1          # vLLM
  batchkit serve --upstream http://127.0.0.1:8080             # llama.cpp's llama-server
  batchkit serve --upstream http://127.0.0.1:11434/v1         # Ollama
  BATCHKIT_API_KEYS=k1,k2 batchkit serve --upstream http://gpu:8000 --listen 0.0.0.0:8090

Then, with the official SDK, unchanged:
  client = OpenAI(base_url=\"http://127.0.0.1:8090/v1\", api_key=\"k1\")

Every option can also come from its environment variable (shown with
each). State (SQLite) and files live in --data-dir; stop the server with
Ctrl-C or SIGTERM, or kill it: unfinished batches resume on the next start.
Logs go to stderr (RUST_LOG=debug for more); GET /metrics serves
Prometheus metrics and GET /health answers without a key.";

/// Arguments of `batchkit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The upstream's base URL, with or without `/v1`: a request line's url
    /// `/v1/chat/completions` goes to `<upstream>/v1/chat/completions`.
    #[arg(long, env = "BATCHKIT_UPSTREAM", value_name = "URL")]
    pub upstream: String,

    /// Sent to the upstream as `Authorization: Bearer KEY`.
    #[arg(
        long,
        env = "BATCHKIT_UPSTREAM_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub upstream_api_key: Option<String>,

    /// Where to listen (`127.0.0.1:0` picks a free port).
    #[arg(
        long,
        env = "BATCHKIT_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8090"
    )]
    pub listen: std::net::SocketAddr,

    /// Where the database and the files are kept.
    #[arg(
        long,
        env = "BATCHKIT_DATA_DIR",
        value_name = "DIR",
        default_value = "batchkit-data"
    )]
    pub data_dir: PathBuf,

    /// An accepted API key (repeat for several; each key is a tenant that
    /// sees only its own files and batches). Without any, no key is asked
    /// for, and only loopback addresses are allowed.
    #[arg(
        long = "api-key",
        env = "BATCHKIT_API_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// Serve without API keys on a non-loopback address.
    #[arg(long, env = "BATCHKIT_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,

    /// Requests in flight to the upstream at once, shared by all batches.
    #[arg(long, env = "BATCHKIT_CONCURRENCY", value_name = "N", default_value_t = 64,
        value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Retries of a request after 408/409/429/5xx, a timeout or a
    /// connection error (exponential backoff with jitter, at least
    /// Retry-After).
    #[arg(
        long,
        env = "BATCHKIT_MAX_RETRIES",
        value_name = "N",
        default_value_t = 5
    )]
    pub max_retries: u32,

    /// Seconds one upstream request may take.
    #[arg(long, env = "BATCHKIT_REQUEST_TIMEOUT", value_name = "SECS", default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,

    /// Milliseconds before the first retry (doubling after each).
    #[arg(
        long,
        env = "BATCHKIT_RETRY_BASE_DELAY_MS",
        value_name = "MS",
        default_value_t = 500
    )]
    pub retry_base_delay_ms: u64,

    /// The largest file `POST /v1/files` accepts (e.g. 200MiB).
    #[arg(long, env = "BATCHKIT_MAX_UPLOAD_BYTES", value_name = "SIZE", default_value = "200MiB",
        value_parser = parse_size)]
    pub max_upload_bytes: u64,

    /// Whose rules validate input files: openai, azure, groq, together,
    /// mistral, vllm.
    #[arg(
        long,
        env = "BATCHKIT_PROVIDER",
        value_name = "NAME",
        default_value = "openai"
    )]
    pub provider: Provider,

    /// Seconds a client may take to send a request's headers, and may
    /// keep an idle connection open between requests; slower connections
    /// are closed so that they cannot hold the server's connections.
    #[arg(long, env = "BATCHKIT_HEADER_TIMEOUT", value_name = "SECS", default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,
}

impl ServeArgs {
    /// The server's settings.
    pub fn to_config(&self) -> batchkit_server::ServerConfig {
        let mut cfg = batchkit_server::ServerConfig::new(self.upstream.clone());
        cfg.upstream_api_key.clone_from(&self.upstream_api_key);
        cfg.listen = self.listen;
        cfg.data_dir.clone_from(&self.data_dir);
        cfg.api_keys = self
            .api_keys
            .iter()
            .filter(|k| !k.is_empty())
            .cloned()
            .collect();
        cfg.insecure_no_auth = self.insecure_no_auth;
        cfg.concurrency = self.concurrency as usize;
        cfg.max_retries = self.max_retries;
        cfg.request_timeout = std::time::Duration::from_secs(self.request_timeout);
        cfg.retry_base_delay = std::time::Duration::from_millis(self.retry_base_delay_ms);
        cfg.max_upload_bytes = self.max_upload_bytes;
        cfg.provider = self.provider;
        cfg.header_timeout = std::time::Duration::from_secs(self.header_timeout);
        cfg
    }
}

const SPLIT_EXAMPLES: &str = "\
Examples:
  batchkit split requests.jsonl --out-dir chunks/
  batchkit split requests.jsonl --out-dir chunks/ --max-chunk-tokens 2000000   # enqueued-token quota
  batchkit split requests.jsonl --out-dir chunks/ --skip-invalid         # bad lines to a reject file
  batchkit split requests.jsonl --dry-run

Chunks are named <stem>.<endpoint>[.<model>].<NNN>.jsonl and listed, with their
sizes, sha256 and input line numbers, in <out-dir>/manifest.json. Lines are
copied byte for byte, in input order; blank lines are left out. The input is
validated first (as `validate` would, except that several endpoints and models
are fine: they are what grouping is for).

Exit status:
  0  the chunks were written (or planned, with --dry-run)
  1  the input has errors (without --skip-invalid), or one line alone breaks
     a limit
  2  usage error, or a file could not be read or written";

const STATS_EXAMPLES: &str = "\
Examples:
  batchkit stats requests.jsonl
  batchkit stats requests.jsonl --price-input 0.075 --price-output 0.30   # USD per 1M tokens, batch prices
  batchkit stats a.jsonl b.jsonl --price gpt-4o-mini=0.075/0.30 --price gpt-4o=1.25/5
  batchkit stats --format json requests.jsonl | jq .tokens

Input tokens are estimated offline with the model's BPE encoding (o200k_base
for gpt-4o/4.1/5 and o-series, cl100k_base for gpt-4, gpt-3.5 and
text-embedding-3; others: o200k_base unless --encoding).

Exit status:
  0  the file has no errors
  1  some lines have errors (counted by code; `batchkit validate` lists them)
  2  usage error, or the file could not be read";

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

    /// Write invalid lines to <stem>.rejects.jsonl instead of refusing.
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

    /// Print at most N diagnostics (all are counted); 0 prints all.
    #[arg(long, value_name = "N", default_value_t = batchkit_core::validate::DEFAULT_KEEP)]
    pub max_errors: usize,

    /// Print the first N diagnostics of each code in full and the rest as
    /// one line with their line numbers; 0 prints all in full.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PER_CODE)]
    pub max_per_code: usize,

    /// human: the chunks written, on stderr; json: the manifest, on stdout.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
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
    pub encoding: Option<batchkit_core::tokens::Encoding>,
}

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

const MERGE_EXAMPLES: &str = "\
Examples:
  batchkit merge --input requests.jsonl output.jsonl errors.jsonl -o merged.jsonl
  batchkit merge --input part.001.jsonl --input part.002.jsonl results/*.jsonl -o merged.jsonl --text
  batchkit merge --input requests.jsonl round1/*.jsonl round2/*.jsonl -o - | jq -c 'select(.status != \"succeeded\")'

Each merged line is {\"custom_id\", \"line\", \"status\", \"status_code\",
\"response\", \"error\"}, one per request, in input order; status is succeeded,
failed, expired, cancelled or missing.
Result files may come in any order, from several batches and retry rounds: a
success wins over a failure; among failures the last file given wins; two
different successes are reported as a conflict (the first is kept unless
--prefer last).

Exit status:
  0  merged, and every request succeeded
  1  merged, and some request did not succeed (or results conflict or are
     unknown)
  2  usage error, unreadable file, or request files that cannot be merged";

const RETRY_EXAMPLES: &str = "\
Examples:
  batchkit retry --input requests.jsonl output.jsonl errors.jsonl -o retry.jsonl
  batchkit retry --input requests.jsonl results/*.jsonl --status expired,cancelled -o retry.jsonl
  batchkit retry --input requests.jsonl results/*.jsonl --status failed --code context_length_exceeded -o retry.jsonl

By default the retry file holds what can succeed when sent again: requests
that expired, were cancelled or have no result, and failures with 408, 409,
429, a 5xx, status 0 or no response. A 4xx is the request's own fault and
fails again: retry those only when asked, with --status failed (and --code).

The retry file holds the request lines byte for byte, in input order: upload it
as a new batch, then merge the original results and the new ones together.

Exit status:
  0  the retry file was written (it may be empty: nothing to retry)
  2  usage error, unreadable file, or request files that cannot be merged";

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
    pub status: Vec<batchkit_core::results::Status>,

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

fn parse_status(s: &str) -> anyhow::Result<batchkit_core::results::Status> {
    batchkit_core::results::Status::parse(s).with_context(|| {
        format!("unknown status '{s}' (use succeeded, failed, expired, cancelled, missing)")
    })
}

impl JoinArgs {
    /// The core's merge config.
    pub fn to_config(&self) -> batchkit_core::merge::MergeConfig {
        batchkit_core::merge::MergeConfig {
            prefer_last: self.prefer == Prefer::Last,
            keep: if self.max_problems == 0 {
                usize::MAX
            } else {
                self.max_problems
            },
        }
    }
}

const VALIDATE_EXAMPLES: &str = "\
Examples:
  batchkit validate requests.jsonl
  batchkit validate --provider azure --max-requests 20000 requests.jsonl
  gunzip -c requests.jsonl.gz | batchkit validate -
  batchkit validate --format json requests.jsonl | jq .summary

  Pre-upload hook (fails the upload script on a bad file):
    batchkit validate requests.jsonl && openai api files.create -f requests.jsonl -p batch

  pre-commit (.pre-commit-config.yaml):
    - repo: https://github.com/batchkit/batchkit
      rev: v0.1.0
      hooks: [{id: batchkit-validate}]

Exit status:
  0  valid: the service would accept the file (warnings allowed)
  1  the file has errors
  2  usage error, or an input could not be read";

/// How reports are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Human,
    /// For machines: JSON.
    Json,
}

/// When to use colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Arguments of `batchkit validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Request files (`.jsonl`, `.jsonl.gz`), or `-` for standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub rules: RuleArgs,

    /// Print at most N diagnostics per file (all are counted); 0 prints all.
    #[arg(long, value_name = "N", default_value_t = batchkit_core::validate::DEFAULT_KEEP)]
    pub max_errors: usize,

    /// Print the first N diagnostics of each code in full and the rest as
    /// one line with their line numbers (all are counted, and all are in
    /// the JSON output); 0 prints all in full.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PER_CODE)]
    pub max_per_code: usize,

    /// human: diagnostics and a summary for people, on stderr; json: one
    /// object per file on stdout, in the Batch API's `errors` shape.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,

    /// Print only the diagnostics, without the summary.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The rules and limits a batch is checked against.
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Whose rules apply: openai (OpenAI's batch guide and API reference),
    /// azure (Azure OpenAI global batch), groq, together, mistral (their
    /// batch docs), vllm (`vllm run-batch`: each line runs by its own url,
    /// and what fails only one request is a warning). See the README's
    /// provider table.
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
        encoding: Option<batchkit_core::tokens::Encoding>,
        count_tokens: bool,
    ) -> batchkit_core::split::SplitConfig {
        let cfg = self.to_config();
        batchkit_core::split::SplitConfig {
            limits: cfg.limits,
            profile: cfg.profile,
            max_tokens,
            endpoint: self.endpoint.clone(),
            tokens: batchkit_core::tokens::TokenCounter { forced: encoding },
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

/// Parse a byte size: a plain number of bytes, or a number with a unit
/// (`KB`, `MB`, `GB` are powers of 1000; `KiB`, `MiB`, `GiB` of 1024).
pub fn parse_size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        other => bail!("unknown size unit '{other}' (use B, KB, MB, GB, KiB, MiB or GiB)"),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("'{s}' is not a size (e.g. 209715200, 200MiB)"))?;
    let bytes = value * factor as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        bail!("'{s}' is out of range");
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("90").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m").ok(), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("1.5h").ok(), Some(Duration::from_secs(5400)));
        assert!(parse_duration("1y").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("209715200").ok(), Some(209_715_200));
        assert_eq!(parse_size("200MiB").ok(), Some(209_715_200));
        assert_eq!(parse_size("100MB").ok(), Some(100_000_000));
        assert_eq!(parse_size("1.5 KiB").ok(), Some(1536));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MB").is_err());
    }

    #[test]
    fn zero_lifts_a_limit() {
        let cli = Cli::try_parse_from(["batchkit", "validate", "--max-requests", "0", "f"])
            .expect("valid command line");
        let Command::Validate(args) = cli.command else {
            panic!("parsed as validate")
        };
        assert_eq!(args.rules.to_config().limits.max_requests, None);
        assert_eq!(args.rules.to_config().limits.max_bytes, Some(209_715_200));
    }
}
