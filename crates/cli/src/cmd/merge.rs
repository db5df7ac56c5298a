//! `batchkit merge`: every request with its outcome, in input order.

use std::path::PathBuf;

use anyhow::{Context, Result};
use batchkit_core::atomic::Output;
use batchkit_core::merge::MergedLine;
use batchkit_core::results::Status;

use crate::cmd::join;
use crate::exit::Exit;

/// What to merge, and what to add to each merged line.
pub struct Options {
    /// The files and the output.
    pub join: join::Options,
    /// Add the request body (`"request"`).
    pub with_request: bool,
    /// Add the answer text (`"text"`).
    pub text: bool,
    /// Where result lines of no request go, verbatim.
    pub unknown: Option<PathBuf>,
}

/// Merge, write, summarize.
pub fn run(args: &Options) -> Result<Exit> {
    merge(args).map(|(exit, _)| exit)
}

/// Merge, write, summarize; the exit status, and the summary
/// (`--format json`'s) when the files could be joined.
pub fn merge(args: &Options) -> Result<(Exit, Option<serde_json::Value>)> {
    let unknown: Vec<&std::path::Path> = args.unknown.iter().map(|p| p.as_path()).collect();
    let (merge, origins) = match join::open(&args.join, &unknown)? {
        Ok(m) => m,
        Err(exit) => return Ok((exit, None)),
    };
    join::warn_without_results(&merge)?;
    let line = MergedLine {
        with_request: args.with_request,
        text: args.text,
        // A split's chunks are named by the `chunk` field instead.
        input_name: merge.input_files() > 1 && origins.is_none(),
    };
    let tally = join::write(&merge, &args.join, args.with_request, &|record, buf| {
        match origins
            .as_ref()
            .and_then(|o| o.of(record.input, record.line))
        {
            Some((original, chunk)) => line.render_as(record, original, Some(chunk), buf),
            None => line.render(record, buf),
        }
        true
    })?;
    if let Some(path) = &args.unknown {
        let mut out = Output::create(path, args.join.fsync)
            .with_context(|| format!("cannot write {}", path.display()))?;
        merge.write_unknown(&mut out)?;
        out.commit()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let clean = tally.count(Status::Succeeded) == tally.total()
        && merge.problem_counts().values().sum::<u64>() == 0;
    let exit = if clean { Exit::Ok } else { Exit::Invalid };
    crate::exit::record(exit);
    let summary = join::summarize(&merge, &args.join, &tally, "merged into")?;
    Ok((exit, Some(summary)))
}
