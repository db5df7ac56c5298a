//! The manual workflow as one property: split -> results in any order ->
//! merge --manifest -> retry -> round 2 -> merge again accounts for every
//! line of the split file exactly once, with its own line number, whatever
//! the limits and the outcomes.

use crate::common;

use std::collections::BTreeMap;
use std::path::Path;

use common::run;
use proptest::prelude::*;
use serde_json::Value;

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok,
    ServerError,
    Expired,
    Missing,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        3 => Just(Outcome::Ok),
        1 => Just(Outcome::ServerError),
        1 => Just(Outcome::Expired),
        1 => Just(Outcome::Missing),
    ]
}

fn request(i: usize, kind: u8) -> String {
    match kind % 3 {
        0 => format!(
            r#"{{"custom_id":"q{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"n {i}"}}]}}}}"#
        ),
        1 => format!(
            r#"{{"custom_id":"q{i}","method":"POST","url":"/v1/chat/completions","body":{{"model":"gpt-4o","messages":[{{"role":"user","content":"n {i}"}}]}}}}"#
        ),
        _ => format!(
            r#"{{"custom_id":"q{i}","method":"POST","url":"/v1/embeddings","body":{{"model":"text-embedding-3-small","input":"n {i}"}}}}"#
        ),
    }
}

fn result(id: &str, o: Outcome) -> Option<String> {
    match o {
        Outcome::Ok => Some(format!(
            r#"{{"id":"r","custom_id":"{id}","response":{{"status_code":200,"request_id":"x","body":{{"ok":true}}}},"error":null}}"#
        )),
        Outcome::ServerError => Some(format!(
            r#"{{"id":"r","custom_id":"{id}","response":{{"status_code":500,"request_id":"x","body":{{"error":{{"message":"boom","code":"server_error"}}}}}},"error":null}}"#
        )),
        Outcome::Expired => Some(format!(
            r#"{{"id":"r","custom_id":"{id}","response":null,"error":{{"code":"batch_expired","message":"late"}}}}"#
        )),
        Outcome::Missing => None,
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every original request once, with the line it has in the split file.
fn accounted(merged: &[Value], original: &[String]) -> BTreeMap<String, String> {
    assert_eq!(merged.len(), original.len());
    let mut status = BTreeMap::new();
    for l in merged {
        let id = l["custom_id"].as_str().unwrap().to_owned();
        let n = l["line"].as_u64().unwrap() as usize;
        assert!(
            original[n - 1].contains(&format!(r#""custom_id":"{id}""#)),
            "line {n} is not {id}"
        );
        assert!(
            status
                .insert(id, l["status"].as_str().unwrap().to_owned())
                .is_none(),
            "twice: {l}"
        );
    }
    status
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn split_merge_retry_merge_accounts_for_every_line_once(
        kinds in prop::collection::vec(0u8..3, 1..50),
        max_requests in 1u64..15,
        outcomes in prop::collection::vec(outcome(), 50),
        rotate in 0usize..50,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let original: Vec<String> = kinds.iter().enumerate().map(|(i, k)| request(i, *k)).collect();
        let input = dir.path().join("requests.jsonl");
        std::fs::write(&input, original.join("\n") + "\n").unwrap();
        let chunks = dir.path().join("chunks");
        let o = run(&["split", input.to_str().unwrap(), "--out-dir", chunks.to_str().unwrap(),
            "--max-requests", &max_requests.to_string()]);
        prop_assert_eq!(o.status.code(), Some(0));
        let manifest = chunks.join("manifest.json");
        let m = manifest.to_str().unwrap();

        // Round 1: results for the chunks' lines, in a rotated order.
        let mut r1: Vec<String> = (0..original.len())
            .filter_map(|i| result(&format!("q{i}"), outcomes[i]))
            .collect();
        if !r1.is_empty() {
            let k = rotate % r1.len();
            r1.rotate_left(k);
        }
        let r1_path = dir.path().join("round1.jsonl");
        std::fs::write(&r1_path, r1.iter().map(|l| l.clone() + "\n").collect::<String>()).unwrap();
        let merged1 = dir.path().join("merged1.jsonl");
        run(&["merge", "--manifest", m, r1_path.to_str().unwrap(), "-o", merged1.to_str().unwrap()]);
        let status1 = accounted(&lines(&merged1), &original);
        for (i, o) in outcomes.iter().take(original.len()).enumerate() {
            let want = match o {
                Outcome::Ok => "succeeded",
                Outcome::ServerError => "failed",
                Outcome::Expired => "expired",
                Outcome::Missing => "missing",
            };
            prop_assert_eq!(status1[&format!("q{i}")].as_str(), want);
        }

        // Retry what can succeed (vllm rules: one file whatever the groups).
        let retry = dir.path().join("retry.jsonl");
        let o = run(&["retry", "--provider", "vllm", "--manifest", m, r1_path.to_str().unwrap(),
            "-o", retry.to_str().unwrap()]);
        prop_assert_eq!(o.status.code(), Some(0));
        let retried = std::fs::read_to_string(&retry).unwrap();
        let again = outcomes.iter().take(original.len()).filter(|o| !matches!(o, Outcome::Ok)).count();
        prop_assert_eq!(retried.lines().count(), again);

        // Round 2 succeeds for every retried line; the merge of both rounds
        // has every request once, succeeded, at its original line.
        let r2: String = retried
            .lines()
            .map(|l| {
                let id = serde_json::from_str::<Value>(l).unwrap()["custom_id"].as_str().unwrap().to_owned();
                result(&id, Outcome::Ok).unwrap() + "\n"
            })
            .collect();
        let r2_path = dir.path().join("round2.jsonl");
        std::fs::write(&r2_path, r2).unwrap();
        let merged2 = dir.path().join("merged2.jsonl");
        let o = run(&["merge", "--manifest", m, r1_path.to_str().unwrap(), r2_path.to_str().unwrap(),
            "-o", merged2.to_str().unwrap()]);
        prop_assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let status2 = accounted(&lines(&merged2), &original);
        prop_assert!(status2.values().all(|s| s == "succeeded"));
    }
}
