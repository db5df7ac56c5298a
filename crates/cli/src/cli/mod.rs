//! The command line, as clap types: one module per subcommand, its help
//! text in `src/help/`. Nothing outside this module and `main.rs` sees
//! clap: each subcommand's arguments become the plain options its
//! `cmd::*::run` takes ([`Command::run`]).

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::exit::Exit;
use crate::report;

mod join;
mod rules;
mod run;
mod serve;
mod service;
mod split;
mod stats;
mod validate;

pub use rules::{RuleArgs, ShownArgs, TokenArgs};

/// Diagnostics of one code printed in full before the rest are summed up.
pub const DEFAULT_PER_CODE: usize = 3;

/// The help texts printed after the options (examples, exit statuses).
mod help {
    pub const WORKFLOW: &str = include_str!("../help/workflow.txt");
    pub const VALIDATE: &str = include_str!("../help/validate.txt");
    pub const SPLIT: &str = include_str!("../help/split.txt");
    pub const STATS: &str = include_str!("../help/stats.txt");
    pub const MERGE: &str = include_str!("../help/merge.txt");
    pub const RETRY: &str = include_str!("../help/retry.txt");
    pub const SERVE: &str = include_str!("../help/serve.txt");
    pub const SERVE_USAGE: &str = include_str!("../help/serve-usage.txt");
    pub const FILES: &str = include_str!("../help/files.txt");
    pub const BATCHES: &str = include_str!("../help/batches.txt");
    pub const SERVICE: &str = include_str!("../help/service.txt");
    pub const RUN: &str = include_str!("../help/run.txt");
    pub const COMPLETIONS: &str = include_str!("../help/completions.txt");
    pub const MAN: &str = include_str!("../help/man.txt");
}

/// A help text without the file's final newline.
fn text(file: &'static str) -> &'static str {
    file.trim_end()
}

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
fn with_service_help(examples: &'static str) -> String {
    format!("{}\n\n{}", text(examples), text(help::SERVICE))
}

/// Validate, split and merge the JSONL files of LLM Batch APIs.
#[derive(Debug, Parser)]
#[command(
    name = "batchkit",
    version,
    about,
    propagate_version = true,
    after_help = text(help::WORKFLOW),
    help_template = verbatim(text(help::WORKFLOW))
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
    #[command(after_help = text(help::VALIDATE), help_template = verbatim(text(help::VALIDATE)))]
    Validate(validate::ValidateArgs),
    /// Join output and error files back to the requests, in input order.
    #[command(after_help = text(help::MERGE), help_template = verbatim(text(help::MERGE)))]
    Merge(join::MergeArgs),
    /// Write the requests that still need to run, ready to upload.
    #[command(after_help = text(help::RETRY), help_template = verbatim(text(help::RETRY)))]
    Retry(join::RetryArgs),
    /// Cut a request file into chunks that each fit every limit.
    #[command(after_help = text(help::SPLIT), help_template = verbatim(text(help::SPLIT)))]
    Split(split::SplitArgs),
    /// What a request file holds, in requests, bytes, tokens and money.
    #[command(after_help = text(help::STATS), help_template = verbatim(text(help::STATS)))]
    Stats(stats::StatsArgs),
    /// Serve the Batch API (files and batches) in front of an
    /// OpenAI-compatible server such as vLLM, llama.cpp or Ollama.
    #[command(after_help = text(help::SERVE), help_template = verbatim(text(help::SERVE)))]
    Serve(serve::ServeArgs),
    /// Upload, list, get, download (`content`) and delete files on a Batch
    /// API service.
    #[command(after_help = with_service_help(help::FILES), help_template = verbatim(&with_service_help(help::FILES)))]
    Files(service::FilesArgs),
    /// Create, get, list, cancel, wait for and download batches.
    #[command(after_help = with_service_help(help::BATCHES), help_template = verbatim(&with_service_help(help::BATCHES)))]
    Batches(service::BatchesArgs),
    /// One command from a request file to merged results: validate, split,
    /// upload, create, wait, download, merge, resubmit what can succeed.
    #[command(after_help = text(help::RUN), help_template = verbatim(text(help::RUN)))]
    Run(run::RunArgs),
    /// Print a shell completion script.
    #[command(after_help = text(help::COMPLETIONS), help_template = verbatim(text(help::COMPLETIONS)))]
    Completions {
        /// The shell: bash, zsh, fish, powershell, elvish.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of batchkit or of one of its commands.
    #[command(after_help = text(help::MAN), help_template = verbatim(text(help::MAN)))]
    Man {
        /// A command (validate, split, ...) and a subcommand of it (`files
        /// upload`); without one, batchkit's page.
        #[arg(num_args = 0..=2)]
        command: Vec<String>,
    },
}

impl Command {
    /// Run the subcommand with the options its arguments make.
    pub fn run(&self) -> anyhow::Result<Exit> {
        use crate::cmd;
        match self {
            Command::Validate(args) => cmd::validate::run(&args.options()),
            Command::Merge(args) => cmd::merge::run(&args.options()),
            Command::Retry(args) => cmd::retry::run(&args.options()),
            Command::Split(args) => cmd::split::run(&args.options()),
            Command::Stats(args) => cmd::stats::run(&args.options()),
            Command::Serve(args) => match &args.action {
                Some(serve::ServeAction::HashKey { key }) => cmd::serve::hash_key(key.as_deref()),
                Some(serve::ServeAction::Usage(args)) => cmd::serve::usage(&args.options()),
                Some(serve::ServeAction::WebhookSecret) => {
                    println!("{}", batchkit_server::webhooks::new_secret());
                    Ok(crate::exit::Exit::Ok)
                }
                None => cmd::serve::run(args.to_config()),
            },
            Command::Files(args) => cmd::files::run(&args.options()?),
            Command::Batches(args) => cmd::batches::run(&args.options()?),
            Command::Run(args) => cmd::run::run(&args.options()?),
            Command::Completions { shell } => cmd::docs::completions(*shell),
            Command::Man { command } => cmd::docs::man(command),
        }
    }
}

/// How reports are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Human,
    /// For machines: JSON.
    Json,
}

impl From<Format> for report::Format {
    fn from(f: Format) -> report::Format {
        match f {
            Format::Human => report::Format::Human,
            Format::Json => report::Format::Json,
        }
    }
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

/// The value of a `--max-errors`-like count: 0 means no limit.
fn at_most(n: usize) -> Option<usize> {
    (n > 0).then_some(n)
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

/// Seconds between polls, within what a poll loop can honour.
fn poll_every(secs: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(secs.clamp(0.05, 3600.0))
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
        let options = args.options();
        assert_eq!(options.config.limits.max_requests, None);
        assert_eq!(options.config.limits.max_bytes, Some(209_715_200));
    }

    /// The words of the commands in one line of shell, split at `|`, `;`,
    /// `&&`, `||` and `&`; quotes removed, redirections and comments
    /// dropped, and `$(...)` or `$VAR` standing for one word.
    fn shell_commands(line: &str) -> Vec<Vec<String>> {
        let mut commands = vec![Vec::new()];
        let mut word: Option<String> = None;
        let mut chars = line.chars().peekable();
        let mut skip_next_word = false;
        let end_word = |word: &mut Option<String>, cmd: &mut Vec<String>, skip: &mut bool| {
            if let Some(w) = word.take() {
                if *skip {
                    *skip = false;
                } else {
                    cmd.push(w);
                }
            }
        };
        while let Some(c) = chars.next() {
            let cmd = commands.last_mut().expect("one command at least");
            match c {
                '\'' | '"' => {
                    let w = word.get_or_insert_with(String::new);
                    for q in chars.by_ref() {
                        if q == c {
                            break;
                        }
                        w.push(q);
                    }
                }
                '$' if chars.peek() == Some(&'(') => {
                    let mut depth = 0;
                    for q in chars.by_ref() {
                        match q {
                            '(' => depth += 1,
                            ')' if depth == 1 => break,
                            ')' => depth -= 1,
                            _ => {}
                        }
                    }
                    word.get_or_insert_with(String::new).push('X');
                }
                '#' if word.is_none() => break,
                ' ' | '\t' => end_word(&mut word, cmd, &mut skip_next_word),
                '|' | ';' | '&' => {
                    end_word(&mut word, cmd, &mut skip_next_word);
                    if chars.peek() == Some(&c) {
                        chars.next();
                    }
                    commands.push(Vec::new());
                }
                '>' | '<' => {
                    // `2>&1`: the 2 is the descriptor, not a word.
                    if word
                        .as_deref()
                        .is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit()))
                    {
                        word = None;
                    }
                    end_word(&mut word, cmd, &mut skip_next_word);
                    if chars.peek() == Some(&'>') || chars.peek() == Some(&'&') {
                        chars.next();
                    }
                    skip_next_word = true;
                }
                c => word.get_or_insert_with(String::new).push(c),
            }
        }
        let cmd = commands.last_mut().expect("one command at least");
        end_word(&mut word, cmd, &mut skip_next_word);
        commands
    }

    /// Every `batchkit` command line in the pages' examples that are not
    /// run (`sh`, `yaml` and `text` blocks) and in the help texts is one
    /// the parser accepts: a renamed or removed flag fails here.
    #[test]
    fn every_command_in_the_docs_parses() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut pages: Vec<std::path::PathBuf> =
            ["README.md", "ARCHITECTURE.md", "CONTRIBUTING.md"]
                .iter()
                .map(|p| root.join(p))
                .collect();
        for dir in ["docs", "crates/cli/src/help"] {
            for e in std::fs::read_dir(root.join(dir)).expect("the folder is there") {
                pages.push(e.expect("an entry").path());
            }
        }
        let mut checked = 0;
        let mut wrong = Vec::new();
        for page in pages {
            let text = std::fs::read_to_string(&page).expect("a page");
            let help = page.extension().is_some_and(|e| e == "txt");
            let mut lang: Option<String> = None;
            let mut joined = String::new();
            for (n, line) in text.lines().enumerate() {
                if let Some(fence) = line.trim().strip_prefix("```") {
                    lang = match lang {
                        Some(_) => None,
                        None => Some(fence.to_owned()),
                    };
                    continue;
                }
                let wanted = help || matches!(lang.as_deref(), Some("sh" | "yaml" | "text"));
                if !wanted {
                    continue;
                }
                // A line continued with `\` is read with the next.
                if let Some(start) = line.strip_suffix('\\') {
                    joined.push_str(start);
                    continue;
                }
                joined.push_str(line);
                let full = std::mem::take(&mut joined);
                let shell = full
                    .trim()
                    .trim_start_matches("$ ")
                    .trim_start_matches("entry: ");
                let entry = full.trim().starts_with("entry: ");
                for mut words in shell_commands(shell) {
                    // pre-commit adds the staged files to a hook's entry.
                    if entry {
                        words.push("F.jsonl".to_owned());
                    }
                    // Leading VAR=value assignments, and the shell's own words.
                    let words: Vec<&String> = words
                        .iter()
                        .skip_while(|w| {
                            w.contains('=') && !w.starts_with('-')
                                || matches!(w.as_str(), "do" | "then" | "else" | "time" | "exec")
                        })
                        .collect();
                    if words.first().map(|w| w.as_str()) != Some("batchkit") {
                        continue;
                    }
                    checked += 1;
                    if let Err(e) = Cli::try_parse_from(words.iter().map(|w| w.as_str())) {
                        if !matches!(
                            e.kind(),
                            clap::error::ErrorKind::DisplayHelp
                                | clap::error::ErrorKind::DisplayVersion
                        ) {
                            wrong.push(format!("{}:{}: `{full}`: {e}", page.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(checked >= 40, "only {checked} commands found");
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn shell_lines_split_into_commands() {
        let cmds = shell_commands(
            r#"gunzip -c a.gz | FOO=1 batchkit validate - --x "a b" 2>&1 > out # note"#,
        );
        assert_eq!(
            cmds,
            [
                vec!["gunzip", "-c", "a.gz"],
                vec!["FOO=1", "batchkit", "validate", "-", "--x", "a b"]
            ]
        );
        let cmds = shell_commands(r#"for id in $(cat ids); do batchkit batches get "$id"; done"#);
        assert_eq!(cmds[1], ["do", "batchkit", "batches", "get", "$id"]);
    }

    /// No help text holds a `{` that clap's template would eat, or a blank
    /// line at its end.
    #[test]
    fn help_texts_fit_the_template() {
        for text in [
            help::WORKFLOW,
            help::VALIDATE,
            help::SPLIT,
            help::STATS,
            help::MERGE,
            help::RETRY,
            help::SERVE,
            help::FILES,
            help::BATCHES,
            help::SERVICE,
            help::RUN,
            help::COMPLETIONS,
            help::MAN,
        ] {
            assert!(!text.contains('{') || text.contains('}'), "{text}");
            assert!(text.ends_with('\n') && !text.ends_with("\n\n"));
        }
    }
}
