//! Properties of split: chunks concatenate back to the input, each chunk
//! fits every limit and validates, the manifest matches the files, and with
//! --skip-invalid no line is lost.

// Tests may unwrap: a panic is a failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use batchkit_core::split::{Plan, SplitConfig};
use batchkit_core::tokens::TokenCounter;
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn chunks_rebuild_the_input_and_fit_every_limit(
        words in proptest::collection::vec(0usize..40, 1..60),
        embeddings in any::<bool>(),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        max_requests in 1u64..12,
        byte_slack in 0u64..3000,
        token_slack in 0u64..300,
        input_slack in 0u64..6,
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let lines: Vec<String> = words
            .iter()
            .enumerate()
            .map(|(i, &w)| request(i, w, embeddings.then_some(1 + w % 4)))
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
        let plan = Plan::new(bytes, &cfg, vec![], &|_| {}).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let manifest = plan.write(bytes, dir.path(), "in.jsonl", "in", &cfg, &|_| {}).unwrap();

        let mut rebuilt = Vec::new();
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
            rebuilt.extend_from_slice(&data);
        }
        // One group: the chunks, in order, are the input.
        prop_assert_eq!(rebuilt, bytes.to_vec());
        prop_assert_eq!(manifest.requests, lines.len() as u64);
    }
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
    let checked = validate_bytes(text.as_bytes(), &Config::for_split(Provider::OpenAi));
    assert_eq!(checked.bad_lines, vec![6, 10, 21]);
    let cfg = config(
        Limits {
            max_requests: Some(4),
            ..Limits::default()
        },
        None,
    );
    let plan = Plan::new(text.as_bytes(), &cfg, checked.bad_lines, &|_| {}).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let manifest = plan
        .write(text.as_bytes(), dir.path(), "in.jsonl", "in", &cfg, &|_| {})
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
