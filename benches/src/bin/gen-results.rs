//! Write a request file and its shuffled output and error files, as a
//! finished OpenAI batch would leave them, for merge benchmarks.
//!
//! Usage: gen-results --requests N --out-dir DIR [--seed N]
//! Writes DIR/requests.jsonl, DIR/output.jsonl (about 90% successes) and
//! DIR/errors.jsonl (the rest: model rejections, expired, cancelled).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use batchkit_benches::Rng;

fn main() -> std::io::Result<()> {
    let mut n = 1_000_000u64;
    let mut seed = 7u64;
    let mut dir = PathBuf::from("benches/data/merge");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match a.as_str() {
            "--requests" => n = value().replace('_', "").parse().unwrap_or(n),
            "--seed" => seed = value().parse().unwrap_or(seed),
            "--out-dir" => dir = PathBuf::from(value()),
            _ => {
                eprintln!("usage: gen-results --requests N --out-dir DIR [--seed N]");
                std::process::exit(2);
            }
        }
    }
    std::fs::create_dir_all(&dir)?;
    let mut rng = Rng::new(seed);
    let open = |name: &str| -> std::io::Result<BufWriter<File>> {
        Ok(BufWriter::with_capacity(
            1 << 20,
            File::create(dir.join(name))?,
        ))
    };
    let mut requests = open("requests.jsonl")?;
    let mut line = String::new();
    for i in 0..n {
        batchkit_benches::line(&mut rng, i, batchkit_benches::Shape::Chat, &mut line);
        line.push('\n');
        requests.write_all(line.as_bytes())?;
    }
    requests.flush()?;
    // Results come back in no particular order.
    let mut order: Vec<u64> = (0..n).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut output = open("output.jsonl")?;
    let mut errors = open("errors.jsonl")?;
    for i in order {
        line.clear();
        let fate = rng.below(100);
        let id = format!("request-{i}");
        let (sink, text) = match fate {
            0..=89 => {
                let words = 20 + rng.below(80);
                let mut content = String::new();
                for w in 0..words {
                    content.push_str(if w % 7 == 0 { "réponse " } else { "answer " });
                }
                let _ = write!(
                    line,
                    r#"{{"id":"batch_req_{i}","custom_id":"{id}","response":{{"status_code":200,"request_id":"req_{i}","body":{{"id":"chatcmpl-{i}","object":"chat.completion","created":1732000000,"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{},"completion_tokens":{words},"total_tokens":{}}},"system_fingerprint":"fp_0ba0d124f1"}}}},"error":null}}"#,
                    30 + rng.below(400),
                    words + 500
                );
                (&mut output, line.as_str())
            }
            90..=94 => {
                let _ = write!(
                    line,
                    r#"{{"id":"batch_req_{i}","custom_id":"{id}","response":{{"status_code":400,"request_id":"req_{i}","body":{{"error":{{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}}}}},"error":null}}"#
                );
                (&mut errors, line.as_str())
            }
            95..=97 => {
                let _ = write!(
                    line,
                    r#"{{"id":"batch_req_{i}","custom_id":"{id}","response":null,"error":{{"code":"batch_expired","message":"This request could not be executed before the completion window expired."}}}}"#
                );
                (&mut errors, line.as_str())
            }
            _ => {
                let _ = write!(
                    line,
                    r#"{{"id":"batch_req_{i}","custom_id":"{id}","response":null,"error":{{"code":"batch_cancelled","message":"This request was cancelled."}}}}"#
                );
                (&mut errors, line.as_str())
            }
        };
        sink.write_all(text.as_bytes())?;
        sink.write_all(b"\n")?;
    }
    output.flush()?;
    errors.flush()?;
    eprintln!("gen-results: {n} requests in {}", dir.display());
    Ok(())
}
