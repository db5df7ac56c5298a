//! `batchkit split`: chunks that each fit every limit.

use std::io::Write;
use std::path::{Path, PathBuf};

use anstyle::{AnsiColor, Style};
use anyhow::{Context, Result};
use batchkit_core::Input;
use batchkit_core::split::{self, FactSink, Manifest, Oversize, Plan, SplitConfig};
use batchkit_core::validate::validate_bytes_into;

use crate::exit::Exit;
use crate::progress;
use crate::report::{self, Format, count, thousands};

/// What to split, into what, and how to report it.
pub struct Options {
    /// The request file; `-` is standard input.
    pub file: PathBuf,
    /// Where the chunks go (none: a dry run).
    pub out_dir: Option<PathBuf>,
    /// The rules, limits and token counting.
    pub config: SplitConfig,
    /// Set invalid lines aside instead of refusing.
    pub skip_invalid: bool,
    /// Print the plan only.
    pub dry_run: bool,
    /// Write into a folder that holds files an earlier split did not write.
    pub force: bool,
    /// Write with direct I/O where the file system allows.
    pub direct: bool,
    /// Diagnostics kept (none: all).
    pub keep: Option<usize>,
    /// Diagnostics of one code printed in full (0: all).
    pub max_per_code: usize,
    /// How the outcome is printed.
    pub format: Format,
}

const BOLD: Style = Style::new().bold();
const ERROR: Style = AnsiColor::Red.on_default().bold();

/// The name chunks are named after: the file name without `.jsonl`/`.gz`.
pub fn stem(name: &Path) -> String {
    if name.as_os_str() == "-" {
        return "stdin".to_owned();
    }
    let file = name
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = file.strip_suffix(".gz").unwrap_or(&file);
    let file = file
        .strip_suffix(".jsonl")
        .or_else(|| file.strip_suffix(".json"))
        .unwrap_or(file);
    if file.is_empty() {
        "batch".to_owned()
    } else {
        file.to_owned()
    }
}

/// Print the lines that break a limit on their own.
pub fn print_oversize(name: &Path, lines: &[Oversize]) -> Result<()> {
    let mut err = anstream::stderr().lock();
    for o in lines.iter().take(1000) {
        writeln!(
            err,
            "{BOLD}{}:{}:{BOLD:#} {ERROR}error[line_too_large]{ERROR:#}: {}",
            name.display(),
            o.line,
            o.what
        )?;
    }
    writeln!(
        err,
        "{ERROR}error:{ERROR:#} {} cannot fit in any chunk; shorten them or raise the limit",
        count(lines.len() as u64, "line")
    )?;
    Ok(())
}

/// What a split came to.
pub enum Outcome {
    /// The chunks written (or, for a dry run, planned), and the report of
    /// the lines set aside, if any were.
    Split(Box<Manifest>, Option<Box<batchkit_core::Report>>),
    /// The input is invalid (and invalid lines were not to be set aside):
    /// nothing was written.
    Invalid(Box<batchkit_core::Report>),
    /// Lines that fit in no chunk: nothing was written.
    Oversize(Vec<Oversize>),
}

/// Validate, plan, write; say what was done.
pub fn run(args: &Options) -> Result<Exit> {
    // As the input names itself (`-` for standard input).
    let name = &args.file;
    match split(args)? {
        Outcome::Split(manifest, rejected) => {
            print_manifest(args, &manifest)?;
            if let (Some(rejects), Some(checked)) = (&manifest.rejects, &rejected) {
                print_rejected(args, rejects, checked)?;
            }
            Ok(Exit::Ok)
        }
        Outcome::Invalid(checked) => {
            crate::exit::record(Exit::Invalid);
            print_invalid(args, name, &checked)?;
            Ok(Exit::Invalid)
        }
        Outcome::Oversize(lines) => {
            crate::exit::record(Exit::Invalid);
            if args.format != Format::Quiet {
                print_oversize(name, &lines)?;
            }
            Ok(Exit::Invalid)
        }
    }
}

/// Why nothing was split: the diagnostics, and what to do.
fn print_invalid(args: &Options, name: &Path, checked: &batchkit_core::Report) -> Result<()> {
    match args.format {
        Format::Json => {
            let mut out = anstream::stdout().lock();
            serde_json::to_writer(&mut out, &report::JsonReport::new(name, checked))?;
            writeln!(out)?;
        }
        Format::Human => report::human_diagnostics(
            &mut anstream::stderr().lock(),
            name,
            checked,
            args.max_per_code,
        )?,
        Format::Quiet => return Ok(()),
    }
    let mut err = anstream::stderr().lock();
    writeln!(
        err,
        "{ERROR}error:{ERROR:#} {} has {}; nothing was split",
        name.display(),
        count(checked.errors(), "error")
    )?;
    writeln!(
        err,
        "  = hint: fix them, or pass --skip-invalid to write the bad lines to a reject file"
    )?;
    Ok(())
}

/// The codes of the lines set aside, and where each is explained.
fn print_rejected(
    args: &Options,
    rejects: &batchkit_core::split::Rejects,
    checked: &batchkit_core::Report,
) -> Result<()> {
    if args.format == Format::Quiet {
        return Ok(());
    }
    let codes: Vec<String> = checked
        .counts
        .iter()
        .filter(|(c, n)| *n > 0 && c.severity() == batchkit_core::Severity::Error)
        .map(|(c, n)| format!("{c}: {}", thousands(n)))
        .collect();
    let mut err = anstream::stderr().lock();
    writeln!(err, "  set aside, by code: {}", codes.join(", "))?;
    if !args.dry_run {
        writeln!(
            err,
            "  each set-aside line's number and diagnostics: {} (`validate --format json`'s shape)",
            report_name(&rejects.path)
        )?;
    }
    Ok(())
}

/// Validate, plan and write, printing nothing but progress.
pub fn split(args: &Options) -> Result<Outcome> {
    let input = Input::open(&args.file)?;
    let name = input.name.clone();
    let mapped = input.into_mapped()?;
    let bytes = mapped.bytes();

    let cfg = &args.config;
    let mut vcfg = cfg.validation();
    // Set-aside lines are each explained in the rejects report.
    vcfg.keep = args.keep.filter(|_| !args.skip_invalid);
    let stem = stem(&name);
    let input_name = name.display().to_string();
    let direct = args.direct;
    let total = Some(bytes.len() as u64);
    // The new split is written beside the output folder and replaces it
    // whole once complete: a kill leaves the old split or the new one.
    let mut staging = match (&args.out_dir, args.dry_run) {
        (Some(dir), false) => Some(
            split::Staging::new(dir, claim(dir, args.force)?)
                .with_context(|| format!("cannot write chunks to {}", dir.display()))?,
        ),
        _ => None,
    };
    let write_to = staging.as_ref().map(|s| s.path().to_owned());

    // One pass: the validation also collects what planning needs, and
    // when writing, chunks are written while the rest is still checked.
    let (checked, mut facts, counted) = match (&args.out_dir, &write_to) {
        (Some(dir), Some(into)) => {
            let [bar, writing] = progress::bytes_bars(total, ["checking", "writing chunks"]);
            let one =
                split::validate_and_write(bytes, cfg, &vcfg, into, direct, &|n| bar.inc(n), &|n| {
                    writing.inc(n)
                })
                .with_context(|| format!("cannot write chunks to {}", dir.display()))?;
            bar.finish_and_clear();
            writing.finish_and_clear();
            if let Some(staged) = one.staged {
                let manifest = staged
                    .commit(into, &input_name, &stem, cfg)
                    .and_then(|m| match staging.take() {
                        Some(staging) => staging.commit().map(|()| m),
                        None => Ok(m),
                    })
                    .with_context(|| format!("cannot write chunks to {}", dir.display()))?;
                return Ok(Outcome::Split(Box::new(manifest), None));
            }
            (one.report, one.facts, one.counted)
        }
        _ => {
            let bar = progress::bytes_bar(total, "checking");
            let sink = FactSink::default();
            let (report, sink) = validate_bytes_into(bytes, &vcfg, sink, &|n| bar.inc(n));
            bar.finish_and_clear();
            (report, sink.into_facts(), 0)
        }
    };
    if !checked.is_valid() && !args.skip_invalid {
        return Ok(Outcome::Invalid(Box::new(checked)));
    }
    let rejected = if args.skip_invalid {
        std::mem::take(&mut facts.bad_lines)
    } else {
        Vec::new()
    };

    let blank = checked.summary.blank_lines;
    let bar = progress::bytes_bar(total, "counting tokens");
    let tick = |n| {
        if cfg.count_tokens {
            bar.inc(n)
        }
    };
    let planned = Plan::from_partly_counted(bytes, cfg, facts, counted, blank, rejected, &tick);
    bar.finish_and_clear();
    let plan = match planned {
        Ok(plan) => plan,
        Err(oversize) => return Ok(Outcome::Oversize(oversize)),
    };
    let writing = progress::bytes_bar(total, "writing chunks");
    let manifest = match (&args.out_dir, &write_to) {
        (Some(dir), Some(into)) => plan
            .write(bytes, into, &input_name, &stem, cfg, direct, &|n| {
                writing.inc(n)
            })
            .with_context(|| format!("cannot write chunks to {}", dir.display()))?,
        _ => plan.manifest(&input_name, &stem, cfg, None),
    };
    writing.finish_and_clear();
    if let (Some(dir), Some(staging)) = (&args.out_dir, staging) {
        if let Some(rejects) = &manifest.rejects {
            let json = report::JsonReport::new(&name, &checked);
            let name = report_name(&rejects.path);
            let mut out = batchkit_core::atomic::AtomicFile::create(&staging.path().join(&name))
                .with_context(|| format!("cannot write {}", dir.join(&name).display()))?;
            serde_json::to_writer_pretty(&mut out, &json)?;
            writeln!(out)?;
            out.commit()
                .with_context(|| format!("cannot write {}", dir.join(&name).display()))?;
        }
        staging
            .commit()
            .with_context(|| format!("cannot write chunks to {}", dir.display()))?;
    }
    let rejected = manifest.rejects.is_some().then(|| Box::new(checked));
    Ok(Outcome::Split(Box::new(manifest), rejected))
}

/// The rejects report beside the rejects file: `X.rejects.report.json`.
fn report_name(rejects: &str) -> String {
    format!("{}.report.json", rejects.trim_end_matches(".jsonl"))
}

/// The entries of `dir` that no earlier split wrote there (by its
/// manifest), which the new split keeps beside its chunks. They are refused
/// unless `force`, so a folder never mixes a split's chunks with files that
/// would be uploaded along with them.
pub(crate) fn claim(dir: &Path, force: bool) -> Result<Vec<std::ffi::OsString>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    };
    let mut earlier = Vec::new();
    if let Ok(text) = std::fs::read_to_string(dir.join("manifest.json")) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        for c in v["chunks"].as_array().into_iter().flatten() {
            earlier.extend(c["path"].as_str().map(str::to_owned));
        }
        if let Some(r) = v["rejects"]["path"].as_str() {
            earlier.push(r.to_owned());
            earlier.push(report_name(r));
        }
    }
    let mut foreign = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let text = name.to_string_lossy();
        // Temporary chunks of splits killed before this version wrote them
        // beside the output folder go with the old split.
        let own_temp = text.starts_with(".batchkit-split.") && text.ends_with(".tmp");
        // What an earlier split listed, by its first path component (the
        // rejects are in a folder of their own).
        let listed = earlier
            .iter()
            .any(|e| e.split('/').next() == Some(text.as_ref()));
        if text != "manifest.json" && !own_temp && !listed {
            foreign.push(name);
        }
    }
    foreign.sort();
    if !foreign.is_empty() && !force {
        let shown: Vec<String> = foreign
            .iter()
            .take(5)
            .map(|n| n.to_string_lossy().into_owned())
            .collect();
        anyhow::bail!(
            "{} holds {} that no earlier split wrote there ({}{}); split into an empty or new directory, or pass --force to leave them beside the chunks",
            dir.display(),
            count(foreign.len() as u64, "file"),
            shown.join(", "),
            if foreign.len() > 5 { ", ..." } else { "" }
        );
    }
    Ok(foreign)
}

/// Print what was written (or would be), as JSON or for people.
fn print_manifest(args: &Options, manifest: &Manifest) -> Result<()> {
    match args.format {
        Format::Quiet => {}
        Format::Json => {
            let mut out = anstream::stdout().lock();
            serde_json::to_writer_pretty(&mut out, &manifest)?;
            writeln!(out)?;
        }
        Format::Human => {
            let mut err = anstream::stderr().lock();
            let verb = if args.dry_run { "would write" } else { "wrote" };
            let place = args
                .out_dir
                .as_ref()
                .map(|d| format!(" to {}", d.display()))
                .unwrap_or_default();
            writeln!(
                err,
                "{BOLD}{verb} {}{place}{BOLD:#} ({}, {} provider limits)",
                count(manifest.chunks.len() as u64, "chunk"),
                count(manifest.requests, "request"),
                manifest.provider
            )?;
            for c in &manifest.chunks {
                let tokens = c
                    .estimated_tokens
                    .map(|t| format!(", ~{} tokens", thousands(t)))
                    .unwrap_or_default();
                writeln!(
                    err,
                    "  {}  {}, {}{tokens}",
                    c.path,
                    count(c.requests, "request"),
                    count(c.bytes, "byte")
                )?;
            }
            if let Some(r) = &manifest.rejects {
                writeln!(
                    err,
                    "  {}  {} invalid lines set aside",
                    r.path,
                    thousands(r.lines)
                )?;
            }
            if manifest.blank_lines > 0 {
                writeln!(
                    err,
                    "  ({} blank lines left out)",
                    thousands(manifest.blank_lines)
                )?;
            }
        }
    }
    Ok(())
}
