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

    /// The line's group, if it is a request that takes part.
    pub fn group(&self) -> Option<usize> {
        (self.group != NO_GROUP).then_some(self.group as usize)
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
