//! What `merge` and `retry` share: opening the files, joining them, and
//! reporting the outcome.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anstyle::{AnsiColor, Style};
use anyhow::{Context, Result};
use batchkit_core::atomic::Output;
use batchkit_core::merge::{Merge, MergeConfig, MergeError, Problem, Record, Tally};
use batchkit_core::results::Status;
use serde::Serialize;

use crate::exit::Exit;
use crate::progress;
use crate::report::{Format, count, thousands};

/// Request and result files to join, and where the join goes.
pub struct Options {
    /// Request files, in order.
    pub inputs: Vec<PathBuf>,
    /// A split's manifest, whose chunks are the request files.
    pub manifest: Option<PathBuf>,
    /// Output and error files, in any order.
    pub results: Vec<PathBuf>,
    /// Where to write; `-` is standard output.
    pub output: PathBuf,
    /// Which result wins a conflict, and how many problems are kept.
    pub config: MergeConfig,
    /// How the summary is printed.
    pub format: Format,
    /// Sync the output to disk before it replaces the target.
    pub fsync: bool,
}

impl Options {
    /// The join of `input` and `results` into `output`, with the defaults.
    pub fn new(input: &Path, results: Vec<PathBuf>, output: &Path) -> Options {
        Options {
            inputs: vec![input.to_owned()],
            manifest: None,
            results,
            output: output.to_owned(),
            config: MergeConfig::default(),
            format: Format::Human,
            fsync: false,
        }
    }
}

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const WARN: Style = AnsiColor::Yellow.on_default().bold();
const ERROR: Style = AnsiColor::Red.on_default().bold();

/// Where each chunk of a split came from: its lines in the file that was
/// split, from the split's manifest.
pub struct Origins {
    by_path: HashMap<PathBuf, (String, Vec<[u64; 2]>)>,
}

impl Origins {
    /// Read `manifest`: the chunks (the request files, in order) and where
    /// their lines came from.
    fn read(manifest: &Path) -> Result<(Vec<PathBuf>, Origins)> {
        let text = std::fs::read_to_string(manifest)
            .with_context(|| format!("cannot read {}", manifest.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a split's manifest.json", manifest.display()))?;
        let dir = manifest.parent().unwrap_or(Path::new("."));
        let chunks = v["chunks"]
            .as_array()
            .with_context(|| format!("{} has no `chunks` list", manifest.display()))?;
        let mut inputs = Vec::new();
        let mut by_path = HashMap::new();
        for c in chunks {
            let name = c["path"]
                .as_str()
                .with_context(|| format!("a chunk in {} has no path", manifest.display()))?;
            let ranges: Vec<[u64; 2]> =
                serde_json::from_value(c["lines"].clone()).with_context(|| {
                    format!("chunk {name} in {} has no line ranges", manifest.display())
                })?;
            let path = dir.join(name);
            inputs.push(path.clone());
            by_path.insert(path, (name.to_owned(), ranges));
        }
        Ok((inputs, Origins { by_path }))
    }

    /// The line in the split file, and the chunk's name, of line `line` of
    /// chunk `input`.
    pub fn of(&self, input: &Path, line: u64) -> Option<(u64, &str)> {
        let (name, ranges) = self.by_path.get(input)?;
        let mut k = line;
        for &[first, last] in ranges {
            let n = last - first + 1;
            if k <= n {
                return Some((first + k - 1, name));
            }
            k -= n;
        }
        None
    }
}

/// Join the files, or explain why they cannot be joined (`Err(exit)`).
/// `outputs` are the files the command will write besides `-o`: none of
/// them may be one of the files read.
pub fn open(args: &Options, outputs: &[&Path]) -> Result<Result<(Merge, Option<Origins>), Exit>> {
    let (inputs, origins) = match &args.manifest {
        Some(m) => {
            let (inputs, origins) = Origins::read(m)?;
            (inputs, Some(origins))
        }
        None => (args.inputs.clone(), None),
    };
    let read: Vec<&Path> = inputs
        .iter()
        .chain(&args.results)
        .chain(&args.manifest)
        .map(PathBuf::as_path)
        .collect();
    for out in std::iter::once(args.output.as_path()).chain(outputs.iter().copied()) {
        refuse_to_replace(out, &read)?;
    }
    match Merge::new(&inputs, &args.results, &args.config) {
        Ok(m) => Ok(Ok((m, origins))),
        Err(MergeError::InvalidInput { problems, count }) if args.format == Format::Quiet => {
            let lines: Vec<String> = problems
                .iter()
                .take(20)
                .map(|p| format!("{}:{}: {}", p.file.display(), p.line, p.message))
                .collect();
            anyhow::bail!(
                "the request files cannot be merged: {} (every request line needs a unique custom_id)\n{}",
                crate::report::count(count, "problem"),
                lines.join("\n")
            )
        }
        Err(MergeError::InvalidInput { problems, count }) => {
            let mut err = anstream::stderr().lock();
            for p in &problems {
                print_problem(&mut err, p, ERROR)?;
            }
            writeln!(
                err,
                "{ERROR}error:{ERROR:#} the request files cannot be merged: {}",
                crate::report::count(count, "problem")
            )?;
            writeln!(
                err,
                "  {DIM}= hint:{DIM:#} every request line needs a unique custom_id; `batchkit validate` checks them"
            )?;
            Ok(Err(Exit::Error))
        }
        Err(e) => Err(e.into()),
    }
}

/// Warn when no result file was named (`merge --manifest m.json -o x`):
/// every request would be reported missing without a word why.
pub fn warn_without_results(merge: &Merge) -> Result<()> {
    if merge.result_files() == 0 {
        let mut err = anstream::stderr().lock();
        writeln!(
            err,
            "{WARN}warning:{WARN:#} no result file was given, so every request is `missing`"
        )?;
        writeln!(
            err,
            "  {DIM}= hint:{DIM:#} name the batches' output and error files after the requests: `-i REQUESTS OUTPUT ERRORS` (or after `--manifest M`)"
        )?;
    }
    Ok(())
}

/// Fail when `output` is one of the files `read` (whatever the spelling
/// of either path): the atomic rename would replace that input.
pub fn refuse_to_replace(output: &Path, read: &[&Path]) -> Result<()> {
    if let Some(input) = batchkit_core::atomic::names_an_input(output, read) {
        let same = if input == output {
            String::new()
        } else {
            format!(" (the same file as {})", input.display())
        };
        anyhow::bail!(
            "the output {}{same} is one of the files read; writing it would replace that input\n  = hint: write to another path",
            output.display()
        );
    }
    Ok(())
}

/// Render every request through `render` into `args.output`, atomically.
pub fn write(
    merge: &Merge,
    args: &Options,
    request_body: bool,
    render: &(dyn Fn(&Record<'_>, &mut Vec<u8>) -> bool + Sync),
) -> Result<Tally> {
    let out = Output::create(&args.output, args.fsync)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    // Stdout may be closed early (`-o - | head`): every request is still
    // walked, so the counts and the verdict are whole.
    let mut out = UntilClosed {
        inner: out,
        closed: false,
    };
    let bar = progress::bytes_bar(Some(merge.input_bytes()), "writing");
    let tally = merge.write(&mut out, request_body, render, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    match out.inner.commit() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.with_context(|| format!("cannot write {}", args.output.display()))?,
    }
    Ok(tally)
}

/// A writer that, once its reader has gone (a broken pipe), drops the rest.
struct UntilClosed<W> {
    inner: W,
    closed: bool,
}

impl<W: Write> Write for UntilClosed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            r => r,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.inner.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r,
        }
    }
}

fn print_problem(w: &mut dyn Write, p: &Problem, style: Style) -> std::io::Result<()> {
    let id = p
        .custom_id
        .as_ref()
        .map(|id| {
            format!(
                " (custom_id {})",
                serde_json::to_string(id).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    writeln!(
        w,
        "{BOLD}{}:{}:{BOLD:#} {style}{}{style:#}: {}{id}",
        p.file.display(),
        p.line,
        p.kind.as_str(),
        p.message
    )
}

/// The JSON summary.
#[derive(Serialize)]
struct JsonSummary<'a> {
    output: String,
    requests: u64,
    written: u64,
    result_lines: u64,
    by_status: std::collections::BTreeMap<&'static str, u64>,
    by_code: &'a std::collections::BTreeMap<String, u64>,
    problem_counts: std::collections::BTreeMap<&'static str, u64>,
    problems: JsonProblems,
}

#[derive(Serialize)]
struct JsonProblems {
    object: &'static str,
    data: Vec<JsonProblem>,
}

#[derive(Serialize)]
struct JsonProblem {
    kind: &'static str,
    file: String,
    line: u64,
    custom_id: Option<String>,
    message: String,
}

/// Print the summary: human on stderr, or JSON on stdout when the output
/// went to a file.
pub fn summarize(
    merge: &Merge,
    args: &Options,
    tally: &Tally,
    verb: &str,
) -> Result<serde_json::Value> {
    let problems = merge.problems();
    let json = || -> serde_json::Result<serde_json::Value> {
        serde_json::to_value(JsonSummary {
            output: args.output.display().to_string(),
            requests: tally.total(),
            written: tally.written,
            result_lines: merge.result_lines(),
            by_status: Status::ALL
                .iter()
                .map(|&s| (s.as_str(), tally.count(s)))
                .collect(),
            by_code: &tally.by_code,
            problem_counts: merge
                .problem_counts()
                .iter()
                .map(|(k, &n)| (k.as_str(), n))
                .collect(),
            problems: JsonProblems {
                object: "list",
                data: problems
                    .iter()
                    .map(|p| JsonProblem {
                        kind: p.kind.as_str(),
                        file: p.file.display().to_string(),
                        line: p.line,
                        custom_id: p.custom_id.clone(),
                        message: p.message.clone(),
                    })
                    .collect(),
            },
        })
    };
    let summary = json()?;
    if args.format == Format::Quiet {
        return Ok(summary);
    }
    if args.format == Format::Json && args.output.as_os_str() != "-" {
        let mut out = anstream::stdout().lock();
        serde_json::to_writer(&mut out, &summary)?;
        writeln!(out)?;
        return Ok(summary);
    }
    let mut err = anstream::stderr().lock();
    for p in &problems {
        print_problem(&mut err, p, WARN)?;
    }
    let shown = problems.len() as u64;
    let counted: u64 = merge.problem_counts().values().sum();
    if shown < counted {
        writeln!(
            err,
            "{DIM}… {} more problems not shown (--max-problems 0 shows all){DIM:#}",
            counted - shown
        )?;
    }
    writeln!(
        err,
        "{BOLD}{verb} {}{BOLD:#} ({} of {})",
        display(&args.output),
        thousands(tally.written),
        count(tally.total(), "request")
    )?;
    let statuses: Vec<String> = Status::ALL
        .iter()
        .map(|&s| format!("{}: {}", s.as_str(), thousands(tally.count(s))))
        .collect();
    writeln!(err, "  {}", statuses.join(", "))?;
    if !tally.by_code.is_empty() {
        let mut codes: Vec<(&String, &u64)> = tally.by_code.iter().collect();
        codes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let codes: Vec<String> = codes
            .iter()
            .map(|(c, n)| format!("{c}: {}", thousands(**n)))
            .collect();
        writeln!(err, "  not succeeded, by code: {}", codes.join(", "))?;
    }
    if counted > 0 {
        let kinds: Vec<String> = merge
            .problem_counts()
            .iter()
            .map(|(k, n)| format!("{}: {}", k.as_str(), thousands(*n)))
            .collect();
        writeln!(err, "  {WARN}problems{WARN:#}: {}", kinds.join(", "))?;
    }
    Ok(summary)
}

fn display(p: &Path) -> String {
    if p.as_os_str() == "-" {
        "stdout".to_owned()
    } else {
        p.display().to_string()
    }
}
