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

use crate::cli::{Cli, ColorWhen};
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
    let result = cli.command.run();
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
