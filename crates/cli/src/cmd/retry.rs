//! `batchkit retry`: the request lines that still need to run.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::Result;
use batchkit_core::results::Status;

use crate::cli::RetryArgs;
use crate::cmd::join;
use crate::exit::Exit;

/// Select, write, summarize.
pub fn run(args: &RetryArgs) -> Result<Exit> {
    let merge = match join::open(&args.join)? {
        Ok((m, _)) => m,
        Err(exit) => return Ok(exit),
    };
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
    join::summarize(&merge, &args.join, &tally, "retry requests written to")?;
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
    let not_succeeded = tally.total() - tally.count(Status::Succeeded);
    if chosen && tally.written == 0 && not_succeeded > 0 {
        let mut asked = Vec::new();
        if !args.status.is_empty() {
            let s: Vec<&str> = args.status.iter().map(|s| s.as_str()).collect();
            asked.push(format!("--status {}", s.join(",")));
        }
        if !args.code.is_empty() {
            asked.push(format!("--code {}", args.code.join(",")));
        }
        eprintln!(
            "warning: no request matches {}; the {not_succeeded} that did not succeed have the codes: {}",
            asked.join(" "),
            codes(&tally.by_code)
        );
    }
    Ok(Exit::Ok)
}
