//! Write a request file and its shuffled output and error files, as a
//! finished OpenAI batch would leave them, for merge benchmarks.
//!
//! Usage: gen-results --requests N --out-dir DIR [--seed N]
//! Writes DIR/requests.jsonl, DIR/output.jsonl (about 90% successes) and
//! DIR/errors.jsonl (the rest: model rejections, expired, cancelled).

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
        let sink = if batchkit_benches::result_line(&mut rng, i, &mut line) {
            &mut output
        } else {
            &mut errors
        };
        sink.write_all(line.as_bytes())?;
        sink.write_all(b"\n")?;
    }
    output.flush()?;
    errors.flush()?;
    eprintln!("gen-results: {n} requests in {}", dir.display());
    Ok(())
}
