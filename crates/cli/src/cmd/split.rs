//! `batchkit split`: chunks that each fit every limit.

use std::io::Write;
use std::path::Path;

use anstyle::{AnsiColor, Style};
use anyhow::{Context, Result};
use batchkit_core::Input;
use batchkit_core::split::{self, Manifest, Oversize, Plan};
use batchkit_core::validate::validate_bytes_with_progress;

use crate::cli::{Format, SplitArgs};
use crate::exit::Exit;
use crate::progress;
use crate::report::{self, count, thousands};

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

/// Validate, plan, write.
pub fn run(args: &SplitArgs) -> Result<Exit> {
    let input = Input::open(&args.file)?;
    let name = input.name.clone();
    let mapped = input.into_mapped()?;
    let bytes = mapped.bytes();

    let cfg = args.rules.to_split_config(
        args.tokens.max_tokens,
        args.tokens.encoding,
        args.tokens.count_tokens,
    );
    let mut vcfg = cfg.validation();
    // Set-aside lines are each explained in the rejects report.
    vcfg.keep = (args.max_errors > 0 && !args.skip_invalid).then_some(args.max_errors);
    let stem = stem(&name);
    let input_name = name.display().to_string();
    let direct = !args.buffered;
    let total = Some(bytes.len() as u64);
    let earlier = match (&args.out_dir, args.dry_run) {
        (Some(dir), false) => claim(dir, args.force)?,
        _ => Vec::new(),
    };

    // One pass: the validation also collects what planning needs, and
    // when writing, chunks are written while the rest is still checked.
    let (mut checked, counted) = match (&args.out_dir, args.dry_run) {
        (Some(dir), false) => {
            let [bar, writing] = progress::bytes_bars(total, ["checking", "writing chunks"]);
            let one =
                split::validate_and_write(bytes, &cfg, &vcfg, dir, direct, &|n| bar.inc(n), &|n| {
                    writing.inc(n)
                })
                .with_context(|| format!("cannot write chunks to {}", dir.display()))?;
            bar.finish_and_clear();
            writing.finish_and_clear();
            if let Some(staged) = one.staged {
                let manifest = staged
                    .commit(dir, &input_name, &stem, &cfg)
                    .with_context(|| format!("cannot write chunks to {}", dir.display()))?;
                retire(dir, &earlier, &manifest)?;
                print_manifest(args, &manifest)?;
                return Ok(Exit::Ok);
            }
            (one.report, one.counted)
        }
        _ => {
            let bar = progress::bytes_bar(total, "checking");
            let report = validate_bytes_with_progress(bytes, &vcfg, &|n| bar.inc(n));
            bar.finish_and_clear();
            (report, 0)
        }
    };
    if !checked.is_valid() && !args.skip_invalid {
        crate::exit::record(Exit::Invalid);
        match args.format {
            Format::Json => {
                let mut out = anstream::stdout().lock();
                serde_json::to_writer(&mut out, &report::JsonReport::new(&name, &checked))?;
                writeln!(out)?;
            }
            Format::Human => report::human_diagnostics(
                &mut anstream::stderr().lock(),
                &name,
                &checked,
                args.max_per_code,
            )?,
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
        return Ok(Exit::Invalid);
    }
    let rejected = if args.skip_invalid {
        std::mem::take(&mut checked.bad_lines)
    } else {
        Vec::new()
    };

    let facts = std::mem::take(&mut checked.facts);
    let groups = std::mem::take(&mut checked.groups);
    let blank = checked.summary.blank_lines;
    let bar = progress::bytes_bar(total, "counting tokens");
    let tick = |n| {
        if cfg.count_tokens {
            bar.inc(n)
        }
    };
    let planned =
        Plan::from_partly_counted(bytes, &cfg, facts, counted, groups, blank, rejected, &tick);
    bar.finish_and_clear();
    let plan = match planned {
        Ok(plan) => plan,
        Err(oversize) => {
            crate::exit::record(Exit::Invalid);
            print_oversize(&name, &oversize)?;
            return Ok(Exit::Invalid);
        }
    };
    let writing = progress::bytes_bar(total, "writing chunks");
    let manifest = match (&args.out_dir, args.dry_run) {
        (Some(dir), false) => plan
            .write(bytes, dir, &input_name, &stem, &cfg, direct, &|n| {
                writing.inc(n)
            })
            .with_context(|| format!("cannot write chunks to {}", dir.display()))?,
        _ => plan.manifest(&input_name, &stem, &cfg, None),
    };
    writing.finish_and_clear();
    if let (Some(dir), false) = (&args.out_dir, args.dry_run) {
        if let Some(rejects) = &manifest.rejects {
            let json = report::JsonReport::new(&name, &checked);
            let path = dir.join(report_name(&rejects.path));
            let mut out = batchkit_core::atomic::AtomicFile::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            serde_json::to_writer_pretty(&mut out, &json)?;
            writeln!(out)?;
            out.commit()
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        retire(dir, &earlier, &manifest)?;
    }
    print_manifest(args, &manifest)?;
    if let Some(rejects) = &manifest.rejects {
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
    }
    Ok(Exit::Ok)
}

/// The rejects report beside the rejects file: `X.rejects.report.json`.
fn report_name(rejects: &str) -> String {
    format!("{}.report.json", rejects.trim_end_matches(".jsonl"))
}

/// The files an earlier split wrote into `dir` (from its manifest); any
/// other file there is refused unless `force`, so a directory never mixes a
/// split's chunks with files that would be uploaded along with them.
pub(crate) fn claim(dir: &Path, force: bool) -> Result<Vec<String>> {
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
    let mut foreign: Vec<String> = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        // A killed split's temporary chunks are its own; the next split
        // replaces them.
        let own_temp = name.starts_with(".batchkit-split.") && name.ends_with(".tmp");
        if name != "manifest.json" && !own_temp && !earlier.contains(&name) {
            foreign.push(name);
        }
    }
    foreign.sort();
    if !foreign.is_empty() && !force {
        let shown: Vec<&str> = foreign.iter().take(5).map(String::as_str).collect();
        anyhow::bail!(
            "{} holds {} files that no earlier split wrote there ({}{}); split into an empty or new directory, or pass --force to leave them beside the chunks",
            dir.display(),
            foreign.len(),
            shown.join(", "),
            if foreign.len() > 5 { ", ..." } else { "" }
        );
    }
    Ok(earlier)
}

/// Remove what the earlier split wrote and the new one did not replace.
pub(crate) fn retire(dir: &Path, earlier: &[String], manifest: &Manifest) -> Result<()> {
    let kept: Vec<&str> = manifest
        .chunks
        .iter()
        .map(|c| c.path.as_str())
        .chain(manifest.rejects.as_ref().map(|r| r.path.as_str()))
        .collect();
    let kept_report = manifest.rejects.as_ref().map(|r| report_name(&r.path));
    for name in earlier
        .iter()
        .filter(|n| !kept.contains(&n.as_str()) && kept_report.as_ref() != Some(n))
    {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e)
                    .with_context(|| format!("cannot remove {} from an earlier split", name));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Print what was written (or would be), as JSON or for people.
fn print_manifest(args: &SplitArgs, manifest: &Manifest) -> Result<()> {
    match args.format {
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
