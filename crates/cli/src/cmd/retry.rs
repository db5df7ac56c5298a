//! `batchkit retry`: the request lines that still need to run.

use std::collections::BTreeMap;
use std::sync::Mutex;

use std::path::PathBuf;

use anyhow::{Context, Result};
use batchkit_core::results::Status;
use batchkit_core::split::{Plan, SplitConfig};
use batchkit_core::{Input, Provider};

use crate::cmd::join;
use crate::exit::Exit;

/// Which requests to write again, and for whose batches.
pub struct Options {
    /// The files and the output.
    pub join: join::Options,
    /// Only requests of these statuses (none: what can succeed again).
    pub status: Vec<Status>,
    /// Only requests with one of these error codes.
    pub code: Vec<String>,
    /// Whose batch rules the retry file must meet.
    pub provider: Provider,
}

/// Select, write, summarize.
pub fn run(args: &Options) -> Result<Exit> {
    retry(args).map(|(exit, _)| exit)
}

/// Select, write, summarize; the exit status, and the summary
/// (`--format json`'s) when the files could be joined.
pub fn retry(args: &Options) -> Result<(Exit, Option<serde_json::Value>)> {
    let merge = match join::open(&args.join, &[])? {
        Ok((m, _)) => m,
        Err(exit) => return Ok((exit, None)),
    };
    join::warn_without_results(&merge)?;
    let chosen = !args.status.is_empty() || !args.code.is_empty();
    // Requests left out by the default rule although they did not succeed
    // (4xx request errors), by code, to say so.
    let skipped: Mutex<BTreeMap<String, u64>> = Mutex::default();
    let tally = join::write(&merge, &args.join, false, &|record, buf| {
        let selected = if chosen {
            let status_ok = if args.status.is_empty() {
                record.status != Status::Succeeded
            } else {
                args.status.contains(&record.status)
            };
            status_ok
                && (args.code.is_empty()
                    || record
                        .error_code()
                        .is_some_and(|c| args.code.iter().any(|w| w == c)))
        } else {
            let again = record.worth_retrying();
            if !again && record.status != Status::Succeeded {
                let code = record.error_code().unwrap_or("none").to_owned();
                *skipped
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(code)
                    .or_default() += 1;
            }
            again
        };
        if selected {
            buf.extend_from_slice(record.request_line);
            buf.push(b'\n');
        }
        selected
    })?;
    let summary = join::summarize(&merge, &args.join, &tally, "retry requests written to")?;
    let skipped = skipped.into_inner().unwrap_or_else(|p| p.into_inner());
    let codes = |m: &BTreeMap<String, u64>| -> String {
        m.iter()
            .map(|(c, n)| format!("{c} ({n})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !skipped.is_empty() {
        eprintln!(
            "  not retried, as they would fail again: {}; retry them with --status failed --code CODE",
            codes(&skipped)
        );
    }
    if tally.written > 0 && args.join.output.as_os_str() != "-" {
        one_batch_or_split(args)?;
    }
    let not_succeeded = tally.total() - tally.count(Status::Succeeded);
    if chosen && tally.written == 0 {
        let mut asked = Vec::new();
        if !args.status.is_empty() {
            let s: Vec<&str> = args.status.iter().map(|s| s.as_str()).collect();
            asked.push(format!("--status {}", s.join(",")));
        }
        if !args.code.is_empty() {
            asked.push(format!("--code {}", args.code.join(",")));
        }
        if not_succeeded > 0 {
            eprintln!(
                "warning: no request matches {}; the {not_succeeded} that did not succeed have the codes: {}",
                asked.join(" "),
                codes(&tally.by_code)
            );
        } else {
            // A typo (`--code batch_expird`) must not pass for "nothing to do".
            eprintln!(
                "warning: no request matches {}: every request succeeded, so no request has an error code",
                asked.join(" ")
            );
        }
    }
    Ok((Exit::Ok, Some(summary)))
}

/// Leave the retry file as it is when it makes one batch the provider
/// accepts; otherwise (several endpoints or models, or over a limit)
/// replace it by one file per batch in a directory named after it, with a
/// manifest, as `split` writes them: a retry file is never one the service
/// would reject.
fn one_batch_or_split(args: &Options) -> Result<()> {
    let path = &args.join.output;
    let profile = args.provider.profile();
    // A service that runs each line by its own url (vLLM) takes any mix,
    // and has no batch limits.
    if profile.per_line {
        return Ok(());
    }
    let cfg = SplitConfig::within(profile);
    let mapped = Input::open(path)?.into_mapped()?;
    let bytes = mapped.bytes();
    let Ok(plan) = Plan::new(bytes, &cfg, Vec::new(), &|_| {}) else {
        // A line too large for any batch was too large in the first round
        // too; `validate` on the retry file says which.
        return Ok(());
    };
    if plan.chunks.len() <= 1 {
        return Ok(());
    }
    let dir = PathBuf::from(path.to_string_lossy().trim_end_matches(".jsonl").to_owned());
    let dir = if dir == *path {
        path.with_extension("d")
    } else {
        dir
    };
    let staging = batchkit_core::split::Staging::new(&dir, crate::cmd::split::claim(&dir, false)?)
        .with_context(|| format!("cannot write {}", dir.display()))?;
    let stem = crate::cmd::split::stem(path);
    let manifest = plan
        .write(
            bytes,
            staging.path(),
            &path.display().to_string(),
            &stem,
            &cfg,
            false,
            &|_| {},
        )
        .and_then(|m| staging.commit().map(|()| m))
        .with_context(|| format!("cannot write {}", dir.display()))?;
    drop(mapped);
    std::fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
    let groups: Vec<String> = manifest
        .chunks
        .iter()
        .map(|c| {
            format!("{} {}", c.endpoint, c.model.as_deref().unwrap_or(""))
                .trim_end()
                .to_owned()
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    eprintln!(
        "  they make {} batches under {} rules ({}), so they were written instead as one file per batch to {}/ (listed in {}/manifest.json); {} was not kept",
        manifest.chunks.len(),
        args.provider,
        groups.join("; "),
        dir.display(),
        dir.display(),
        path.display()
    );
    Ok(())
}
