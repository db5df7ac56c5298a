//! Criterion benchmarks of the hot paths (validation, line parsing,
//! duplicate detection, split planning, token counting) on deterministic
//! corpora, reported as bytes (or ids) per second.

use std::borrow::Cow;

use batchkit_benches::{Shape, corpus, results_corpus};
use batchkit_core::internals::{
    IdEntry, find_repeats, parse_line, parse_line_serde, scan_bytes, view_from,
};
use batchkit_core::lines::Lines;
use batchkit_core::results::{classify, scan_success};
use batchkit_core::split::{Plan, SplitConfig, validate_and_write};
use batchkit_core::tokens::TokenCounter;
use batchkit_core::{Config, Provider, validate_bytes};
use criterion::measurement::WallTime;
use criterion::{
    BatchSize, BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main,
};
use serde::Deserialize;
use serde::de::IgnoredAny;

const CORPUS_BYTES: u64 = 32 << 20;

fn config() -> Config {
    let mut cfg = Config::new(Provider::OpenAi);
    // The corpus is larger than one OpenAI batch; check every rule but the
    // size limits so the work measured is the per-line work.
    cfg.limits = Default::default();
    cfg
}

fn validate(c: &mut Criterion) {
    for (name, shape) in [("chat", Shape::Chat), ("short", Shape::Short)] {
        let data = corpus(42, shape, CORPUS_BYTES);
        let mut g = c.benchmark_group(format!("validate/{name}"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.sample_size(10);
        let cfg = config();
        g.bench_function("all_threads", |b| b.iter(|| validate_bytes(&data, &cfg)));
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build();
        if let Ok(pool) = one {
            g.bench_function("one_thread", |b| {
                b.iter(|| pool.install(|| validate_bytes(&data, &cfg)))
            });
        }
        g.finish();
    }
}

fn parse(c: &mut Criterion) {
    let data = corpus(42, Shape::Chat, 8 << 20);
    let text = std::str::from_utf8(&data).unwrap_or_default();
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("parse_line/chat", |b| {
        b.iter(|| text.lines().filter(|l| parse_line(l).is_ok()).count())
    });
    g.finish();
}

/// The same envelope (custom_id, method, url, body.model, body.stream and
/// the endpoint's body checks) read by batchkit's scanner over the raw
/// bytes, as `validate` does (UTF-8 checked in the strings that need it);
/// by serde_json through batchkit's visitor (one UTF-8 pass over the
/// chunk, then `from_str` per line), as `validate` did before the scanner
/// and still does for the lines the scanner declines; and by simd-json's
/// serde deserializer over its tape. simd-json unescapes in place, so each
/// round copies the chunk into a mutable buffer first (counted in its time),
/// and reuses one set of buffers for all lines; `simd_json_tape_only` builds the tape and reads
/// nothing, its lower bound. One thread: the per-core speed.
fn parsers(c: &mut Criterion) {
    for (name, shape) in [
        ("chat", Shape::Chat),
        ("short", Shape::Short),
        ("embeddings", Shape::Embeddings),
        ("long", Shape::Long),
    ] {
        let data = corpus(42, shape, 8 << 20);
        let mut g = c.benchmark_group(format!("parsers/{name}"));
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.sample_size(10);
        let with_scanner = || {
            Lines::new(&data)
                .filter(|l| !l.bytes.is_empty() && scan_bytes(l.bytes).is_some())
                .count()
        };
        let with_serde_json = || {
            let text = simdutf8::basic::from_utf8(&data).unwrap_or_default();
            text.lines().filter(|l| parse_line_serde(l).is_ok()).count()
        };
        let mut buffers = simd_json::Buffers::new(64 << 10);
        let mut chunk = Vec::with_capacity(data.len());
        let with_simd_json = || {
            lines_parsed(&data, &mut chunk, |line| {
                simd_json::Deserializer::from_slice_with_buffers(line, &mut buffers)
                    .is_ok_and(|mut de| view_from(&mut de).is_ok())
            })
        };
        // All read every line of the corpus (the scanner declines none).
        bench_readers(
            &mut g,
            &data,
            vec![
                ("batchkit_scanner", Box::new(with_scanner)),
                ("serde_json", Box::new(with_serde_json)),
                ("simd_json", Box::new(with_simd_json)),
            ],
        );
        g.finish();
    }
}

/// What simd-json is asked of a result line: less than merge needs, so a
/// lower bound of its cost. serde's derive cannot hand out the body's raw
/// text from simd-json (it has no `RawValue`), which merge copies verbatim,
/// nor does this read the error's code and message as `classify` does.
#[derive(Deserialize)]
struct ResultFields<'a> {
    #[serde(borrow)]
    custom_id: Option<Cow<'a, str>>,
    response: Option<ResponseFields>,
    #[allow(dead_code)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct ResponseFields {
    status_code: Option<i64>,
    #[allow(dead_code)]
    body: Option<IgnoredAny>,
}

/// The other two uses the issue named for simd-json, on their own data, one
/// thread. Result lines (90% chat successes of about 700 bytes, the rest
/// rejections, expiries and cancellations): merge's reading (the scanner
/// for plain successes, `classify` for the rest), `classify` alone
/// (`serde_json`), and simd-json's serde deserializer for a subset of the
/// fields and over its tape alone. Request lines for token counting:
/// `TokenCounter` reading each line with `serde_json` and with simd-json,
/// then counting its tokens.
fn other_parsers(c: &mut Criterion) {
    let data = results_corpus(42, 8 << 20);
    let mut g = c.benchmark_group("parsers/results");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    let with_merge_path = || {
        Lines::new(&data)
            .filter(|l| match scan_success(l.bytes) {
                Some((id, _, body)) => !id.is_empty() && !body.is_empty(),
                None => {
                    simdutf8::basic::from_utf8(l.bytes).is_ok_and(|text| classify(text).is_ok())
                }
            })
            .count()
    };
    let with_serde_json = || {
        let text = simdutf8::basic::from_utf8(&data).unwrap_or_default();
        text.lines().filter(|l| classify(l).is_ok()).count()
    };
    let mut buffers = simd_json::Buffers::new(64 << 10);
    let mut chunk = Vec::with_capacity(data.len());
    let with_simd_json = || {
        lines_parsed(&data, &mut chunk, |line| {
            simd_json::serde::from_slice_with_buffers::<ResultFields<'_>>(line, &mut buffers)
                .is_ok_and(|r| {
                    r.custom_id.is_some()
                        && r.response.is_none_or(|resp| resp.status_code != Some(0))
                })
        })
    };
    bench_readers(
        &mut g,
        &data,
        vec![
            ("merge_scanner_then_classify", Box::new(with_merge_path)),
            ("serde_json_classify", Box::new(with_serde_json)),
            ("simd_json_fields", Box::new(with_simd_json)),
        ],
    );
    g.finish();

    let data = corpus(42, Shape::Chat, 4 << 20);
    let counter = TokenCounter { forced: None };
    let mut g = c.benchmark_group("parsers/tokens");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    let with_serde_json = || {
        let text = simdutf8::basic::from_utf8(&data).unwrap_or_default();
        text.lines()
            .map(|l| counter.count_line(l).input)
            .sum::<u64>()
    };
    let mut buffers = simd_json::Buffers::new(64 << 10);
    let mut chunk = Vec::with_capacity(data.len());
    let mut with_simd_json = || {
        lines_summed(&data, &mut chunk, |line| {
            simd_json::Deserializer::from_slice_with_buffers(line, &mut buffers)
                .map_or(0, |mut de| counter.count_from(&mut de).input)
        })
    };
    assert_eq!(with_serde_json(), with_simd_json());
    g.bench_function("serde_json", |b| b.iter(with_serde_json));
    g.bench_function("simd_json", |b| b.iter(&mut with_simd_json));
    g.finish();
}

/// A reader of a whole corpus: how many of its lines it read.
type Reader<'a> = Box<dyn FnMut() -> usize + 'a>;

/// Hold each reader to the corpus's line count, then bench them all, with
/// simd-json's bare tape last: its floor, reading no field.
fn bench_readers<'a>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    data: &'a [u8],
    mut readers: Vec<(&str, Reader<'a>)>,
) {
    let mut buffers = simd_json::Buffers::new(64 << 10);
    let mut chunk = Vec::with_capacity(data.len());
    readers.push((
        "simd_json_tape_only",
        Box::new(move || {
            lines_parsed(data, &mut chunk, |line| {
                simd_json::to_tape_with_buffers(line, &mut buffers).is_ok()
            })
        }),
    ));
    let lines = data.iter().filter(|&&b| b == b'\n').count();
    for (name, read) in &mut readers {
        assert_eq!(read(), lines, "{name} reads every line");
    }
    for (name, mut read) in readers {
        g.bench_function(name, |b| b.iter(&mut read));
    }
}

/// Copy `data` into `chunk` (simd-json parses in place) and count the
/// non-empty lines that `parse` accepts.
fn lines_parsed(
    data: &[u8],
    chunk: &mut Vec<u8>,
    mut parse: impl FnMut(&mut [u8]) -> bool,
) -> usize {
    lines_summed(data, chunk, |l| usize::from(parse(l)))
}

/// Copy `data` into `chunk` and add up what `read` gives for each non-empty
/// line.
fn lines_summed<T: std::iter::Sum>(
    data: &[u8],
    chunk: &mut Vec<u8>,
    read: impl FnMut(&mut [u8]) -> T,
) -> T {
    chunk.clear();
    chunk.extend_from_slice(data);
    chunk
        .split_mut(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(read)
        .sum()
}

fn dedup(c: &mut Criterion) {
    let ids: Vec<IdEntry> = (0..1_000_000u64)
        .map(|i| IdEntry::new(&format!("request-{i}"), i + 1))
        .collect();
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.sample_size(10);
    g.bench_function("find_repeats/1M", |b| {
        b.iter_batched(
            || ids.clone(),
            |v| find_repeats(v, Some(1000)),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn split_config(count_tokens: bool) -> SplitConfig {
    SplitConfig {
        count_tokens,
        ..SplitConfig::within(Provider::OpenAi.profile())
    }
}

fn split(c: &mut Criterion) {
    let data = corpus(42, Shape::Chat, CORPUS_BYTES);
    let mut g = c.benchmark_group("split");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    let cfg = split_config(false);
    g.bench_function("plan/chat", |b| {
        b.iter(|| Plan::new(&data, &cfg, Vec::new(), &|_| {}).map(|p| p.chunks.len()))
    });
    // Validate, cut and write in one pass (direct I/O), as `batchkit split`
    // does; chunks of 5,000 requests, so that several are written.
    let mut small = split_config(false);
    small.limits.max_requests = Some(5000);
    // Blocks scaled to the 32 MiB corpus (split uses 32 MiB blocks on
    // inputs of gigabytes), so that writing overlaps checking here too.
    let mut vcfg = small.validation();
    vcfg.block_size = 4 << 20;
    let place = std::env::temp_dir();
    g.bench_function("one_pass_write/chat", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(&place).expect("a temporary folder"),
            |dir| {
                let one =
                    validate_and_write(&data, &small, &vcfg, dir.path(), true, &|_| {}, &|_| {})
                        .expect("written");
                let staged = one.staged.expect("a valid corpus");
                staged
                    .commit(dir.path(), "corpus", "corpus", &small)
                    .expect("committed");
                dir
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn tokens(c: &mut Criterion) {
    let data = corpus(42, Shape::Chat, 4 << 20);
    let text = std::str::from_utf8(&data).unwrap_or_default();
    let counter = TokenCounter { forced: None };
    let mut g = c.benchmark_group("tokens");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("count_line/chat/one_thread", |b| {
        b.iter(|| {
            text.lines()
                .map(|l| counter.count_line(l).input)
                .sum::<u64>()
        })
    });
    let cfg = split_config(true);
    g.bench_function("plan_with_tokens/chat/all_threads", |b| {
        b.iter(|| Plan::new(&data, &cfg, Vec::new(), &|_| {}).map(|p| p.chunks.len()))
    });
    g.finish();
}

criterion_group!(
    benches,
    validate,
    parse,
    parsers,
    other_parsers,
    dedup,
    split,
    tokens
);
criterion_main!(benches);
