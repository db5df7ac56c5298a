//! The facts of one request line that planning chunks needs, collected by
//! the validator in its one pass and used by split: where the line is, its
//! size, its group (endpoint and model), tokens and embedding inputs.

use serde::Serialize;

/// The group of a line that takes part in no chunk (blank or rejected).
pub(crate) const NO_GROUP: u32 = u32::MAX;

/// One request line, as planning sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fact {
    /// Byte offset of the line.
    pub offset: u64,
    /// Length including its line ending.
    pub len: u32,
    /// Group index, or none for blank and rejected lines.
    pub(crate) group: u32,
    /// Estimated input tokens (0 unless counted).
    pub tokens: u32,
    /// Embedding inputs.
    pub inputs: u32,
    /// Output cap it sets.
    pub max_output: u32,
    /// Blank lines just before this line. Blank lines get no fact of their
    /// own (10 million of them once cost 344 MB): a line's number is the
    /// count of facts and skipped lines before it, see [`LineNumbers`].
    /// It fills what was padding, so a fact is still 32 bytes.
    pub(crate) skipped: u32,
}

impl Fact {
    pub(crate) fn new(offset: u64, len: u32, group: Option<u32>, inputs: u32) -> Fact {
        Fact {
            offset,
            len,
            group: group.unwrap_or(NO_GROUP),
            inputs,
            ..Fact::default()
        }
    }

    /// A stand-in for one blank line after `skipped` others, where more
    /// blank lines follow each other than a fact can count (2^32).
    pub(crate) fn blank(skipped: u32) -> Fact {
        Fact {
            group: NO_GROUP,
            skipped,
            ..Fact::default()
        }
    }

    /// The line's group, if it is a request that takes part.
    pub fn group(&self) -> Option<usize> {
        (self.group != NO_GROUP).then_some(self.group as usize)
    }
}

/// The 0-based line index of each fact, in order: facts are read front to
/// back, each adding its skipped blank lines and itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct LineNumbers {
    next: u64,
}

impl LineNumbers {
    /// The line index of `f`, the fact after the ones seen so far.
    pub fn of(&mut self, f: &Fact) -> u64 {
        let line = self.next + u64::from(f.skipped);
        self.next = line + 1;
        line
    }
}

/// Append `f` (whose `skipped` counts only the blank lines in its own
/// chunk) after `pending` more blank lines, as one fact or, past what a
/// fact can count, with stand-ins before it.
pub(crate) fn push_after_blanks(facts: &mut Vec<Fact>, pending: u64, mut f: Fact) {
    let mut skipped = pending + u64::from(f.skipped);
    while skipped > u64::from(u32::MAX) {
        facts.push(Fact::blank(u32::MAX));
        skipped -= u64::from(u32::MAX) + 1;
    }
    f.skipped = skipped as u32;
    facts.push(f);
}

/// Lines that share an endpoint (and model, where required).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Group {
    /// The endpoint.
    pub endpoint: String,
    /// The model, when chunks are per model.
    pub model: Option<String>,
}

impl Group {
    /// A file-name-safe name: `chat-completions.gpt-4o-mini`.
    pub fn slug(&self) -> String {
        let clean = |s: &str| -> String {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        let path = self.endpoint.trim_start_matches('/');
        let path = path.strip_prefix("v1/").unwrap_or(path).replace('/', "-");
        match &self.model {
            Some(m) => format!("{}.{}", clean(&path), clean(m)),
            None => clean(&path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ten million blank lines once cost a 32-byte fact each (344 MB for a
    /// 10 MB file); now they are counts in the facts that follow them.
    #[test]
    fn blank_lines_cost_no_facts() {
        let mut text = b"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":\"e\",\"input\":\"x\"}}\n".to_vec();
        text.extend(std::iter::repeat_n(b'\n', 1_000_000));
        text.extend_from_slice(b"{\"custom_id\":\"b\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"model\":\"e\",\"input\":\"y\"}}\n\n\n");
        let mut cfg = crate::validate::Config::for_split(crate::Provider::OpenAi);
        cfg.keep = Some(0);
        let report = crate::validate::validate_bytes(&text, &cfg);
        assert_eq!(report.facts.len(), 2);
        assert_eq!(report.summary.blank_lines, 1_000_002);
        let mut numbers = LineNumbers::default();
        let lines: Vec<u64> = report.facts.iter().map(|f| numbers.of(f)).collect();
        assert_eq!(lines, [0, 1_000_001]);
    }

    #[test]
    fn more_blank_lines_than_a_fact_counts_take_stand_ins() {
        let mut facts = Vec::new();
        let pending = 2 * (u64::from(u32::MAX) + 1) + 5;
        push_after_blanks(&mut facts, pending, Fact::new(7, 3, Some(0), 0));
        assert_eq!(facts.len(), 3);
        assert!(facts[..2].iter().all(|f| f.group().is_none()));
        let mut numbers = LineNumbers::default();
        let lines: Vec<u64> = facts.iter().map(|f| numbers.of(f)).collect();
        assert_eq!(lines[2], pending, "the line after `pending` blank ones");
        assert_eq!(facts[2].offset, 7);
    }
}
