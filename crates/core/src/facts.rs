//! The facts of one request line that planning chunks needs, collected in
//! validation's one pass by [`FactSink`] and used by split, stats and `run`:
//! where the line is, its size, its group (endpoint and model), tokens and
//! embedding inputs.

use std::collections::HashMap;

use serde::Serialize;

use crate::check::{LineSink, SeenLine, Sink};

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
fn push_after_blanks(facts: &mut Vec<Fact>, pending: u64, mut f: Fact) {
    let mut skipped = pending + u64::from(f.skipped);
    while skipped > u64::from(u32::MAX) {
        facts.push(Fact::blank(u32::MAX));
        skipped -= u64::from(u32::MAX) + 1;
    }
    f.skipped = skipped as u32;
    facts.push(f);
}

/// The consumer of a validation that planning chunks needs: a [`Fact`] per
/// line that is not blank, the groups they refer to, and the lines with
/// errors (to leave out with `--skip-invalid`).
#[derive(Default)]
pub struct FactSink {
    facts: Vec<Fact>,
    groups: Vec<Group>,
    index: HashMap<GroupKey, u32>,
    /// Blank lines since the last fact, to be counted in the next one.
    blanks_pending: u64,
    bad_lines: Vec<u64>,
}

/// What a [`FactSink`] collected.
#[derive(Debug, Default)]
pub struct LineFacts {
    /// One fact per line that is not blank, in order; [`LineNumbers`]
    /// gives their line numbers.
    pub facts: Vec<Fact>,
    /// The (endpoint, model) groups the facts refer to.
    pub groups: Vec<Group>,
    /// 1-based numbers of the lines with errors, sorted.
    pub bad_lines: Vec<u64>,
}

impl FactSink {
    /// The facts of the lines absorbed so far, to be completed (tokens) in
    /// place, and the groups they refer to.
    pub fn facts_mut(&mut self) -> (&mut [Fact], &[Group]) {
        (&mut self.facts, &self.groups)
    }

    /// What was collected.
    pub fn into_facts(self) -> LineFacts {
        LineFacts {
            facts: self.facts,
            groups: self.groups,
            bad_lines: self.bad_lines,
        }
    }
}

/// Endpoint and model of a group of lines, as a chunk finds them.
type GroupKey = (String, Option<String>);

/// One line's fact, relative to its chunk until absorbed.
#[derive(Clone, Copy, Debug)]
struct ChunkFact {
    offset: u64,
    len: u32,
    /// Index into [`ChunkFacts::groups`], or [`NO_GROUP`].
    group: u32,
    inputs: u32,
    /// Blank lines just before this one in the chunk.
    skipped: u32,
}

/// A chunk's share of a [`FactSink`].
#[derive(Default)]
pub struct ChunkFacts {
    lines: u64,
    facts: Vec<ChunkFact>,
    /// Blank lines after the last fact (or in all, if there is none).
    trailing_blanks: u32,
    groups: Vec<GroupKey>,
    /// 0-based indices in the chunk of lines with errors.
    bad: Vec<u64>,
}

impl ChunkFacts {
    /// The index of the group `(endpoint, model)`, added if new. Lines of a
    /// chunk mostly share one group, so the last one is tried first.
    fn group_of(&mut self, endpoint: &str, model: Option<&str>) -> u32 {
        let matches = |g: &GroupKey| g.0 == endpoint && g.1.as_deref() == model;
        if let Some(last) = self.facts.last().map(|f| f.group) {
            if self.groups.get(last as usize).is_some_and(matches) {
                return last;
            }
        }
        if let Some(i) = self.groups.iter().position(matches) {
            return i as u32;
        }
        self.groups
            .push((endpoint.to_owned(), model.map(str::to_owned)));
        (self.groups.len() - 1) as u32
    }
}

impl LineSink for ChunkFacts {
    fn line(&mut self, line: &SeenLine<'_>) {
        let index = self.lines;
        self.lines += 1;
        if line.has_error {
            self.bad.push(index);
        }
        if line.blank {
            // A chunk holds far fewer than 2^32 lines.
            self.trailing_blanks += 1;
            return;
        }
        let group = match line.read {
            true => self.group_of(line.endpoint.unwrap_or_default(), line.model),
            false => NO_GROUP,
        };
        self.facts.push(ChunkFact {
            offset: line.offset,
            len: line.len,
            group,
            inputs: line.inputs.min(u64::from(u32::MAX)) as u32,
            skipped: std::mem::take(&mut self.trailing_blanks),
        });
    }
}

impl Sink for FactSink {
    type Chunk = ChunkFacts;
    const EVERY_REPEAT: bool = true;

    fn absorb(&mut self, chunk: ChunkFacts, first_line: u64, offset: u64) {
        let map: Vec<u32> = chunk
            .groups
            .into_iter()
            .map(|key| {
                let next = self.groups.len() as u32;
                *self.index.entry(key.clone()).or_insert_with(|| {
                    self.groups.push(Group {
                        endpoint: key.0,
                        model: key.1,
                    });
                    next
                })
            })
            .collect();
        self.facts.reserve(chunk.facts.len());
        for f in &chunk.facts {
            let group = map.get(f.group as usize).copied();
            let fact = Fact {
                skipped: f.skipped,
                ..Fact::new(offset + f.offset, f.len, group, f.inputs)
            };
            let pending = std::mem::take(&mut self.blanks_pending);
            push_after_blanks(&mut self.facts, pending, fact);
        }
        self.blanks_pending += u64::from(chunk.trailing_blanks);
        self.bad_lines
            .extend(chunk.bad.iter().map(|l| first_line + 1 + l));
    }

    fn repeated(&mut self, lines: &[u64]) {
        self.bad_lines.extend_from_slice(lines);
        self.bad_lines.sort_unstable();
        self.bad_lines.dedup();
    }
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
        let split = crate::split::SplitConfig::within(crate::Provider::OpenAi.profile());
        let mut cfg = split.validation();
        cfg.keep = Some(0);
        let sink = FactSink::default();
        let (report, sink) = crate::validate::validate_bytes_into(&text, &cfg, sink, &|_| {});
        let facts = sink.into_facts().facts;
        assert_eq!(facts.len(), 2);
        assert_eq!(report.summary.blank_lines, 1_000_002);
        let mut numbers = LineNumbers::default();
        let lines: Vec<u64> = facts.iter().map(|f| numbers.of(f)).collect();
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
