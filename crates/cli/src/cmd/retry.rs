//! `batchkit retry`: the request lines that still need to run.

use anyhow::Result;

use crate::cli::RetryArgs;
use crate::cmd::join;
use crate::exit::Exit;

/// Select, write, summarize.
pub fn run(args: &RetryArgs) -> Result<Exit> {
    let merge = match join::open(&args.join)? {
        Ok(m) => m,
        Err(exit) => return Ok(exit),
    };
    let tally = join::write(&merge, &args.join, false, &|record, buf| {
        let selected = args.status.contains(&record.status)
            && (args.code.is_empty()
                || record
                    .error_code()
                    .is_some_and(|c| args.code.iter().any(|w| w == c)));
        if selected {
            buf.extend_from_slice(record.request_line);
            buf.push(b'\n');
        }
        selected
    })?;
    join::summarize(&merge, &args.join, &tally, "retry requests written to")?;
    Ok(Exit::Ok)
}
