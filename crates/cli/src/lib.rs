//! `batchkit`, the command: validate, split and merge the JSONL files of
//! LLM Batch APIs, and run their lifecycle. The binary calls [`main`]; so
//! does the Python package's `batchkit` entry point, in process, so that
//! both have the same flags, output and exit codes.

pub mod api;
mod cli;
mod cmd;
mod exit;
mod progress;
mod report;

use std::io::{self, Write};

use anstyle::{AnsiColor, Style};
use clap::Parser;

use crate::cli::{Cli, ColorWhen};
use crate::exit::Exit;

/// Run the command line `args` (the program's name first, as in
/// `std::env::args_os`) to its end: its exit status (0, 1, 2 or 130).
/// Arguments clap refuses (and `--help`, `--version`) print and exit the
/// process, as any command does.
pub fn main<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    run(args) as u8
}

fn run<I, T>(args: I) -> Exit
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
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
            return Exit::Error;
        }
    }
    let result = cli.command.run();
    match result {
        Ok(exit) => exit,
        // A closed pipe (`batchkit ... | head`) is the reader's choice, not an
        // error; the verdict reached before it closed is the exit status.
        Err(e) if is_broken_pipe(&e) => crate::exit::recorded(),
        Err(e) => {
            print_error(&e);
            Exit::Error
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
