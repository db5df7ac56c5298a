//! `batchkit validate`: the service's verdict on a request file, before upload.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use batchkit_core::{Config, Input, validate};

use crate::exit::Exit;
use crate::progress;
use crate::report::{self, Format};

/// What to validate, and how to report it.
pub struct Options {
    /// Request files; `-` is standard input.
    pub files: Vec<PathBuf>,
    /// The rules, limits and how many diagnostics to keep.
    pub config: Config,
    /// How the reports are printed.
    pub format: Format,
    /// Diagnostics of one code printed in full (0: all).
    pub max_per_code: usize,
    /// No summary after the diagnostics.
    pub quiet: bool,
    /// Warnings fail the file as errors do.
    pub strict: bool,
}

/// Validate the file at `path` (`-`: standard input), with a progress bar
/// on a terminal: its name and report. A file's name is checked too (a
/// pipe has none that gets uploaded).
pub fn check(path: &std::path::Path, cfg: &Config) -> Result<(PathBuf, batchkit_core::Report)> {
    let input = Input::open(path)?;
    let name = input.name.clone();
    let uploadable = input.size_hint.is_some();
    let bar = progress::bytes_bar(input.size_hint, &format!("validating {}", name.display()));
    let result = validate(input, cfg, &|n| bar.inc(n));
    bar.finish_and_clear();
    let mut report = result?;
    if uploadable {
        report.check_file_name(&name);
    }
    Ok((name, report))
}

/// Whether the service would take the file: no error, and with `strict`
/// no warning either.
pub fn accepted(report: &batchkit_core::Report, strict: bool) -> bool {
    report.is_valid() && !(strict && report.warnings() > 0)
}

/// Validate every file named; the exit status is the worst one's.
pub fn run(args: &Options) -> Result<Exit> {
    let cfg = &args.config;
    let mut worst = Exit::Ok;
    for path in &args.files {
        let (name, report) = match check(path, cfg) {
            Ok(checked) => checked,
            Err(e) => {
                worst = worst.max(Exit::Error);
                crate::exit::record(worst);
                crate::print_error(&e);
                continue;
            }
        };
        let accepted = accepted(&report, args.strict);
        worst = worst.max(if accepted { Exit::Ok } else { Exit::Invalid });
        crate::exit::record(worst);
        match args.format {
            Format::Quiet => {}
            Format::Json => {
                let mut out = anstream::stdout().lock();
                serde_json::to_writer(&mut out, &report::JsonReport::new(&name, &report))?;
                writeln!(out)?;
                out.flush()?;
            }
            Format::Human => {
                let mut err = anstream::stderr().lock();
                report::human_diagnostics(&mut err, &name, &report, args.max_per_code)?;
                if !args.quiet {
                    report::human_summary(&mut err, &name, &report)?;
                }
                if report.is_valid() && !accepted {
                    writeln!(
                        err,
                        "--strict: {} fail the file",
                        report::count(report.warnings(), "warning")
                    )?;
                }
            }
        }
    }
    Ok(worst)
}
