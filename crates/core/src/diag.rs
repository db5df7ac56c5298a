//! Diagnostics: what is wrong, where, and how to fix it.
//!
//! Codes are the ones the Batch API itself puts in a failed batch's `errors`
//! object where the service has one (`invalid_json_line`, `duplicate_custom_id`,
//! ...), so a report from batchkit reads like the service's own verdict.

use std::fmt;

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The service would accept the file, but something deserves a look.
    Warning,
    /// The service would reject the file.
    Error,
}

impl Severity {
    /// `"error"` or `"warning"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $severity:ident;)*) => {
        /// The kind of a problem, named as the Batch API names it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in the order reports list them.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The code as it appears in reports (`snake_case`).
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $name,)* }
            }

            /// Whether this code makes the file invalid.
            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$severity,)* }
            }
        }
    };
}

codes! {
    /// Not JSON, not UTF-8, trailing garbage, a byte order mark, a lone surrogate.
    InvalidJsonLine => "invalid_json_line", Error;
    /// `custom_id`, `method`, `url` or `body` is absent.
    MissingRequiredParameter => "missing_required_parameter", Error;
    /// An envelope field of the wrong type or value, or the body without
    /// the model or messages the service checks before it runs anything.
    InvalidRequest => "invalid_request", Error;
    /// `custom_id` breaks the provider's rule for its form.
    InvalidCustomId => "invalid_custom_id", Error;
    /// `url` is not the batch's endpoint.
    InvalidUrl => "invalid_url", Error;
    /// The batch's endpoint is not one the provider serves in batch.
    UnsupportedEndpoint => "unsupported_endpoint", Error;
    /// A `custom_id` used by an earlier line.
    DuplicateCustomId => "duplicate_custom_id", Error;
    /// A model other than the batch's one.
    MismatchedModel => "mismatched_model", Error;
    /// `body.stream` is true.
    StreamingUnsupported => "streaming_unsupported", Error;
    /// More requests than the provider takes in one batch.
    TooManyTasks => "too_many_tasks", Error;
    /// More embedding inputs than the provider takes in one batch.
    TooManyEmbeddingInputs => "too_many_embedding_inputs", Error;
    /// The file is larger than the provider's upload limit.
    FileTooLarge => "file_too_large", Error;
    /// No request at all.
    EmptyFile => "empty_file", Error;
    /// An empty or whitespace-only line (skipped by the services).
    BlankLine => "blank_line", Warning;
    /// The file's name does not end in `.jsonl`, which OpenAI's upload requires.
    InvalidFileFormat => "invalid_file_format", Warning;
    /// A url the service does not serve, where it only fails that request (vLLM).
    UnservedUrl => "unserved_url", Warning;
    /// A `custom_id` used by an earlier line, where the service runs both (vLLM).
    RepeatedCustomId => "repeated_custom_id", Warning;
    /// No request, where the service accepts that (vLLM: nothing runs).
    NoRequests => "no_requests", Warning;
    /// `body.stream` is true, where the service only fails that request (vLLM).
    StreamedRequest => "streamed_request", Warning;
    /// A body the endpoint will refuse (a message without a role, an input
    /// of the wrong type), where the service runs the batch and only that
    /// request fails (OpenAI: its 400 lands in the error file).
    InvalidBody => "invalid_body", Warning;
    /// A key repeated in one object: the services' parsers keep one of the
    /// values, and which one is not the same everywhere.
    DuplicateKey => "duplicate_key", Warning;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// What kind of problem.
    pub code: Code,
    /// The service's message where it has one, else ours, in the same voice.
    pub message: String,
    /// The field at fault (`custom_id`, `body.model`, ...), if one is.
    pub param: Option<String>,
    /// 1-based line number, or `None` for a problem of the whole file.
    pub line: Option<u64>,
    /// Byte offset in the (decompressed) input where the problem was found.
    pub offset: Option<u64>,
    /// The request's `custom_id`, where the line has a readable one.
    pub custom_id: Option<String>,
    /// A short, printable excerpt of the offending text.
    pub excerpt: Option<String>,
    /// Where in the excerpt (in characters) the offending text starts.
    pub caret: Option<usize>,
    /// How to fix it.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic with only a code and a message; add the rest with the
    /// builder methods.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            param: None,
            line: None,
            offset: None,
            custom_id: None,
            excerpt: None,
            caret: None,
            hint: None,
        }
    }

    /// Set the field at fault.
    pub fn param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Set the hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Set the line number.
    pub fn at_line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }

    /// How serious it is (derived from the code).
    pub fn severity(&self) -> Severity {
        self.code.severity()
    }
}

/// Counts of diagnostics by code: every problem is counted, however many are
/// kept for printing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeCounts([u64; Code::ALL.len()]);

impl CodeCounts {
    /// Count one more of `code`.
    pub fn add(&mut self, code: Code) {
        self.0[code as usize] += 1;
    }

    /// Count `n` more of `code`.
    pub fn add_n(&mut self, code: Code, n: u64) {
        self.0[code as usize] += n;
    }

    /// Add another tally to this one.
    pub fn merge(&mut self, other: &CodeCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }

    /// How many of `code`.
    pub fn get(&self, code: Code) -> u64 {
        self.0[code as usize]
    }

    /// The non-zero counts, in code order.
    pub fn iter(&self) -> impl Iterator<Item = (Code, u64)> + '_ {
        Code::ALL
            .iter()
            .map(|&c| (c, self.get(c)))
            .filter(|&(_, n)| n > 0)
    }

    /// Total of one severity.
    pub fn total(&self, severity: Severity) -> u64 {
        self.iter()
            .filter(|(c, _)| c.severity() == severity)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Make an excerpt of `line` around byte `at`: at most `width` characters,
/// control characters shown as `\u{..}` escapes, with an ellipsis where cut.
pub fn excerpt(line: &[u8], at: usize, width: usize) -> String {
    excerpt_with_caret(line, at, width).0
}

/// As [`excerpt`], with the column (in characters of the excerpt) where byte
/// `at` of the line is shown, for a caret under it.
pub fn excerpt_with_caret(line: &[u8], at: usize, width: usize) -> (String, usize) {
    let text = String::from_utf8_lossy(line);
    let at = at.min(line.len());
    // Position in characters of byte `at` (lossy decoding may change lengths,
    // so count in the original bytes up to `at`).
    let at_char = String::from_utf8_lossy(&line[..at]).chars().count();
    let total = text.chars().count();
    let start = at_char.saturating_sub(width / 3);
    let start = if total.saturating_sub(start) < width {
        total.saturating_sub(width)
    } else {
        start
    };
    let mut out = String::new();
    let mut caret = 0;
    if start > 0 {
        out.push('…');
    }
    for (shown, c) in text.chars().skip(start).enumerate() {
        if shown == width {
            out.push('…');
            break;
        }
        if start + shown == at_char {
            caret = out.chars().count();
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if at_char >= total {
        caret = out.chars().count();
    }
    (out, caret)
}

/// The byte offset in a request line of the value of `param` (`url`,
/// `body.model`, ...), found by its keys in order; 0 if it is not there.
/// For showing where a problem is, not for reading the value.
pub fn locate(line: &[u8], param: &str) -> usize {
    let mut pos = 0;
    for key in param.split('.') {
        let quoted = format!("\"{key}\"");
        let found = line[pos.min(line.len())..]
            .windows(quoted.len())
            .enumerate()
            .find_map(|(i, w)| {
                if w != quoted.as_bytes() {
                    return None;
                }
                let mut j = pos + i + quoted.len();
                while j < line.len() && line[j].is_ascii_whitespace() {
                    j += 1;
                }
                (j < line.len() && line[j] == b':').then_some(j + 1)
            });
        match found {
            Some(after) => {
                pos = after;
                while pos < line.len() && line[pos].is_ascii_whitespace() {
                    pos += 1;
                }
            }
            None => return 0,
        }
    }
    pos
}

/// `1234567` as `1,234,567`, as the services write limits.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carets_and_located_values() {
        let line = br#"{"custom_id":"a","url":"/v1/chat/completion","body":{"model":"gpt-4o"}}"#;
        let at = locate(line, "url");
        assert_eq!(&line[at..at + 4], b"\"/v1");
        let m = locate(line, "body.model");
        assert_eq!(&line[m..m + 8], b"\"gpt-4o\"");
        assert_eq!(locate(line, "body.stream"), 0);
        let (text, caret) = excerpt_with_caret(line, at, 30);
        assert_eq!(
            &text[text.char_indices().nth(caret).unwrap().0..][..4],
            "\"/v1"
        );
    }

    #[test]
    fn counts_by_severity() {
        let mut c = CodeCounts::default();
        c.add(Code::BlankLine);
        c.add(Code::InvalidUrl);
        c.add(Code::InvalidUrl);
        assert_eq!(c.total(Severity::Error), 2);
        assert_eq!(c.total(Severity::Warning), 1);
        assert_eq!(c.iter().count(), 2);
    }

    #[test]
    fn excerpt_cuts_and_escapes() {
        assert_eq!(excerpt(b"abc", 1, 10), "abc");
        let long = "x".repeat(100);
        let e = excerpt(long.as_bytes(), 50, 20);
        assert!(e.starts_with('…') && e.ends_with('…'), "{e}");
        assert_eq!(excerpt(b"a\tb", 0, 10), "a\\tb");
        assert_eq!(excerpt(b"\xff\xfe{", 0, 10), "\u{fffd}\u{fffd}{");
    }
}
