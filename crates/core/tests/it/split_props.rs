//! Properties of split: chunks concatenate back to the input, each chunk
//! fits every limit and validates, the manifest matches the files, and with
//! --skip-invalid no line is lost.

use std::collections::BTreeMap;

use batchkit_core::split::{FactSink, Manifest, OnePass, Plan, SplitConfig, validate_and_write};
use batchkit_core::tokens::TokenCounter;
use batchkit_core::validate::validate_bytes_into;
use batchkit_core::{Config, Limits, Provider, validate_bytes};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn request(i: usize, words: usize, inputs: Option<usize>) -> String {
    let text: Vec<&str> = (0..words)
        .map(|w| ["alpha", "βeta", "gamma", "🎉"][w % 4])
        .collect();
    match inputs {
        None => format!(
            r#"{{"custom_id":"req-{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}}}"#,
            text.join(" ")
        ),
        Some(n) => {
            let list: Vec<String> = (0..n)
                .map(|k| format!("\"{} {k}\"", text.join(" ")))
                .collect();
            format!(
                r#"{{"custom_id":"req-{i}","method":"POST","url":"/v1/embeddings","body":{{"model":"text-embedding-3-small","input":[{}]}}}}"#,
                list.join(",")
            )
        }
    }
}

fn config(limits: Limits, max_tokens: Option<u64>) -> SplitConfig {
    SplitConfig {
        profile: Provider::OpenAi.profile(),
        limits,
        max_tokens,
        endpoint: None,
        tokens: TokenCounter { forced: None },
        count_tokens: true,
    }
}

/// Every file in `dir` but the manifest, by name.
fn files(dir: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "manifest.json")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Split `bytes` in one pass (validating and writing at once, blocks of
/// `block` bytes) and by plan-then-write; both must give the same files
/// and manifest. Returns the manifest and the directory.
fn split_both_ways(
    bytes: &[u8],
    cfg: &SplitConfig,
    block: usize,
    direct: bool,
) -> (Manifest, tempfile::TempDir) {
    let plan = Plan::new(bytes, cfg, vec![], &|_| {}).unwrap();
    let planned = tempfile::tempdir().unwrap();
    let manifest = plan
        .write(
            bytes,
            planned.path(),
            "in.jsonl",
            "in",
            cfg,
            !direct,
            &|_| {},
        )
        .unwrap();

    let streamed = tempfile::tempdir().unwrap();
    let mut vcfg = cfg.validation();
    vcfg.block_size = block;
    let one =
        validate_and_write(bytes, cfg, &vcfg, streamed.path(), direct, &|_| {}, &|_| {}).unwrap();
    assert!(one.report.is_valid());
    let staged = one.staged.expect("a valid input is staged");
    let again = staged
        .commit(streamed.path(), "in.jsonl", "in", cfg)
        .unwrap();
    assert_eq!(
        serde_json::to_value(&manifest).unwrap(),
        serde_json::to_value(&again).unwrap()
    );
    assert!(files(planned.path()) == files(streamed.path()));
    (manifest, streamed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn chunks_rebuild_the_input_and_fit_every_limit(
        words in proptest::collection::vec(0usize..40, 1..60),
        endpoints in 0u8..3,
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        max_requests in 1u64..12,
        byte_slack in 0u64..3000,
        token_slack in 0u64..300,
        input_slack in 0u64..6,
        block in 1usize..5000,
        direct in any::<bool>(),
    ) {
        // 0: chat only, 1: embeddings only, 2: both, interleaved.
        let embedding = |w: usize| endpoints == 1 || (endpoints == 2 && w % 2 == 1);
        let eol = if crlf { "\r\n" } else { "\n" };
        let lines: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, &w)| request(i, w, embedding(w).then_some(1 + w % 4)))
            .collect();
        let mut text = lines.join(eol);
        if final_newline {
            text.push_str(eol);
        }
        let bytes = text.as_bytes();
        // Limits at least as large as the largest line, so every line fits.
        let probe = Plan::new(bytes, &config(Limits::default(), None), vec![], &|_| {}).unwrap();
        let biggest = |f: fn(&batchkit_core::split::Fact) -> u64| probe.facts.iter().map(f).max().unwrap_or(0);
        let limits = Limits {
            max_requests: Some(max_requests),
            max_bytes: Some(biggest(|f| f.len as u64) + byte_slack),
            max_embedding_inputs: Some(biggest(|f| f.inputs as u64) + input_slack),
        };
        let token_limit = biggest(|f| f.tokens as u64) + token_slack;
        let cfg = config(limits, Some(token_limit));
        let (manifest, dir) = split_both_ways(bytes, &cfg, block, direct);

        let mut by_group: BTreeMap<(String, Option<String>), Vec<u8>> = BTreeMap::new();
        for c in &manifest.chunks {
            let data = std::fs::read(dir.path().join(&c.path)).unwrap();
            prop_assert!(c.requests <= max_requests);
            prop_assert!(c.bytes <= limits.max_bytes.unwrap());
            prop_assert!(c.embedding_inputs <= limits.max_embedding_inputs.unwrap());
            prop_assert!(c.estimated_tokens.unwrap() <= token_limit);
            prop_assert_eq!(c.bytes, data.len() as u64);
            let sum: String = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect();
            prop_assert_eq!(c.sha256.as_deref(), Some(sum.as_str()));
            let mut vcfg = Config::new(Provider::OpenAi);
            vcfg.limits = limits;
            let report = validate_bytes(&data, &vcfg);
            prop_assert!(report.is_valid(), "{:?}", report.diagnostics.first());
            prop_assert_eq!(report.summary.requests, c.requests);
            by_group.entry((c.endpoint.clone(), c.model.clone())).or_default().extend_from_slice(&data);
        }
        // Each group's chunks, in order, are its lines of the input, in order;
        // with one group, they are the input.
        let mut want: BTreeMap<(String, Option<String>), Vec<u8>> = BTreeMap::new();
        for (line, &w) in text.split_inclusive('\n').zip(&words) {
            let key = if embedding(w) {
                ("/v1/embeddings", "text-embedding-3-small")
            } else {
                ("/v1/chat/completions", "gpt-4o-mini")
            };
            want.entry((key.0.to_owned(), Some(key.1.to_owned()))).or_default().extend_from_slice(line.as_bytes());
        }
        prop_assert_eq!(by_group, want);
        prop_assert_eq!(manifest.requests, lines.len() as u64);
    }
}

/// Split in one pass, with blocks of `block` bytes, into `dir`.
fn one_pass(text: &str, cfg: &SplitConfig, block: usize, dir: &std::path::Path) -> OnePass {
    let mut vcfg = cfg.validation();
    vcfg.block_size = block;
    validate_and_write(text.as_bytes(), cfg, &vcfg, dir, true, &|_| {}, &|_| {}).unwrap()
}

/// An invalid input is not staged, its temporary files are gone, and the
/// tokens already counted are not lost.
#[test]
fn one_pass_stages_nothing_for_an_invalid_input() {
    let mut lines: Vec<String> = (0..300).map(|i| request(i, i % 9, None)).collect();
    lines[250] = request(7, 3, None); // a repeated custom_id: found only at the end
    let text = lines.join("\n") + "\n";
    let cfg = config(
        Limits {
            max_requests: Some(20),
            ..Limits::default()
        },
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let one = one_pass(&text, &cfg, 1000, dir.path());
    assert!(one.staged.is_none());
    assert_eq!(one.facts.bad_lines, vec![251]);
    assert_eq!(one.counted, 300, "counted before the repeat was found");
    assert!(one.facts.facts[..one.counted].iter().all(|f| f.tokens > 0));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "temporary files removed"
    );

    // A line that is broken early stops the writing at once.
    lines[3] = "{not json".to_owned();
    let text = lines.join("\n") + "\n";
    let one = one_pass(&text, &cfg, 1000, dir.path());
    assert!(one.staged.is_none());
    assert!(one.counted < 300);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A line too large for any chunk: not staged, reported by the plan.
#[test]
fn one_pass_stages_nothing_when_a_line_cannot_fit() {
    let lines: Vec<String> = (0..50)
        .map(|i| request(i, if i == 40 { 300 } else { 2 }, None))
        .collect();
    let text = lines.join("\n") + "\n";
    let cfg = config(
        Limits {
            max_bytes: Some(1000),
            ..Limits::default()
        },
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let one = one_pass(&text, &cfg, 2000, dir.path());
    assert!(one.report.is_valid());
    assert!(one.staged.is_none());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let err = Plan::new(text.as_bytes(), &cfg, vec![], &|_| {})
        .err()
        .unwrap();
    assert_eq!(err[0].line, 41);
}

#[test]
fn skip_invalid_loses_no_line() {
    let mut lines: Vec<String> = (0..40)
        .map(|i| request(i, i % 7, (i % 3 == 0).then_some(2)))
        .collect();
    lines[5] = "{not json".to_owned();
    lines[9] = request(3, 3, None); // a repeated custom_id
    lines[12] = String::new(); // blank
    lines[20] = r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"x"}]}}"#.to_owned();
    let text = lines.join("\n") + "\n";
    let vcfg = SplitConfig::within(Provider::OpenAi.profile()).validation();
    let (_, sink) = validate_bytes_into(text.as_bytes(), &vcfg, FactSink::default(), &|_| {});
    let bad_lines = sink.into_facts().bad_lines;
    assert_eq!(bad_lines, vec![6, 10, 21]);
    let cfg = config(
        Limits {
            max_requests: Some(4),
            ..Limits::default()
        },
        None,
    );
    let plan = Plan::new(text.as_bytes(), &cfg, bad_lines, &|_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = plan
        .write(
            text.as_bytes(),
            dir.path(),
            "in.jsonl",
            "in",
            &cfg,
            true,
            &|_| {},
        )
        .unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut files: Vec<String> = manifest.chunks.iter().map(|c| c.path.clone()).collect();
    files.push(manifest.rejects.as_ref().unwrap().path.clone());
    for f in files {
        for l in std::fs::read_to_string(dir.path().join(f)).unwrap().lines() {
            *seen.entry(l.to_owned()).or_default() += 1;
        }
    }
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines.iter().filter(|l| !l.is_empty()) {
        *want.entry(l.clone()).or_default() += 1;
    }
    assert_eq!(seen, want);
    assert_eq!(manifest.blank_lines, 1);
    assert_eq!(
        manifest.rejects.unwrap().input_lines,
        vec![[6, 6], [10, 10], [21, 21]]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the lines, a one-pass split stages chunks exactly when the
    /// input is valid, leaves nothing behind otherwise, and staged chunks
    /// hold every request line once, in input order within each group.
    #[test]
    fn one_pass_stages_exactly_the_valid_inputs(
        kinds in proptest::collection::vec(0u8..8, 1..80),
        corrupt in 0u8..3,
        block in 1usize..3000,
        max_requests in 1u64..9,
    ) {
        let mut lines = Vec::new();
        for (i, &k) in kinds.iter().enumerate() {
            // A third of the inputs have only valid (and blank) lines; a
            // third may repeat ids, which is only found at the end; a third
            // may have any error.
            let k = match corrupt {
                0 => k % 5,
                1 => k % 6,
                _ => k,
            };
            lines.push(match k {
                0..=2 => request(i, i % 5, None),
                3 => request(i, 1, Some(2)),
                4 => String::new(),                  // blank: a warning only
                5 => request(i.saturating_sub(1), 2, None), // may repeat an id
                6 => "{\"custom_id\": \"x\", broken".to_owned(),
                _ => request(i, 0, None).replace("POST", "GET"),
            });
        }
        let text = lines.join("\n") + "\n";
        let cfg = config(Limits { max_requests: Some(max_requests), ..Limits::default() }, None);
        let dir = tempfile::tempdir().unwrap();
        let one = one_pass(&text, &cfg, block, dir.path());
        prop_assert_eq!(one.staged.is_some(), one.report.is_valid());
        match one.staged {
            None => prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0),
            Some(staged) => {
                let manifest = staged.commit(dir.path(), "in.jsonl", "in", &cfg).unwrap();
                let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for c in &manifest.chunks {
                    prop_assert!(c.requests <= max_requests);
                    let data = std::fs::read_to_string(dir.path().join(&c.path)).unwrap();
                    got.entry(c.endpoint.clone()).or_default().extend(data.lines().map(str::to_owned));
                }
                let mut want: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for l in lines.iter().filter(|l| !l.is_empty()) {
                    let endpoint = if l.contains("/v1/embeddings") { "/v1/embeddings" } else { "/v1/chat/completions" };
                    want.entry(endpoint.to_owned()).or_default().push(l.clone());
                }
                prop_assert_eq!(got, want);
            }
        }
    }
}
