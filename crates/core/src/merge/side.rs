//! One mapped file of a merge, cut into chunks of whole lines, and the
//! reading of ids and results from its lines.

use std::borrow::Cow;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::input::{Input, InputError, Mapped};
use crate::lines::chunk_ranges;
use crate::results::{self, BadResult, Outcome};

const CHUNK: usize = 1 << 20;

pub(super) struct Side {
    pub(super) name: PathBuf,
    pub(super) bytes: Mapped,
    /// Newline-aligned chunks and the 0-based line index each starts at
    /// (0 until indexing has counted the lines).
    pub(super) chunks: Vec<(Range<usize>, u64)>,
    /// Lines in the file, blank ones included (known once indexed).
    pub(super) lines: u64,
}

impl Side {
    pub(super) fn open(path: &Path) -> Result<Side, InputError> {
        let input = Input::open(path)?;
        let name = input.name.clone();
        let bytes = input.into_mapped()?;
        let chunks = chunk_ranges(bytes.bytes(), CHUNK)
            .into_iter()
            .map(|r| (r, 0))
            .collect();
        Ok(Side {
            name,
            bytes,
            chunks,
            lines: 0,
        })
    }

    /// What the first non-blank line looks like, if it is a JSON object
    /// that is clearly one or the other.
    pub(super) fn kind(&self) -> Option<super::FileKind> {
        let first = crate::lines::Lines::new(self.bytes.bytes())
            .map(|l| l.bytes)
            .find(|l| !crate::lines::is_blank(l))?;
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(first).ok()?;
        let result = ["response", "error", "result"]
            .iter()
            .any(|k| v.contains_key(*k));
        if result {
            Some(super::FileKind::Results)
        } else if v.contains_key("body") || v.contains_key("params") {
            Some(super::FileKind::Requests)
        } else {
            None
        }
    }

    pub(super) fn line_at(&self, offset: usize) -> &[u8] {
        let rest = &self.bytes.bytes()[offset.min(self.bytes.bytes().len())..];
        crate::lines::first_line(rest).0
    }

    /// 1-based line numbers of byte offsets (one pass over the file).
    pub(super) fn lines_of(&self, offsets: &[usize]) -> Vec<u64> {
        let mut order: Vec<usize> = (0..offsets.len()).collect();
        order.sort_by_key(|&i| offsets[i]);
        let mut out = vec![0; offsets.len()];
        let (mut line, mut pos) = (1u64, 0usize);
        let bytes = self.bytes.bytes();
        for i in order {
            let target = offsets[i].min(bytes.len());
            line += memchr::memchr_iter(b'\n', &bytes[pos..target]).count() as u64;
            pos = target;
            out[i] = line;
        }
        out
    }
}

/// One input request line, as the merged file needs it.
pub(super) struct Request<'a> {
    pub(super) custom_id: Cow<'a, str>,
    pub(super) body: Option<&'a RawValue>,
}

/// Read by hand rather than derived: a derived reader refuses a repeated
/// key, and a request whose `body` appears twice is still a request (the
/// last one counts, as in Python's `json` and JavaScript's `JSON.parse`).
/// Indexing reads only the id, so such a line is indexed; refusing it here
/// would drop it from the merged output.
impl<'de: 'a, 'a> Deserialize<'de> for Request<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Request<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a request object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut custom_id: Option<Cow<'de, str>> = None;
                let mut body = None;
                while let Some(key) = map.next_key::<Field>()? {
                    match key {
                        Field::CustomId => {
                            let id: Borrowed<'de> = map.next_value()?;
                            if custom_id.is_some() {
                                return Err(serde::de::Error::duplicate_field("custom_id"));
                            }
                            custom_id = Some(id.0);
                        }
                        Field::Body => body = Some(map.next_value::<&'de RawValue>()?),
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let custom_id =
                    custom_id.ok_or_else(|| serde::de::Error::missing_field("custom_id"))?;
                Ok(Request { custom_id, body })
            }
        }
        d.deserialize_map(Fields)
    }
}

/// The keys [`Request`] reads.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    CustomId,
    Body,
    #[serde(other)]
    Other,
}

/// A string borrowed from the line where it has no escapes.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Borrowed<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Inner<'a>(#[serde(borrow)] Cow<'a, str>);
        Inner::deserialize(d).map(|i| Borrowed(i.0))
    }
}

pub(super) fn parse_request(line: &[u8]) -> Result<Request<'_>, String> {
    serde_json::from_str(crate::custom_id::utf8(line)?).map_err(|e| e.to_string())
}

pub(super) fn classify_bytes(line: &[u8]) -> Result<Outcome<'_>, BadResult> {
    crate::custom_id::utf8(line)
        .map_err(|reason| BadResult {
            reason,
            custom_id: None,
        })
        .and_then(results::classify)
}
