//! Estimating the input tokens of a request offline, with the real BPE
//! encodings (`o200k_base`, `cl100k_base`), embedded in the binary: nothing
//! is downloaded at run time ([`tables`] says how they are built and kept).
//!
//! What is counted follows what the provider counts as input:
//! - chat: for each message, 3 tokens of framing plus the tokens of its
//!   `role`, its text `content` (a string, or the `text` of its parts) and its
//!   `name` (plus 1); then 3 tokens that prime the reply (OpenAI cookbook,
//!   "How to count tokens with tiktoken");
//! - completions: the `prompt` (a string, strings, or token ids);
//! - embeddings and moderations: the `input` (likewise);
//! - responses: `instructions`, then `input` as a string or as message items
//!   counted like chat messages.
//!
//! Images, audio and tool definitions are not counted: the figure is an
//! estimate for planning quotas, not a bill.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// A BPE encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// GPT-4o, GPT-4.1, GPT-5, o-series.
    O200kBase,
    /// GPT-4, GPT-3.5, text-embedding-3, ada-002.
    Cl100kBase,
}

pub(crate) mod tables;

static O200K_BASE: LazyLock<tables::Tokenizer> =
    LazyLock::new(|| tables::Tokenizer::load(&tables::O200K_BASE));
static CL100K_BASE: LazyLock<tables::Tokenizer> =
    LazyLock::new(|| tables::Tokenizer::load(&tables::CL100K_BASE));

/// The encoding used for models batchkit does not recognise.
pub const DEFAULT_ENCODING: Encoding = Encoding::O200kBase;

const PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;

impl Encoding {
    /// The encoding's name, as tiktoken spells it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::O200kBase => "o200k_base",
            Encoding::Cl100kBase => "cl100k_base",
        }
    }

    /// The encoding a model uses, if batchkit recognises the model.
    pub fn for_model(model: &str) -> Option<Encoding> {
        // A fine-tuned model ("ft:gpt-4o-mini:org::id") uses its base's.
        let m = model.strip_prefix("ft:").unwrap_or(model);
        const O200K: &[&str] = &[
            "gpt-4o",
            "gpt-4.1",
            "gpt-4.5",
            "gpt-5",
            "o1",
            "o3",
            "o4",
            "chatgpt-4o",
            "gpt-oss",
            "omni-moderation",
        ];
        const CL100K: &[&str] = &[
            "gpt-4",
            "gpt-3.5",
            "gpt-35",
            "text-embedding-3",
            "text-embedding-ada-002",
            "davinci-002",
            "babbage-002",
        ];
        // O200K first: "gpt-4o" also starts with "gpt-4".
        if O200K.iter().any(|p| m.starts_with(p)) {
            Some(Encoding::O200kBase)
        } else if CL100K.iter().any(|p| m.starts_with(p)) {
            Some(Encoding::Cl100kBase)
        } else {
            None
        }
    }

    /// Tokens in `text`.
    pub fn count(self, text: &str) -> u64 {
        match self {
            Encoding::O200kBase => O200K_BASE.count(text),
            Encoding::Cl100kBase => CL100K_BASE.count(text),
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An encoding name that batchkit does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encoding '{0}' (known: o200k_base, cl100k_base)")]
pub struct UnknownEncoding(pub String);

impl FromStr for Encoding {
    type Err = UnknownEncoding;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "o200k_base" | "o200k" => Ok(Encoding::O200kBase),
            "cl100k_base" | "cl100k" => Ok(Encoding::Cl100kBase),
            _ => Err(UnknownEncoding(s.to_owned())),
        }
    }
}

/// What a request line holds, in tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTokens {
    /// Estimated input tokens.
    pub input: u64,
    /// The output cap it sets (`max_tokens`, `max_completion_tokens` or
    /// `max_output_tokens`), 0 if none.
    pub max_output: u64,
}

#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow, default)]
    body: Option<Body<'a>>,
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    messages: Option<Vec<Message<'a>>>,
    #[serde(borrow, default)]
    prompt: Option<Texts<'a>>,
    #[serde(borrow, default)]
    input: Option<Texts<'a>>,
    #[serde(borrow, default)]
    instructions: Option<Cow<'a, str>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Parts(#[serde(borrow)] Vec<Part<'a>>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
}

/// A prompt or input: text, texts, token ids, or (Responses) items.
#[derive(Deserialize)]
#[serde(untagged)]
enum Texts<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    List(#[serde(borrow)] Vec<Item<'a>>),
    Other(IgnoredAny),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Item<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Token(#[allow(dead_code)] serde_json::Number),
    Tokens(Vec<IgnoredAny>),
    Message(#[serde(borrow)] Message<'a>),
    Other(IgnoredAny),
}

/// Counts tokens of request lines.
#[derive(Clone, Copy, Debug)]
pub struct TokenCounter {
    /// Use this encoding whatever the model (`--encoding`).
    pub forced: Option<Encoding>,
}

impl TokenCounter {
    /// The encoding for a request to `model`.
    pub fn encoding(&self, model: Option<&str>) -> Encoding {
        self.forced
            .or_else(|| model.and_then(Encoding::for_model))
            .unwrap_or(DEFAULT_ENCODING)
    }

    /// Tokens of one request line (without its ending). A line that is not
    /// a request counts 0.
    pub fn count_line(&self, line: &str) -> RequestTokens {
        match serde_json::from_str::<Line<'_>>(line) {
            Ok(parsed) => self.count_parsed(parsed),
            Err(_) => RequestTokens::default(),
        }
    }

    /// As [`TokenCounter::count_line`], with the line read by any serde
    /// deserializer (the caller checks what follows the object). The
    /// parsers bench compares `serde_json` and simd-json this way
    /// (`cargo bench -p batchkit-benches --features criterion --bench validate -- parsers/tokens`).
    pub fn count_from<'de, D: serde::Deserializer<'de>>(&self, de: D) -> RequestTokens {
        match Line::deserialize(de) {
            Ok(parsed) => self.count_parsed(parsed),
            Err(_) => RequestTokens::default(),
        }
    }

    /// The tokens a block of whole request lines enqueues, as quotas
    /// count them: each line's estimated input plus its output cap, summed
    /// over the lines (counted in parallel). A line that is not a request
    /// counts 0; a byte order mark is skipped.
    pub fn enqueued(&self, block: &[u8]) -> u64 {
        use rayon::prelude::*;
        block
            .par_split(|&b| b == b'\n')
            .map(|line| {
                let text = String::from_utf8_lossy(line);
                let t = self.count_line(text.trim_start_matches('\u{feff}'));
                t.input.saturating_add(t.max_output)
            })
            .reduce(|| 0, u64::saturating_add)
    }

    fn count_parsed(&self, parsed: Line<'_>) -> RequestTokens {
        let Line { body: Some(body) } = parsed else {
            return RequestTokens::default();
        };
        let enc = self.encoding(body.model.as_deref());
        let mut input = 0;
        if let Some(messages) = &body.messages {
            input += REPLY_PRIMING + messages.iter().map(|m| message(enc, m)).sum::<u64>();
        }
        if let Some(i) = &body.instructions {
            input += enc.count(i);
        }
        for texts in [&body.prompt, &body.input].into_iter().flatten() {
            input += match texts {
                Texts::Text(t) => enc.count(t),
                Texts::List(items) => items.iter().map(|i| item(enc, i)).sum(),
                Texts::Other(_) => 0,
            };
        }
        let max_output = body
            .max_tokens
            .or(body.max_completion_tokens)
            .or(body.max_output_tokens)
            .unwrap_or(0);
        RequestTokens { input, max_output }
    }
}

fn message(enc: Encoding, m: &Message<'_>) -> u64 {
    let mut n = PER_MESSAGE;
    if let Some(role) = &m.role {
        n += enc.count(role);
    }
    match &m.content {
        Some(Content::Text(t)) => n += enc.count(t),
        Some(Content::Parts(parts)) => {
            n += parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .map(|t| enc.count(t))
                .sum::<u64>();
        }
        _ => {}
    }
    if let Some(name) = &m.name {
        n += enc.count(name) + 1;
    }
    n
}

fn item(enc: Encoding, i: &Item<'_>) -> u64 {
    match i {
        Item::Text(t) => enc.count(t),
        // A list of token ids is counted by the caller's list: one each.
        Item::Token(_) => 1,
        Item::Tokens(ids) => ids.len() as u64,
        Item::Message(m) => message(enc, m),
        Item::Other(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_enqueues_input_and_output_caps() {
        let c = TokenCounter { forced: None };
        let one = r#"{"custom_id":"a","body":{"model":"gpt-4o","messages":[{"role":"user","content":"Hello, world!"}],"max_tokens":100}}"#;
        let each = c.count_line(one);
        assert_eq!(each.max_output, 100);
        let block = format!("\u{feff}{one}\n\nnot json\n{one}");
        assert_eq!(c.enqueued(block.as_bytes()), 2 * (each.input + 100));
        assert_eq!(c.enqueued(b""), 0);
    }

    #[test]
    fn reference_counts() {
        // Reference counts from tiktoken for the same strings.
        assert_eq!(Encoding::O200kBase.count("Hello, world!"), 4);
        assert_eq!(Encoding::Cl100kBase.count("Hello, world!"), 4);
        assert_eq!(Encoding::O200kBase.count("日本語のテキスト 🎉"), 8);
        assert_eq!(Encoding::Cl100kBase.count("日本語のテキスト 🎉"), 11);
        assert_eq!(
            Encoding::Cl100kBase.count("tiktoken is great!"),
            6,
            "the tiktoken README's example"
        );
        assert_eq!(Encoding::O200kBase.count(""), 0);
    }

    #[test]
    fn models_to_encodings() {
        assert_eq!(
            Encoding::for_model("gpt-4o-mini"),
            Some(Encoding::O200kBase)
        );
        assert_eq!(
            Encoding::for_model("gpt-4.1-nano"),
            Some(Encoding::O200kBase)
        );
        assert_eq!(Encoding::for_model("o3-mini"), Some(Encoding::O200kBase));
        assert_eq!(
            Encoding::for_model("gpt-4-turbo"),
            Some(Encoding::Cl100kBase)
        );
        assert_eq!(
            Encoding::for_model("gpt-3.5-turbo-0125"),
            Some(Encoding::Cl100kBase)
        );
        assert_eq!(
            Encoding::for_model("text-embedding-3-small"),
            Some(Encoding::Cl100kBase)
        );
        assert_eq!(
            Encoding::for_model("ft:gpt-4o-mini:acme::x1"),
            Some(Encoding::O200kBase)
        );
        assert_eq!(Encoding::for_model("llama-3.3-70b"), None);
    }

    #[test]
    fn chat_counting_follows_the_cookbook() {
        let c = TokenCounter { forced: None };
        let line = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o","messages":[{"role":"system","content":"Hello, world!"},{"role":"user","content":[{"type":"text","text":"Hello, world!"}],"name":"bob"}],"max_tokens":100}}"#;
        let enc = Encoding::O200kBase;
        let want =
            3 + (3 + enc.count("system") + 4) + (3 + enc.count("user") + 4 + enc.count("bob") + 1);
        assert_eq!(
            c.count_line(line),
            RequestTokens {
                input: want,
                max_output: 100
            }
        );
    }

    #[test]
    fn prompts_and_inputs() {
        let c = TokenCounter { forced: None };
        let emb = r#"{"body":{"model":"text-embedding-3-small","input":["Hello, world!","Hello, world!",[1,2,3]]}}"#;
        assert_eq!(c.count_line(emb).input, 4 + 4 + 3);
        let ids = r#"{"body":{"model":"text-embedding-3-small","input":[5,6,7,8]}}"#;
        assert_eq!(c.count_line(ids).input, 4);
        let resp = r#"{"body":{"model":"gpt-4.1","instructions":"Hello, world!","input":"Hello, world!","max_output_tokens":7}}"#;
        assert_eq!(
            c.count_line(resp),
            RequestTokens {
                input: 8,
                max_output: 7
            }
        );
        assert_eq!(c.count_line("not json").input, 0);
    }
}
