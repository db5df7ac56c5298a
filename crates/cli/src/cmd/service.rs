//! What the `files` and `batches` commands share: the client, the runtime,
//! how service errors end a command, and how objects are printed.

use std::io::Write;

use anyhow::Context;
use batchkit_client::{Batch, Client, ClientConfig, ClientError, FileObject, RequestCounts};
use serde_json::Value;

use crate::exit::Exit;

/// Which service, and how its objects are printed.
pub struct Options {
    /// How to reach it.
    pub client: ClientConfig,
    /// How its objects are printed.
    pub format: ObjectFormat,
}

/// How service objects are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectFormat {
    /// A summary for people.
    Human,
    /// The service's objects unchanged, one JSON object per line.
    Json,
}

/// A client for the service the options name, and a runtime to drive it.
pub fn connect(args: &Options) -> anyhow::Result<(tokio::runtime::Runtime, Client)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = Client::new(args.client.clone())?;
    Ok((runtime, client))
}

/// End a command on a failed call about `what` (`batch batch_abc`, ...): a
/// service's answer is exit 1 with its status and message; no answer at
/// all is an error (exit 2).
pub fn failed(what: &str, e: ClientError) -> anyhow::Result<Exit> {
    match e {
        ClientError::Api { .. } => {
            crate::print_error(&anyhow::anyhow!("{what}: {e}"));
            Ok(Exit::Invalid)
        }
        other => Err(anyhow::anyhow!("{what}: {other}")),
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of a Unix time.
pub fn utc(ts: i64) -> String {
    let (days, secs) = (ts.div_euclid(86_400), ts.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Print objects: one line each for people, or the service's JSON.
pub struct Printer {
    format: ObjectFormat,
    out: std::io::StdoutLock<'static>,
}

impl Printer {
    /// Printing to stdout.
    pub fn new(format: ObjectFormat) -> Printer {
        Printer {
            format,
            out: std::io::stdout().lock(),
        }
    }

    /// The object as JSON (in JSON mode) or `human` (otherwise).
    pub fn object(&mut self, raw: &Value, human: impl FnOnce() -> String) -> std::io::Result<()> {
        match self.format {
            ObjectFormat::Json => writeln!(self.out, "{raw}"),
            ObjectFormat::Human => writeln!(self.out, "{}", human()),
        }
    }

    /// A file, as a line.
    pub fn file(&mut self, f: &FileObject) -> std::io::Result<()> {
        self.object(&f.raw, || {
            format!(
                "{}  {:>12} bytes  {}  {:<12}  {}",
                f.id,
                f.bytes,
                utc(f.created_at),
                f.purpose,
                f.filename
            )
        })
    }

    /// A batch, as a line.
    pub fn batch(&mut self, b: &Batch) -> std::io::Result<()> {
        self.object(&b.raw, || batch_line(b))
    }

    /// Flush.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A batch in one line: id, status, counts, endpoint, creation.
pub fn batch_line(b: &Batch) -> String {
    format!(
        "{}  {:<11}  {}  {}  {}",
        b.id,
        b.status,
        counts_text(&b.counts()),
        b.endpoint,
        utc(b.created_at)
    )
}

/// A batch's request counts, as every command words them: "done" is the
/// requests that succeeded (the service's `completed`), failures apart.
pub fn counts_text(c: &RequestCounts) -> String {
    format!("{}/{} done, {} failed", c.completed, c.total, c.failed)
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_796_245_599), "2026-12-02 21:06:39 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
