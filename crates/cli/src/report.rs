//! Printing validation reports: for people (stderr, colour on a terminal)
//! and for machines (one JSON object per input on stdout).
//!
//! The JSON shape is a contract, documented in docs/rules.md and tested by
//! deserializing it strictly: `errors` and `warnings` use the Batch API's own
//! `{"object": "list", "data": [{code, message, param, line}]}` shape, with
//! batchkit's extra fields beside the four the service uses.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use anstyle::{AnsiColor, Style};
use batchkit_core::{Diagnostic, Report, Severity};
use serde::Serialize;

/// How reports are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// For people.
    Human,
    /// For machines: JSON.
    Json,
    /// Nothing at all: for callers that read what the command wrote (the
    /// Python package's functions).
    Quiet,
}

const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();
const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();
const GOOD: Style = AnsiColor::Green.on_default().bold();

/// Line numbers shown in a collapsed group before `…`.
const GROUP_LINES: usize = 12;

fn label(severity: Severity) -> (&'static str, Style) {
    match severity {
        Severity::Error => ("error", ERROR),
        Severity::Warning => ("warning", WARNING),
    }
}

/// Write the diagnostics of `report` for people: the first `per_code` of
/// each code in full (0: all), the rest of that code as one line with their
/// count and line numbers, so one screen shows every kind of problem.
pub fn human_diagnostics(
    w: &mut dyn Write,
    name: &Path,
    report: &Report,
    per_code: usize,
) -> io::Result<()> {
    let shown_name = name.display();
    let mut printed: BTreeMap<batchkit_core::Code, usize> = BTreeMap::new();
    let mut rest: BTreeMap<batchkit_core::Code, Vec<Option<u64>>> = BTreeMap::new();
    for d in &report.diagnostics {
        let n = printed.entry(d.code).or_default();
        if per_code > 0 && *n >= per_code {
            rest.entry(d.code).or_default().push(d.line);
            continue;
        }
        *n += 1;
        print_one(w, &shown_name, d)?;
    }
    for (code, lines) in &rest {
        // Counted beyond the kept diagnostics too (--max-errors).
        let more = report.counts.get(*code) - printed.get(code).copied().unwrap_or(0) as u64;
        let (label, style) = label(code.severity());
        let mut at: Vec<String> = lines
            .iter()
            .flatten()
            .take(GROUP_LINES)
            .map(|l| l.to_string())
            .collect();
        if more as usize > at.len() {
            at.push("…".to_owned());
        }
        writeln!(
            w,
            "{BOLD}{shown_name}:{BOLD:#} {style}{label}[{code}]{style:#}: … and {} more at lines {} {DIM}(--max-per-code 0 shows all){DIM:#}",
            thousands(more),
            at.join(", ")
        )?;
    }
    Ok(())
}

fn print_one(w: &mut dyn Write, name: &dyn std::fmt::Display, d: &Diagnostic) -> io::Result<()> {
    let (label, style) = label(d.severity());
    let place = match d.line {
        Some(line) => format!("{name}:{line}"),
        None => name.to_string(),
    };
    writeln!(
        w,
        "{BOLD}{place}:{BOLD:#} {style}{label}[{}]{style:#}: {}",
        d.code, d.message
    )?;
    if let Some(id) = &d.custom_id {
        writeln!(w, "  {DIM}custom_id:{DIM:#} {}", quoted(id))?;
    }
    if let Some(excerpt) = &d.excerpt {
        writeln!(w, "  {DIM}|{DIM:#} {excerpt}")?;
        if let Some(caret) = d.caret {
            writeln!(w, "  {DIM}|{DIM:#} {}{ERROR}^{ERROR:#}", " ".repeat(caret))?;
        }
    }
    if let Some(hint) = &d.hint {
        writeln!(w, "  {DIM}= hint:{DIM:#} {hint}")?;
    }
    Ok(())
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| s.to_owned())
}

/// Write the closing summary of `report` for people.
pub fn human_summary(w: &mut dyn Write, name: &Path, report: &Report) -> io::Result<()> {
    let s = &report.summary;
    let shown = report.diagnostics.len() as u64;
    let total = report.errors() + report.warnings();
    if shown < total {
        writeln!(
            w,
            "{DIM}… {} more {} not shown (--max-errors 0 shows all){DIM:#}",
            thousands(total - shown),
            if total - shown == 1 {
                "diagnostic"
            } else {
                "diagnostics"
            }
        )?;
    }
    let models = if s.models.is_empty() {
        "none".to_owned()
    } else {
        let mut list: Vec<String> = s
            .models
            .iter()
            .map(|(m, n)| format!("{m} ({})", thousands(*n)))
            .collect();
        if s.other_models > 0 {
            list.push(format!("others ({})", thousands(s.other_models)));
        }
        list.join(", ")
    };
    writeln!(w, "{BOLD}{}{BOLD:#} ({} rules)", name.display(), s.provider)?;
    writeln!(
        w,
        "  requests: {} in {}, {}",
        thousands(s.requests),
        count(s.lines, "line"),
        count(s.bytes, "byte")
    )?;
    writeln!(w, "  endpoint: {}", s.endpoint.as_deref().unwrap_or("none"))?;
    writeln!(w, "  models:   {models}")?;
    if s.embedding_inputs > 0 {
        writeln!(w, "  embedding inputs: {}", thousands(s.embedding_inputs))?;
    }
    let by_code: Vec<String> = report
        .counts
        .iter()
        .map(|(c, n)| format!("{c}: {}", thousands(n)))
        .collect();
    if report.is_valid() {
        let warn = match report.warnings() {
            0 => String::new(),
            n => format!(" ({}: {})", count(n, "warning"), by_code.join(", ")),
        };
        writeln!(
            w,
            "{GOOD}valid{GOOD:#}: the service would accept this file{warn}"
        )
    } else {
        writeln!(
            w,
            "{ERROR}invalid{ERROR:#}: {}, {} ({})",
            count(report.errors(), "error"),
            count(report.warnings(), "warning"),
            by_code.join(", ")
        )
    }
}

/// `n` and the noun, singular or plural: `1 request`, `2,000 requests`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

pub use batchkit_core::diag::thousands;

/// One validation report as JSON.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    /// The input's name.
    pub file: String,
    /// No errors.
    pub valid: bool,
    /// Errors, in the Batch API's shape.
    pub errors: JsonList<'a>,
    /// Warnings, in the same shape.
    pub warnings: JsonList<'a>,
    /// Facts about the file.
    pub summary: JsonSummary,
}

/// `{"object": "list", "data": [...]}`.
#[derive(Debug, Serialize)]
pub struct JsonList<'a> {
    object: &'static str,
    data: Vec<JsonDiagnostic<'a>>,
}

/// One diagnostic: the service's four fields first, then batchkit's.
#[derive(Debug, Serialize)]
pub struct JsonDiagnostic<'a> {
    code: &'static str,
    message: &'a str,
    param: Option<&'a str>,
    line: Option<u64>,
    severity: &'static str,
    offset: Option<u64>,
    custom_id: Option<&'a str>,
    hint: Option<&'a str>,
}

/// The summary object.
#[derive(Debug, Serialize)]
pub struct JsonSummary {
    provider: &'static str,
    requests: u64,
    lines: u64,
    blank_lines: u64,
    bytes: u64,
    longest_line: u64,
    endpoint: Option<String>,
    models: BTreeMap<String, u64>,
    other_models: u64,
    embedding_inputs: u64,
    errors: u64,
    warnings: u64,
    by_code: BTreeMap<&'static str, u64>,
    truncated: bool,
    limits: JsonLimits,
}

/// The limits that were checked (`null`: none).
#[derive(Debug, Serialize)]
pub struct JsonLimits {
    max_requests: Option<u64>,
    max_bytes: Option<u64>,
    max_embedding_inputs: Option<u64>,
}

impl<'a> JsonReport<'a> {
    /// The JSON form of `report`.
    pub fn new(name: &Path, report: &'a Report) -> Self {
        let list = |severity: Severity| JsonList {
            object: "list",
            data: report
                .diagnostics
                .iter()
                .filter(|d| d.severity() == severity)
                .map(JsonDiagnostic::from)
                .collect(),
        };
        let s = &report.summary;
        JsonReport {
            file: name.display().to_string(),
            valid: report.is_valid(),
            errors: list(Severity::Error),
            warnings: list(Severity::Warning),
            summary: JsonSummary {
                provider: s.provider.name(),
                requests: s.requests,
                lines: s.lines,
                blank_lines: s.blank_lines,
                bytes: s.bytes,
                longest_line: s.longest_line,
                endpoint: s.endpoint.clone(),
                models: s.models.iter().cloned().collect(),
                other_models: s.other_models,
                embedding_inputs: s.embedding_inputs,
                errors: report.errors(),
                warnings: report.warnings(),
                by_code: report.counts.iter().map(|(c, n)| (c.as_str(), n)).collect(),
                truncated: report.truncated(),
                limits: JsonLimits {
                    max_requests: s.limits.max_requests,
                    max_bytes: s.limits.max_bytes,
                    max_embedding_inputs: s.limits.max_embedding_inputs,
                },
            },
        }
    }
}

impl<'a> From<&'a Diagnostic> for JsonDiagnostic<'a> {
    fn from(d: &'a Diagnostic) -> Self {
        JsonDiagnostic {
            code: d.code.as_str(),
            message: &d.message,
            param: d.param.as_deref(),
            line: d.line,
            severity: d.severity().as_str(),
            offset: d.offset,
            custom_id: d.custom_id.as_deref(),
            hint: d.hint.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(209_715_200), "209,715,200");
    }
}
