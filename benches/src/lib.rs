//! Deterministic, realistic batch request corpora for benchmarks.
//!
//! Lines look like real chat batches: a system and a user message of varied
//! length (median around 670 bytes, a long tail), unicode text, and about 10%
//! of lines with `\uXXXX` escapes, as in `shared/PERF-NOTES.md`'s corpus.
//! The same seed always gives the same bytes.

use std::io::{self, Write};

/// A small, fast, deterministic generator (xorshift64*).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is remapped).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "the",
    "model",
    "answer",
    "question",
    "summarise",
    "document",
    "customer",
    "review",
    "translate",
    "classify",
    "sentiment",
    "product",
    "délicieux",
    "naïve",
    "café",
    "Straße",
    "日本語",
    "テキスト",
    "Ελληνικά",
    "русский",
    "中文",
    "العربية",
    "🎉",
    "👍",
    "data",
    "batch",
    "request",
    "please",
    "explain",
    "briefly",
    "with",
    "examples",
    "and",
    "of",
    "in",
    "a",
];

const SYSTEMS: &[&str] = &[
    "You are a helpful assistant.",
    "You are a careful annotator. Answer with one label.",
    "Translate the user's text into English. Keep the tone.",
];

/// What kind of requests to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Chat completions with realistic message lengths.
    Chat,
    /// Short chat lines (about 150 bytes), for line-count stress tests.
    Short,
    /// Embeddings requests: an array of 1 to 64 short inputs each.
    Embeddings,
    /// Long chat lines (documents of 15 to 60 KB), escapes in one of ten.
    Long,
}

fn words(rng: &mut Rng, n: u64, out: &mut String) {
    for i in 0..n {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
}

/// Append line `i` (no newline) of a corpus to `out`.
pub fn line(rng: &mut Rng, i: u64, shape: Shape, out: &mut String) {
    use std::fmt::Write as _;
    out.clear();
    if shape == Shape::Short {
        let _ = write!(
            out,
            r#"{{"custom_id":"r{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"q{}"}}]}}}}"#,
            rng.below(1_000_000)
        );
        return;
    }
    if shape == Shape::Embeddings {
        let _ = write!(
            out,
            r#"{{"custom_id":"emb-{i}","method":"POST","url":"/v1/embeddings","body":{{"model":"text-embedding-3-small","input":["#
        );
        let mut text = String::new();
        for k in 0..1 + rng.below(64) {
            text.clear();
            let n = 5 + rng.below(30);
            words(rng, n, &mut text);
            out.push_str(if k == 0 { "\"" } else { ",\"" });
            out.push_str(&text);
            out.push('"');
        }
        out.push_str("]}}");
        return;
    }
    // Log-normal-ish length: most lines a few hundred bytes, some many KB.
    let n = match rng.below(100) {
        _ if shape == Shape::Long => 2_500 + rng.below(7_500),
        0..=49 => 20 + rng.below(40),
        50..=89 => 50 + rng.below(60),
        90..=98 => 110 + rng.below(300),
        _ => 400 + rng.below(1500),
    };
    let mut content = String::new();
    words(rng, n, &mut content);
    let escaped = rng.below(10) == 0;
    let system = SYSTEMS[rng.below(SYSTEMS.len() as u64) as usize];
    let _ = write!(
        out,
        r#"{{"custom_id":"request-{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"{content}"#
    );
    if escaped {
        out.push_str(r#" \u00e9\u00e8 \ud83d\ude00 \"quoted\"\n\tend"#);
    }
    let _ = write!(
        out,
        r#""}}],"max_tokens":{},"temperature":0.{}}}}}"#,
        64 + rng.below(960),
        rng.below(10)
    );
}

/// Write result line `i` (no newline) to `out`, as a finished OpenAI batch
/// writes it: about 90% chat successes, then model rejections (400),
/// expired and cancelled requests. Returns whether the line belongs in the
/// output file (`true`) or the error file.
pub fn result_line(rng: &mut Rng, i: u64, out: &mut String) -> bool {
    use std::fmt::Write as _;
    let id = format!("request-{i}");
    match rng.below(100) {
        0..=89 => {
            let words = 20 + rng.below(80);
            let mut content = String::new();
            for w in 0..words {
                content.push_str(if w % 7 == 0 { "réponse " } else { "answer " });
            }
            let _ = write!(
                out,
                r#"{{"id":"batch_req_{i}","custom_id":"{id}","response":{{"status_code":200,"request_id":"req_{i}","body":{{"id":"chatcmpl-{i}","object":"chat.completion","created":1732000000,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{},"completion_tokens":{words},"total_tokens":{}}},"system_fingerprint":"fp_0ba0d124f1"}}}},"error":null}}"#,
                30 + rng.below(400),
                words + 500
            );
            true
        }
        90..=94 => {
            let _ = write!(
                out,
                r#"{{"id":"batch_req_{i}","custom_id":"{id}","response":{{"status_code":400,"request_id":"req_{i}","body":{{"error":{{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}}}}},"error":null}}"#
            );
            false
        }
        95..=97 => {
            let _ = write!(
                out,
                r#"{{"id":"batch_req_{i}","custom_id":"{id}","response":null,"error":{{"code":"batch_expired","message":"This request could not be executed before the completion window expired."}}}}"#
            );
            false
        }
        _ => {
            let _ = write!(
                out,
                r#"{{"id":"batch_req_{i}","custom_id":"{id}","response":null,"error":{{"code":"batch_cancelled","message":"This request was cancelled."}}}}"#
            );
            false
        }
    }
}

/// About `bytes` bytes of result lines in memory: output and error lines
/// mixed, as merge reads them.
pub fn results_corpus(seed: u64, bytes: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let (mut out, mut line) = (Vec::new(), String::new());
    let mut i = 0;
    while out.len() < bytes {
        line.clear();
        result_line(&mut rng, i, &mut line);
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
        i += 1;
    }
    out
}

/// Write a corpus of about `bytes` bytes (or `lines` lines, whichever ends
/// first) to `w`. Returns the lines and bytes written.
pub fn write_corpus(
    w: &mut dyn Write,
    seed: u64,
    shape: Shape,
    bytes: u64,
    lines: u64,
) -> io::Result<(u64, u64)> {
    let mut rng = Rng::new(seed);
    let mut buf = String::new();
    let (mut n, mut written) = (0u64, 0u64);
    while written < bytes && n < lines {
        line(&mut rng, n, shape, &mut buf);
        buf.push('\n');
        w.write_all(buf.as_bytes())?;
        written += buf.len() as u64;
        n += 1;
    }
    Ok((n, written))
}

/// A corpus of about `bytes` bytes in memory.
pub fn corpus(seed: u64, shape: Shape, bytes: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes as usize + 8192);
    // Writing to a Vec cannot fail.
    let _ = write_corpus(&mut out, seed, shape, bytes, u64::MAX);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use batchkit_core::{Config, Provider, validate_bytes};

    #[test]
    fn corpus_is_deterministic_and_valid() {
        let a = corpus(7, Shape::Chat, 200_000);
        assert_eq!(a, corpus(7, Shape::Chat, 200_000));
        let mut cfg = Config::new(Provider::OpenAi);
        cfg.limits = Default::default();
        for shape in [Shape::Chat, Shape::Short, Shape::Embeddings, Shape::Long] {
            let report = validate_bytes(&corpus(7, shape, 200_000), &cfg);
            assert!(report.is_valid(), "{:?}", report.diagnostics.first());
        }
    }
}
