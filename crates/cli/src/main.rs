//! `batchkit`: validate, split and merge the JSONL files of LLM Batch APIs.

mod cli;
mod cmd;
mod exit;
mod progress;
mod report;

use std::io::{self, Write};
use std::process::ExitCode;

use anstyle::{AnsiColor, Style};
use clap::Parser;

use crate::cli::{Cli, ColorWhen, Command};
use crate::exit::Exit;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.color {
        ColorWhen::Auto => {}
        ColorWhen::Always => anstream::ColorChoice::Always.write_global(),
        ColorWhen::Never => anstream::ColorChoice::Never.write_global(),
    }
    if let Some(n) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
        {
            print_error(&anyhow::anyhow!("cannot start {n} threads: {e}"));
            return Exit::Error.into();
        }
    }
    let result = match &cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Merge(args) => cmd::merge::run(args),
        Command::Retry(args) => cmd::retry::run(args),
        Command::Split(args) => cmd::split::run(args),
        Command::Stats(args) => cmd::stats::run(args),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Files(args) => cmd::files::run(args),
        Command::Batches(args) => cmd::batches::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Completions { shell } => cmd::docs::completions(*shell),
        Command::Man { command } => cmd::docs::man(command),
    };
    match result {
        Ok(exit) => exit.into(),
        // A closed pipe (`batchkit ... | head`) is the reader's choice, not an
        // error; the verdict reached before it closed is the exit status.
        Err(e) if is_broken_pipe(&e) => crate::exit::recorded().into(),
        Err(e) => {
            print_error(&e);
            Exit::Error.into()
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == io::ErrorKind::BrokenPipe)
    })
}

/// Print an error that stops a command (not a finding about the input).
pub(crate) fn print_error(e: &anyhow::Error) {
    const STYLE: Style = AnsiColor::Red.on_default().bold();
    let mut err = anstream::stderr().lock();
    let _ = writeln!(err, "{STYLE}error:{STYLE:#} {e:#}");
}
