//! Write a deterministic benchmark corpus to a file or stdout.
//!
//! Usage: gen-corpus [--bytes N] [--lines N] [--short] [--seed N] [OUT]

use std::io::{BufWriter, Write};

fn main() -> std::io::Result<()> {
    let mut bytes = 1_000_000_000u64;
    let mut lines = u64::MAX;
    let mut seed = 42u64;
    let mut shape = batchkit_benches::Shape::Chat;
    let mut out: Option<String> = None;
    let mut args = std::env::args().skip(1);
    let number = |v: Option<String>| -> u64 {
        v.and_then(|s| s.replace('_', "").parse().ok())
            .unwrap_or_else(|| {
                eprintln!("gen-corpus: expected a number");
                std::process::exit(2)
            })
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bytes" => bytes = number(args.next()),
            "--lines" => {
                lines = number(args.next());
                bytes = u64::MAX;
            }
            "--seed" => seed = number(args.next()),
            "--short" => shape = batchkit_benches::Shape::Short,
            "-h" | "--help" => {
                println!("usage: gen-corpus [--bytes N] [--lines N] [--short] [--seed N] [OUT]");
                return Ok(());
            }
            _ => out = Some(a),
        }
    }
    let sink: Box<dyn Write> = match out.as_deref() {
        None | Some("-") => Box::new(std::io::stdout().lock()),
        Some(path) => Box::new(std::fs::File::create(path)?),
    };
    let mut w = BufWriter::with_capacity(1 << 20, sink);
    let (n, b) = batchkit_benches::write_corpus(&mut w, seed, shape, bytes, lines)?;
    w.flush()?;
    eprintln!("gen-corpus: {n} lines, {b} bytes");
    Ok(())
}
