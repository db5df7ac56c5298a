//! Properties of merge and retry: every input request appears exactly once,
//! in input order, with the status its results say, however the result
//! lines are shuffled and split across files and rounds.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use batchkit_core::merge::{Merge, MergeConfig, MergedLine};
use batchkit_core::results::Status;
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Fate {
    Ok,
    Rejected,
    Zero,
    Expired,
    Cancelled,
    VllmError,
    Missing,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        4 => Just(Fate::Ok),
        1 => Just(Fate::Rejected),
        1 => Just(Fate::Zero),
        1 => Just(Fate::Expired),
        1 => Just(Fate::Cancelled),
        1 => Just(Fate::VllmError),
        1 => Just(Fate::Missing),
    ]
}

fn expected(f: Fate) -> Status {
    match f {
        Fate::Ok => Status::Succeeded,
        Fate::Rejected | Fate::Zero | Fate::VllmError => Status::Failed,
        Fate::Expired => Status::Expired,
        Fate::Cancelled => Status::Cancelled,
        Fate::Missing => Status::Missing,
    }
}

fn result_line(id: &str, f: Fate) -> Option<String> {
    Some(match f {
        Fate::Ok => format!(
            r#"{{"id":"b","custom_id":"{id}","response":{{"status_code":200,"request_id":"r","body":{{"choices":[{{"message":{{"content":"answer {id}"}}}}]}}}},"error":null}}"#
        ),
        Fate::Rejected => format!(
            r#"{{"custom_id":"{id}","response":{{"status_code":400,"body":{{"error":{{"message":"m","type":"invalid_request_error","code":"context_length_exceeded"}}}}}},"error":null}}"#
        ),
        Fate::Zero => format!(
            r#"{{"custom_id":"{id}","response":{{"status_code":0,"request_id":"","body":{{}}}},"error":null}}"#
        ),
        Fate::Expired => format!(
            r#"{{"custom_id":"{id}","response":null,"error":{{"code":"batch_expired","message":"m"}}}}"#
        ),
        Fate::Cancelled => format!(
            r#"{{"custom_id":"{id}","response":null,"error":{{"code":"batch_cancelled","message":"m"}}}}"#
        ),
        Fate::VllmError => format!(
            r#"{{"custom_id":"{id}","response":{{"status_code":400,"body":null}},"error":"bad"}}"#
        ),
        Fate::Missing => return None,
    })
}

struct Case {
    _dir: tempfile::TempDir,
    inputs: Vec<PathBuf>,
    results: Vec<PathBuf>,
    ids: Vec<String>,
    want: HashMap<String, Status>,
}

/// Requests split over `input_files` files; round-1 results shuffled into
/// `result_files` files; then a retry round in which the `retried` requests
/// that did not succeed succeed.
fn build(
    fates: &[Fate],
    input_files: usize,
    result_files: usize,
    seed: u64,
    retried: &[bool],
) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..fates.len()).map(|i| format!("id-{i}-é")).collect();
    let mut inputs = vec![String::new(); input_files];
    for (i, id) in ids.iter().enumerate() {
        let line = format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"model":"m","messages":[{{"role":"user","content":"q{i}"}}]}}}}"#
        );
        inputs[i * input_files / fates.len().max(1)].push_str(&(line + "\n"));
    }
    let mut lines: Vec<String> = ids
        .iter()
        .zip(fates)
        .filter_map(|(id, &f)| result_line(id, f))
        .collect();
    // Deterministic shuffle.
    let mut state = seed | 1;
    for i in (1..lines.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        lines.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let mut files = vec![String::new(); result_files];
    for (i, l) in lines.iter().enumerate() {
        files[(i * 7 + seed as usize) % result_files].push_str(&(l.clone() + "\n"));
    }
    let mut want: HashMap<String, Status> = ids
        .iter()
        .zip(fates)
        .map(|(id, &f)| (id.clone(), expected(f)))
        .collect();
    let mut round2 = String::new();
    for ((id, &f), &again) in ids.iter().zip(fates).zip(retried.iter().cycle()) {
        if again && expected(f) != Status::Succeeded {
            round2.push_str(&(result_line(id, Fate::Ok).unwrap() + "\n"));
            want.insert(id.clone(), Status::Succeeded);
        }
    }
    files.push(round2);
    let write = |name: String, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let inputs = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| write(format!("in{i}.jsonl"), t))
        .collect();
    let results = files
        .iter()
        .enumerate()
        .map(|(i, t)| write(format!("res{i}.jsonl"), t))
        .collect();
    Case {
        _dir: dir,
        inputs,
        results,
        ids,
        want,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_request_once_in_order_with_its_status(
        fates in proptest::collection::vec(fate(), 0..120),
        input_files in 1usize..4,
        result_files in 1usize..5,
        seed in any::<u64>(),
        retried in proptest::collection::vec(any::<bool>(), 1..5),
    ) {
        let case = build(&fates, input_files, result_files, seed, &retried);
        let merge = Merge::new(&case.inputs, &case.results, &MergeConfig::default()).unwrap();
        let mut out = Vec::new();
        let line = MergedLine { text: true, ..MergedLine::default() };
        let tally = merge.write(&mut out, false, &|r, buf| { line.render(r, buf); true }, &|_| {}).unwrap();
        let merged: Vec<serde_json::Value> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let got_ids: Vec<&str> = merged.iter().map(|v| v["custom_id"].as_str().unwrap()).collect();
        prop_assert_eq!(&got_ids, &case.ids.iter().map(String::as_str).collect::<Vec<_>>());
        for v in &merged {
            let id = v["custom_id"].as_str().unwrap();
            prop_assert_eq!(v["status"].as_str().unwrap(), case.want[id].as_str(), "{}", v);
            if case.want[id] == Status::Succeeded {
                prop_assert!(v["error"].is_null());
                prop_assert_eq!(v["text"].as_str().unwrap(), format!("answer {id}"));
            } else {
                prop_assert!(v["error"]["message"].is_string() || v["error"]["code"].is_string(), "{}", v);
            }
        }
        prop_assert_eq!(tally.total(), fates.len() as u64);
        prop_assert_eq!(merge.problem_counts().values().sum::<u64>(), 0);

        // Retry plus the succeeded set is the input set, line for line.
        let mut retry = Vec::new();
        merge.write(&mut retry, false, &|r, buf| {
            let again = r.status != Status::Succeeded;
            if again {
                buf.extend_from_slice(r.request_line);
                buf.push(b'\n');
            }
            again
        }, &|_| {}).unwrap();
        let inputs: String = case.inputs.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        let retry = String::from_utf8(retry).unwrap();
        let retry_lines: BTreeSet<&str> = retry.lines().collect();
        for (line, v) in inputs.lines().zip(&merged) {
            let succeeded = v["status"] == "succeeded";
            prop_assert_eq!(retry_lines.contains(line), !succeeded);
        }
        prop_assert_eq!(retry_lines.len() as u64, tally.total() - tally.count(Status::Succeeded));
    }
}

#[test]
fn duplicate_input_ids_refuse_the_merge() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        "{\"custom_id\":\"a\",\"body\":{}}\n{\"custom_id\":\"a\",\"body\":{}}\n",
    )
    .unwrap();
    match Merge::new(&[input], &[], &MergeConfig::default()) {
        Err(batchkit_core::merge::MergeError::InvalidInput { problems, count }) => {
            assert_eq!(count, 1);
            assert_eq!(problems[0].line, 2);
            assert!(problems[0].message.contains("in.jsonl:1"));
        }
        other => panic!("expected InvalidInput, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn problems_past_the_cap_are_still_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{\"custom_id\":\"a\",\"body\":{}}\n").unwrap();
    let results = dir.path().join("out.jsonl");
    std::fs::write(&results, "not json\n".repeat(5)).unwrap();
    let cfg = MergeConfig {
        keep: 2,
        ..MergeConfig::default()
    };
    let merge = Merge::new(std::slice::from_ref(&input), &[results], &cfg).unwrap();
    assert_eq!(merge.problems().len(), 2);
    let counts = merge.problem_counts();
    assert_eq!(counts[&batchkit_core::merge::ProblemKind::BadResultLine], 5);

    std::fs::write(&input, "[1]\n".repeat(5)).unwrap();
    match Merge::new(&[input], &[], &cfg) {
        Err(batchkit_core::merge::MergeError::InvalidInput { problems, count }) => {
            assert_eq!((problems.len(), count), (2, 5));
        }
        other => panic!("expected InvalidInput, got {:?}", other.map(|_| ())),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever bytes the result files hold, merging never panics and still
    /// accounts for every request exactly once.
    #[test]
    fn arbitrary_result_bytes_never_lose_a_request(
        noise in proptest::collection::vec(any::<u8>(), 0..3000),
        fragments in proptest::collection::vec(0usize..6, 0..30),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let ids: Vec<String> = (0..6).map(|i| format!("id-{i}")).collect();
        let text: String = ids.iter().map(|id| format!("{{\"custom_id\":\"{id}\",\"body\":{{}}}}\n")).collect();
        std::fs::write(&input, text).unwrap();
        // Real result lines cut at random places, mixed with random bytes.
        let mut results = noise.clone();
        for (k, &f) in fragments.iter().enumerate() {
            let line = result_line(&ids[f], [Fate::Ok, Fate::Expired, Fate::VllmError][k % 3]).unwrap();
            let cut = (k * 37) % (line.len() + 1);
            results.extend_from_slice(&line.as_bytes()[..if k % 2 == 0 { line.len() } else { cut }]);
            results.push(b'\n');
        }
        let res = dir.path().join("res.jsonl");
        std::fs::write(&res, &results).unwrap();
        let merge = Merge::new(&[input], &[res], &MergeConfig::default()).unwrap();
        let mut out = Vec::new();
        let tally = merge
            .write(&mut out, false, &|r, buf| { MergedLine::default().render(r, buf); true }, &|_| {})
            .unwrap();
        prop_assert_eq!(tally.total(), 6);
        let got: Vec<String> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap()["custom_id"].as_str().unwrap().to_owned())
            .collect();
        prop_assert_eq!(got, ids);
    }
}

/// Files of many chunks and windows (over 16 MiB): line numbers count from
/// the file's start across chunk ends, blank lines included, in the merged
/// lines and in the problems.
#[test]
fn line_numbers_hold_across_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let pad = "x".repeat(600);
    let (mut input, mut results, mut lines) = (String::new(), String::new(), Vec::new());
    let mut line = 0u64;
    for i in 0..40_000u64 {
        if i % 997 == 0 {
            input.push_str("  \n");
            line += 1;
        }
        input.push_str(&format!(
            "{{\"custom_id\":\"r{i}\",\"body\":{{\"p\":\"{pad}\"}}}}\n"
        ));
        line += 1;
        lines.push(line);
        if i != 30_000 {
            results.push_str(&format!(
                "{{\"custom_id\":\"r{i}\",\"response\":{{\"status_code\":200,\"body\":{{\"p\":\"{pad}\"}}}},\"error\":null}}\n"
            ));
        }
    }
    // A broken result line far into the file, after 39,000 good ones.
    results.push_str("{\"custom_id\":\"r30000\" broken\n");
    let (input_path, results_path) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    std::fs::write(&input_path, &input).unwrap();
    std::fs::write(&results_path, &results).unwrap();
    assert!(input.len() > 20 << 20);
    let merge = Merge::new(&[input_path], &[results_path], &MergeConfig::default()).unwrap();
    let problems = merge.problems();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, 40_000);
    assert_eq!(merge.result_lines(), 40_000);
    let mut out = Vec::new();
    merge
        .write(
            &mut out,
            false,
            &|r, buf| {
                MergedLine::default().render(r, buf);
                true
            },
            &|_| {},
        )
        .unwrap();
    let got: Vec<(u64, String)> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_slice(l).unwrap();
            (
                v["line"].as_u64().unwrap(),
                v["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(got.len(), 40_000);
    for (i, (line, status)) in got.iter().enumerate() {
        assert_eq!(*line, lines[i]);
        let want = if i == 30_000 { "failed" } else { "succeeded" };
        assert_eq!(status, want, "request {i}");
    }
}
