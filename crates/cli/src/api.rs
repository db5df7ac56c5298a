//! The commands' work for other callers (the Python package): the same
//! arguments as the command line, read by the same parser (so the same
//! defaults, checks and messages), run without printing anything but
//! progress bars (which show only on a terminal), returning what the
//! command would have printed as JSON.

use crate::cli::{Cli, Command};
use crate::report::Format;

/// A failure: the argument parser's message, or why the command stopped.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Error {
        Error(format!("{e:#}"))
    }
}

/// A command's exit status (0 clean, 1 findings in the input) and its
/// JSON report (none where the command had nothing to say).
pub type Done = (u8, Option<serde_json::Value>);

/// `args` (without the program's name) as `batchkit` reads them.
fn parse(args: &[String]) -> Result<Command, Error> {
    let argv = std::iter::once("batchkit".to_owned()).chain(args.iter().cloned());
    <Cli as clap::Parser>::try_parse_from(argv)
        .map(|cli| cli.command)
        .map_err(|e| {
            // clap's first line, without its "error: " and "try --help".
            let text = e.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            Error(first.trim_start_matches("error: ").to_owned())
        })
}

/// `batchkit validate ARGS` (one file, or with `bytes` the bytes given,
/// named by the file argument): its report, as `--format json` prints it,
/// and the exit status (`--strict` counts warnings).
pub fn validate(args: &[String], bytes: Option<&[u8]>) -> Result<Done, Error> {
    let Command::Validate(a) = parse(&with_command("validate", args))? else {
        unreachable!("parsed as validate");
    };
    let opts = a.options();
    let file = opts
        .files
        .first()
        .ok_or_else(|| Error("no file given".to_owned()))?;
    let (name, report) = match bytes {
        Some(bytes) => (
            file.clone(),
            batchkit_core::validate_bytes(bytes, &opts.config),
        ),
        None => crate::cmd::validate::check(file, &opts.config)?,
    };
    let accepted = crate::cmd::validate::accepted(&report, opts.strict);
    let json = to_json(&crate::report::JsonReport::new(&name, &report))?;
    Ok((u8::from(!accepted), Some(json)))
}

/// `batchkit split ARGS`: the manifest written (or, for `--dry-run`,
/// planned); or, with exit status 1, the validation report of an input
/// that cannot be split (`invalid`), or the lines too large for any chunk
/// (`oversize`: `{"line", "what"}`).
pub fn split(args: &[String]) -> Result<Done, Error> {
    let Command::Split(a) = parse(&with_command("split", args))? else {
        unreachable!("parsed as split");
    };
    let mut opts = a.options();
    opts.format = Format::Quiet;
    Ok(match crate::cmd::split::split(&opts)? {
        crate::cmd::split::Outcome::Split(manifest, _) => (0, Some(to_json(&manifest)?)),
        crate::cmd::split::Outcome::Invalid(report) => {
            let r = crate::report::JsonReport::new(&opts.file, &report);
            (1, Some(serde_json::json!({"invalid": to_json(&r)?})))
        }
        crate::cmd::split::Outcome::Oversize(lines) => {
            let lines: Vec<serde_json::Value> = lines
                .iter()
                .map(|o| serde_json::json!({"line": o.line, "what": o.what}))
                .collect();
            (1, Some(serde_json::json!({"oversize": lines})))
        }
    })
}

/// `batchkit stats ARGS` (one file): its statistics, as `--format json`
/// prints them.
pub fn stats(args: &[String]) -> Result<Done, Error> {
    let Command::Stats(a) = parse(&with_command("stats", args))? else {
        unreachable!("parsed as stats");
    };
    let opts = a.options();
    let file = opts
        .files
        .first()
        .ok_or_else(|| Error("no file given".to_owned()))?;
    let (stats, exit) = crate::cmd::stats::compute(&opts, file)?;
    Ok((exit as u8, Some(to_json(&stats)?)))
}

/// `batchkit merge ARGS`: the output written; the summary of
/// `--format json`.
pub fn merge(args: &[String]) -> Result<Done, Error> {
    let Command::Merge(a) = parse(&with_command("merge", args))? else {
        unreachable!("parsed as merge");
    };
    let mut opts = a.options();
    opts.join.format = Format::Quiet;
    let (exit, summary) = crate::cmd::merge::merge(&opts)?;
    Ok((exit as u8, summary))
}

/// `batchkit retry ARGS`: the retry file written; the summary of
/// `--format json`.
pub fn retry(args: &[String]) -> Result<Done, Error> {
    let Command::Retry(a) = parse(&with_command("retry", args))? else {
        unreachable!("parsed as retry");
    };
    let mut opts = a.options();
    opts.join.format = Format::Quiet;
    let (exit, summary) = crate::cmd::retry::retry(&opts)?;
    Ok((exit as u8, summary))
}

/// `command` then `args`.
fn with_command(command: &str, args: &[String]) -> Vec<String> {
    std::iter::once(command.to_owned())
        .chain(args.iter().cloned())
        .collect()
}

/// `v` as a JSON value.
fn to_json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value, Error> {
    serde_json::to_value(v).map_err(|e| Error(e.to_string()))
}
