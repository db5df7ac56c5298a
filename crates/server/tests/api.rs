//! The Batch API over HTTP on loopback, in front of the test upstream.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Harness, chat_file, chat_line, ids_once};
use serde_json::{Value, json};

fn texts(n: usize, f: impl Fn(usize) -> String) -> Vec<String> {
    (0..n).map(f).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_upload_get_list_content_delete() {
    let h = Harness::new(|_| {}).await;
    let content = chat_file(&texts(3, |i| format!("hello {i}")));
    let id = h.upload(&content).await;
    assert!(id.starts_with("file-"));

    let (s, f) = h.get(&format!("/v1/files/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(f["object"], "file");
    assert_eq!(f["bytes"], content.len() as u64);
    assert_eq!(f["filename"], "requests.jsonl");
    assert_eq!(f["purpose"], "batch");
    assert_eq!(f["status"], "processed");
    assert!(f["created_at"].as_i64().unwrap() > 1_700_000_000);
    assert!(f["expires_at"].is_null());
    assert_eq!(h.content(&id).await.as_bytes(), content.as_slice());
    let r = h
        .client
        .get(h.url(&format!("/v1/files/{id}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"requests.jsonl\""
    );
    assert_eq!(r.headers()["content-type"], "application/octet-stream");

    // `purpose` after `file` works as well, with an expiry.
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"{}\n".to_vec()).file_name("b.jsonl"),
        )
        .text("purpose", "batch")
        .text("expires_after[anchor]", "created_at")
        .text("expires_after[seconds]", "3600");
    let r = h
        .client
        .post(h.url("/v1/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!(
        second["expires_at"].as_i64().unwrap() - second["created_at"].as_i64().unwrap(),
        3600
    );

    // Newest first, paged with `after`.
    let (_, page) = h.get("/v1/files?limit=1").await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["data"][0]["id"], second["id"]);
    assert_eq!(page["has_more"], true);
    let (_, page2) = h
        .get(&format!(
            "/v1/files?limit=1&after={}",
            second["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(page2["data"][0]["id"], id.as_str());
    assert_eq!(page2["has_more"], false);
    let (_, none) = h.get("/v1/files?purpose=batch_output").await;
    assert_eq!(none["data"].as_array().unwrap().len(), 0);

    let r = h
        .client
        .delete(h.url(&format!("/v1/files/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d, json!({"id": id, "object": "file", "deleted": true}));
    let (s, e) = h.get(&format!("/v1/files/{id}")).await;
    assert_eq!(s, 404);
    assert_eq!(e["error"]["type"], "invalid_request_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked() {
    let h = Harness::new(|c| c.max_upload_bytes = 1000).await;
    let (s, e) = h.upload_as(None, "requests.txt", b"{}\n").await;
    assert_eq!(s, 400);
    assert_eq!(
        e["error"]["message"],
        "Invalid file format for Batch API. Must be .jsonl"
    );

    let (s, e) = h.upload_as(None, "big.jsonl", &vec![b'x'; 1001]).await;
    assert_eq!(s, 413, "{e}");
    assert_eq!(e["error"]["code"], "file_too_large");
    // Far over the cap: refused from the declared length.
    let (s, e) = h.upload_as(None, "huge.jsonl", &vec![b'x'; 3 << 20]).await;
    assert_eq!(s, 413, "{e}");
    // Nothing was kept of either.
    let (_, list) = h.get("/v1/files").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    let scratch: Vec<_> = std::fs::read_dir(h.dir.path().join("scratch"))
        .unwrap()
        .collect();
    assert!(scratch.is_empty(), "scratch files left behind: {scratch:?}");

    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"{}".to_vec()).file_name("a.jsonl"),
    );
    let r = h
        .client
        .post(h.url("/v1/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["param"], "purpose");

    let r = h
        .client
        .post(h.url("/v1/files"))
        .body("not multipart")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("multipart")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_runs_to_completed_through_upstream_faults() {
    let h = Harness::new(|c| c.concurrency = 4).await;
    let mut t = texts(24, |i| format!("plain request {i}"));
    t[3] = "fail:400 context too long".into();
    t[7] = "flaky:429:2".into();
    t[11] = "flaky:500:1".into();
    t[15] = "drop:1".into();
    t[19] = "flaky:503:99".into(); // past --max-retries
    let file = h.upload(&chat_file(&t)).await;
    let created = h
        .post(
            "/v1/batches",
            &json!({"input_file_id": file, "endpoint": "/v1/chat/completions",
            "completion_window": "24h", "metadata": {"project": "tests"},
            "output_expires_after": {"anchor": "created_at", "seconds": 3600}}),
        )
        .await
        .1;
    assert_eq!(created["status"], "validating");
    assert_eq!(created["object"], "batch");
    assert_eq!(
        created["expires_at"].as_i64().unwrap() - created["created_at"].as_i64().unwrap(),
        86_400
    );
    let b = h
        .wait(created["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 24, "completed": 22, "failed": 2})
    );
    assert_eq!(b["metadata"], json!({"project": "tests"}));
    assert_eq!(b["model"], "test-model");
    for stamp in ["in_progress_at", "finalizing_at", "completed_at"] {
        assert!(b[stamp].as_i64().is_some(), "{stamp} not set: {b}");
    }
    for stamp in ["failed_at", "expired_at", "cancelling_at", "cancelled_at"] {
        assert!(b[stamp].is_null(), "{stamp} set: {b}");
    }
    let (out, err) = h.results(&b).await;
    assert_eq!((out.len(), err.len()), (22, 2));
    assert_eq!(ids_once(&out, &err).len(), 24);
    for line in &out {
        assert!(line["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(line["response"]["status_code"], 200);
        assert!(line["error"].is_null());
        assert_eq!(line["response"]["request_id"], "req_test");
    }
    let by_id = |id: &str| err.iter().find(|l| l["custom_id"] == id).unwrap().clone();
    let rejected = by_id("r-3");
    assert_eq!(rejected["response"]["status_code"], 400);
    assert!(rejected["error"].is_null());
    assert_eq!(
        rejected["response"]["body"]["error"]["code"],
        "injected_failure"
    );
    assert_eq!(by_id("r-19")["response"]["status_code"], 503);
    // Retried as often as it failed, and no more; but an attempt still in
    // flight when the 503s below open the circuit is abandoned and sent
    // again once the upstream answers (on a loaded machine a retry can be
    // that late): one more at most.
    for (text, failures) in [("flaky:429:2", 2), ("flaky:500:1", 1), ("drop:1", 1)] {
        let seen = h.upstream.stats.seen(text);
        assert!(
            (failures + 1..=failures + 2).contains(&seen),
            "{text}: sent {seen} times"
        );
    }
    assert_eq!(h.upstream.stats.seen("fail:400 context too long"), 1);
    // 1 + 5 retries that count; 503s in a row with nothing else answered
    // are taken as an outage (the circuit opens), and the attempts made
    // while the upstream is taken as down cost the request nothing.
    let seen = h.upstream.stats.seen("flaky:503:99");
    assert!((6..=12).contains(&seen), "{seen}");
    // Usage summed over the successes: 3 words + 2 per plain request.
    let plain: u64 = t
        .iter()
        .enumerate()
        .filter(|(i, _)| ![3, 19].contains(i))
        .map(|(_, s)| s.split_whitespace().count() as u64)
        .sum();
    assert_eq!(b["usage"]["input_tokens"], plain);
    assert_eq!(b["usage"]["output_tokens"], 22 * 2);
    assert_eq!(b["usage"]["total_tokens"], plain + 44);
    // The output file is a file like any other.
    let (_, f) = h
        .get(&format!(
            "/v1/files/{}",
            b["output_file_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(f["purpose"], "batch_output");
    assert_eq!(
        f["expires_at"].as_i64().unwrap() - f["created_at"].as_i64().unwrap(),
        3600,
        "output_expires_after sets the output file's expiry: {f}"
    );
    assert_eq!(
        f["filename"],
        format!("{}_output.jsonl", b["id"].as_str().unwrap())
    );
    // Once the batch has ended, its input may be deleted.
    let input = b["input_file_id"].as_str().unwrap();
    let r = h
        .client
        .delete(h.url(&format!("/v1/files/{input}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_fails_validation_with_the_errors() {
    let h = Harness::new(|_| {}).await;
    let content = format!("{}\n{}\n{{oops\n", chat_line("a", "x"), chat_line("a", "y"));
    let file = h.upload(content.as_bytes()).await;
    let b = h.create_batch(&file, "24h").await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(b["status"], "failed", "{b}");
    assert!(b["failed_at"].as_i64().is_some() && b["in_progress_at"].is_null());
    assert_eq!(b["errors"]["object"], "list");
    let errors = b["errors"]["data"].as_array().unwrap();
    let codes: Vec<(&str, u64)> = errors
        .iter()
        .map(|e| (e["code"].as_str().unwrap(), e["line"].as_u64().unwrap()))
        .collect();
    assert!(codes.contains(&("duplicate_custom_id", 2)), "{codes:?}");
    assert!(codes.contains(&("invalid_json_line", 3)), "{codes:?}");
    assert!(b["output_file_id"].is_null() && b["error_file_id"].is_null());
    assert_eq!(
        h.upstream
            .stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    h.cancel_refused(b["id"].as_str().unwrap(), "failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_keeps_finished_results_and_cancels_the_rest() {
    let h = Harness::new(|c| c.concurrency = 2).await;
    let file = h
        .upload(&chat_file(&texts(40, |i| format!("slow:100 {i}"))))
        .await;
    let b = h.create_batch(&file, "24h").await;
    let id = b["id"].as_str().unwrap().to_owned();
    h.until_completed(&id, 4).await;
    let (s, c) = h
        .post(&format!("/v1/batches/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "cancelling");
    assert!(c["cancelling_at"].as_i64().is_some());
    let b = h.wait(&id, Duration::from_secs(10)).await;
    assert_eq!(b["status"], "cancelled", "{b}");
    assert!(b["cancelled_at"].as_i64().is_some());
    let counts = &b["request_counts"];
    let (done, failed) = (
        counts["completed"].as_u64().unwrap(),
        counts["failed"].as_u64().unwrap(),
    );
    assert_eq!(done + failed, 40);
    assert!((4..40).contains(&done), "{counts}");
    let (out, err) = h.results(&b).await;
    assert_eq!(out.len() as u64, done);
    assert_eq!(ids_once(&out, &err).len(), 40);
    assert!(
        err.iter()
            .all(|l| l["error"]["code"] == "batch_cancelled" && l["response"].is_null())
    );
    let sent = h
        .upstream
        .stats
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < 40,
        "dispatch went on after the cancel: {sent} requests"
    );
    // As on OpenAI, asking again answers with the batch.
    let (s, again) = h
        .post(&format!("/v1/batches/{id}/cancel"), &json!({}))
        .await;
    assert_eq!((s, &again["status"]), (200, &json!("cancelled")), "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_expires_at_the_end_of_its_window() {
    let h = Harness::new(|c| c.concurrency = 1).await;
    let file = h
        .upload(&chat_file(&texts(30, |i| format!("slow:200 {i}"))))
        .await;
    let b = h.create_batch(&file, "2s").await;
    assert_eq!(b["completion_window"], "2s");
    assert_eq!(
        b["expires_at"].as_i64().unwrap() - b["created_at"].as_i64().unwrap(),
        2
    );
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(15))
        .await;
    assert_eq!(b["status"], "expired", "{b}");
    assert!(b["expired_at"].as_i64().is_some());
    let (out, err) = h.results(&b).await;
    assert!(
        !out.is_empty() && !err.is_empty(),
        "{} done, {} not",
        out.len(),
        err.len()
    );
    assert_eq!(ids_once(&out, &err).len(), 30);
    assert!(err.iter().all(|l| l["error"]["code"] == "batch_expired"));
    assert_eq!(
        b["request_counts"]["failed"].as_u64().unwrap(),
        err.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_without_doubling_results() {
    let mut h = Harness::new(|c| c.concurrency = 2).await;
    let file = h
        .upload(&chat_file(&texts(30, |i| format!("slow:50 {i}"))))
        .await;
    let b = h.create_batch(&file, "24h").await;
    let id = b["id"].as_str().unwrap().to_owned();
    h.until_completed(&id, 5).await;
    h.stop().await;
    let mut cfg = common::config(&h.upstream, h.dir.path());
    cfg.concurrency = 4;
    h.start(cfg).await;
    let b = h.wait(&id, Duration::from_secs(20)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 30, "completed": 30, "failed": 0})
    );
    let (out, err) = h.results(&b).await;
    assert!(err.is_empty());
    assert_eq!(ids_once(&out, &err).len(), 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_is_not_starved_by_a_large_one() {
    let h = Harness::new(|c| c.concurrency = 2).await;
    let big = h
        .upload(&chat_file(&texts(150, |i| format!("slow:20 big {i}"))))
        .await;
    let small = h
        .upload(&chat_file(&texts(4, |i| format!("slow:20 small {i}"))))
        .await;
    let big = h.create_batch(&big, "24h").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let small = h.create_batch(&small, "24h").await;
    let small = h
        .wait(small["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(small["status"], "completed");
    let (_, big) = h
        .get(&format!("/v1/batches/{}", big["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        big["status"], "in_progress",
        "the large batch finished first: {big}"
    );
    assert!(
        big["request_counts"]["completed"].as_u64().unwrap() < 100,
        "{big}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_list_newest_first_in_pages() {
    let h = Harness::new(|_| {}).await;
    let file = h.upload(&chat_file(&texts(1, |_| "hi".into()))).await;
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(
            h.create_batch(&file, "24h").await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    made.reverse();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/batches?limit=2&after={a}"),
            None => "/v1/batches?limit=2".to_owned(),
        };
        let (s, page) = h.get(&path).await;
        assert_eq!(s, 200, "{page}");
        let ids: Vec<String> = page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(page["first_id"].as_str(), ids.first().map(String::as_str));
        assert_eq!(page["last_id"].as_str(), ids.last().map(String::as_str));
        seen.extend(ids);
        if page["has_more"] == false {
            break;
        }
        after = page["last_id"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, made);
    let (_, all) = h.get("/v1/batches").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_see_only_their_own() {
    let h = Harness::new(|c| c.api_keys = vec!["key-a".into(), "key-b".into()]).await;
    let (s, f) = h
        .upload_as(
            Some("key-a"),
            "a.jsonl",
            &chat_file(&texts(1, |_| "hi".into())),
        )
        .await;
    assert_eq!(s, 200);
    let file = f["id"].as_str().unwrap();
    let (s, b, _) = h
        .post_as(Some("key-a"), "/v1/batches", &json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .await;
    assert_eq!(s, 200);
    let batch = b["id"].as_str().unwrap();
    for path in [
        format!("/v1/files/{file}"),
        format!("/v1/batches/{batch}"),
        format!("/v1/files/{file}/content"),
    ] {
        assert_eq!(h.get_as(Some("key-a"), &path).await.0, 200, "{path}");
        let (s, e) = h.get_as(Some("key-b"), &path).await;
        assert_eq!(s, 404, "{path}: {e}");
    }
    let (_, list) = h.get_as(Some("key-b"), "/v1/batches").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // Another key's file is not there for this key: the batch is created
    // and fails at validation, as on OpenAI for a file it cannot find.
    let (s, theirs, _) = h
        .post_as(Some("key-b"), "/v1/batches", &json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"}))
        .await;
    assert_eq!(s, 200, "{theirs}");
    let theirs = theirs["id"].as_str().unwrap();
    let failed = loop {
        let (_, b) = h
            .get_as(Some("key-b"), &format!("/v1/batches/{theirs}"))
            .await;
        if b["status"] != "validating" {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["errors"]["data"][0]["code"], "invalid_request");
    assert_eq!(failed["errors"]["data"][0]["param"], "file_id");
    assert_eq!(
        h.post_as(
            Some("key-b"),
            &format!("/v1/batches/{batch}/cancel"),
            &json!({})
        )
        .await
        .0,
        404
    );

    let r = h.client.get(h.url("/v1/batches")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    assert_eq!(h.get_as(Some("wrong"), "/v1/batches").await.0, 401);
    // Health needs no key.
    assert_eq!(
        h.client
            .get(h.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_with_the_envelope() {
    let h = Harness::new(|_| {}).await;
    let file = h.upload(&chat_file(&texts(1, |_| "hi".into()))).await;
    let good = json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };
    let many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    // The body, the parameter at fault, and OpenAI's code where it sets one.
    let coded: Vec<(Value, &str, &str)> = vec![
        (
            json!({"endpoint": "/v1/chat/completions", "completion_window": "24h"}),
            "input_file_id",
            "missing_required_parameter",
        ),
        (
            with("endpoint", json!("/v1/invalid/endpoint")),
            "endpoint",
            "invalid_value",
        ),
        (
            with("completion_window", json!("1h")),
            "completion_window",
            "invalid_value",
        ),
        (
            with("completion_window", json!("48h")),
            "completion_window",
            "invalid_value",
        ),
        (
            with("completion_window", json!("")),
            "completion_window",
            "invalid_value",
        ),
        (
            with("completion_window", json!(24)),
            "completion_window",
            "invalid_type",
        ),
        (
            with("metadata", json!({"tags": ["tag1", "tag2"]})),
            "metadata.tags",
            "invalid_type",
        ),
        (with("metadata", json!("text")), "metadata", "invalid_type"),
    ];
    for (body, param, code) in coded {
        let (s, e) = h.post("/v1/batches", &body).await;
        assert_eq!(s, 400, "{body}: {e}");
        assert_eq!(
            (&e["error"]["param"], &e["error"]["code"]),
            (&json!(param), &json!(code)),
            "{body}: {e}"
        );
    }
    // OpenAI's words, which the SDKs' users match on.
    let (_, e) = h
        .post(
            "/v1/batches",
            &with("endpoint", json!("/v1/invalid/endpoint")),
        )
        .await;
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("Invalid value: '/v1/invalid/endpoint'. Supported values are: '/v1/responses', '/v1/chat/completions',"),
        "{message}"
    );
    let (_, e) = h
        .post("/v1/batches", &with("completion_window", json!("1h")))
        .await;
    assert_eq!(
        e["error"]["message"],
        "Invalid value: '1h'. Supported values are: '24h' and '2s'."
    );
    let (_, e) = h
        .post("/v1/batches", &with("metadata", json!({"tags": ["a"]})))
        .await;
    assert_eq!(
        e["error"]["message"],
        "Invalid type for 'metadata.tags': expected a string, but got an array instead."
    );
    let cases: Vec<(Value, &str)> = vec![
        (with("metadata", Value::Object(many)), "metadata"),
        (
            with("metadata", json!({"k".repeat(65): "v"})),
            &*Box::leak(format!("metadata.{}", "k".repeat(65)).into_boxed_str()),
        ),
        (
            with("metadata", json!({"k": "v".repeat(513)})),
            "metadata.k",
        ),
        (with("metadata", json!({"k": 1})), "metadata.k"),
        (
            with(
                "output_expires_after",
                json!({"anchor": "created_at", "seconds": 10}),
            ),
            "output_expires_after.seconds",
        ),
        (
            with(
                "output_expires_after",
                json!({"anchor": "now", "seconds": 3600}),
            ),
            "output_expires_after.anchor",
        ),
        (with("surprise", json!(true)), "surprise"),
    ];
    for (body, param) in cases {
        let (s, e) = h.post("/v1/batches", &body).await;
        assert_eq!(s, 400, "{body}: {e}");
        assert_eq!(e["error"]["type"], "invalid_request_error", "{e}");
        assert_eq!(e["error"]["param"], param, "{body}: {e}");
        assert!(!e["error"]["message"].as_str().unwrap().is_empty());
    }
    let raw = |body: &'static str, ct: Option<&'static str>| {
        let mut rb = h.client.post(h.url("/v1/batches")).body(body);
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        rb.send()
    };
    for (body, ct, status) in [
        ("{not json", Some("application/json"), 400),
        ("[1,2]", Some("application/json"), 400),
        ("{}", None, 415),
        ("{}", Some("text/plain"), 415),
    ] {
        let r = raw(body, ct).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{body} {ct:?}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"]["message"].is_string(), "{e}");
    }
    for (path, status) in [
        ("/v1/batches/batch_nope", 404),
        ("/v1/files/file-nope", 404),
        ("/v1/files/file-nope/content", 404),
        ("/v1/batches?limit=0", 400),
        ("/v1/batches?limit=101", 400),
        ("/v1/batches?limit=x", 400),
        ("/v1/batches?after=batch_nope", 400),
        ("/v1/nothing", 404),
    ] {
        let (s, e) = h.get(path).await;
        assert_eq!(s, status, "{path}: {e}");
        assert!(e["error"]["message"].is_string(), "{path}: {e}");
        if s == 404 && path.contains("nope") {
            let m = e["error"]["message"].as_str().unwrap();
            assert!(m.contains("not found"), "{path}: {m}");
        }
    }
    let r = h.client.put(h.url("/v1/batches")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["message"].is_string());
    // A huge body is refused, not read whole: a 413, or (when the server
    // answers while the client is still sending) a closed connection.
    let sent = h
        .client
        .post(h.url("/v1/batches"))
        .header("content-type", "application/json")
        .body(vec![b' '; 8 << 20])
        .send()
        .await;
    match sent {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let h = Harness::new(|_| {}).await;
    let file = h
        .upload(&chat_file(&texts(3, |i| {
            if i == 0 {
                "flaky:500:1".into()
            } else {
                format!("m {i}")
            }
        })))
        .await;
    let b = h.create_batch(&file, "24h").await;
    h.wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    let text = h
        .client
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("batchkit_upstream_requests_dispatched_total 4"),
        "{text}"
    );
    assert!(
        text.contains("batchkit_upstream_requests_retried_total 1"),
        "{text}"
    );
    assert!(
        text.contains("batchkit_batches{status=\"completed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("batchkit_upstream_latency_seconds_count 4"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_and_completions_go_to_their_endpoints() {
    let h = Harness::new(|_| {}).await;
    for (endpoint, body) in [
        (
            "/v1/embeddings",
            json!({"model": "test-embed", "input": "a sentence"}),
        ),
        (
            "/v1/completions",
            json!({"model": "test-model", "prompt": "once upon"}),
        ),
    ] {
        let lines: String = (0..3)
            .map(|i| json!({"custom_id": format!("e-{i}"), "method": "POST", "url": endpoint, "body": body}).to_string() + "\n")
            .collect();
        let file = h.upload(lines.as_bytes()).await;
        let (s, b) = h
            .post(
                "/v1/batches",
                &json!({"input_file_id": file, "endpoint": endpoint, "completion_window": "24h"}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let b = h
            .wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
            .await;
        assert_eq!(b["status"], "completed", "{b}");
        let (out, _) = h.results(&b).await;
        assert_eq!(out.len(), 3);
        let answer = &out[0]["response"]["body"];
        match endpoint {
            "/v1/embeddings" => assert_eq!(answer["data"][0]["object"], "embedding", "{answer}"),
            _ => assert_eq!(answer["object"], "text_completion", "{answer}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_key_is_sent_and_a_wrong_one_is_a_failed_request() {
    let opts = batchkit_testkit::Options {
        api_key: Some("up-secret".into()),
        ..Default::default()
    };
    let h = Harness::with_upstream(opts.clone(), |c| {
        c.upstream_api_key = Some("up-secret".into())
    })
    .await;
    let file = h.upload(&chat_file(&texts(2, |i| format!("k {i}")))).await;
    let b = h.create_batch(&file, "24h").await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 2, "completed": 2, "failed": 0})
    );

    let h = Harness::with_upstream(opts, |c| c.upstream_api_key = None).await;
    let file = h.upload(&chat_file(&texts(2, |i| format!("k {i}")))).await;
    let b = h.create_batch(&file, "24h").await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(b["status"], "completed");
    assert_eq!(
        b["request_counts"],
        json!({"total": 2, "completed": 0, "failed": 2})
    );
    let (_, err) = h.results(&b).await;
    assert!(
        err.iter().all(|l| l["response"]["status_code"] == 401),
        "{err:?}"
    );
}

/// Edges found by the fuzz and fault campaign, each once answered wrongly:
/// an id that is not UTF-8 once decoded got a plain-text 400; a 50 MB body
/// to `/v1/batches` got a 413 saying "The body is not valid JSON"; two
/// `file` parts in one upload kept the last silently; a 64 KB file name was
/// accepted and echoed in every file object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_requests_get_the_envelope_and_a_true_message() {
    let h = Harness::new(|_| {}).await;
    for path in [
        "/v1/batches/%ff%fe",
        "/v1/files/%ff%fe",
        "/v1/files/%ff%fe/content",
    ] {
        let r = h.client.get(h.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{path}: {e}");
    }

    let huge = format!("{{\"input_file_id\":\"{}\"}}", "x".repeat(50 << 20));
    let r = h
        .client
        .post(h.url("/v1/batches"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.unwrap();
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("larger than") && !message.contains("not valid JSON"),
        "{message}"
    );

    let part = |name: &str, text: &str| {
        reqwest::multipart::Part::bytes(chat_file(&[text.to_owned()])).file_name(name.to_owned())
    };
    let form = reqwest::multipart::Form::new()
        .text("purpose", "batch")
        .part("file", part("a.jsonl", "one"))
        .part("file", part("b.jsonl", "two"));
    let r = h
        .client
        .post(h.url("/v1/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than one 'file' part"),
        "{e}"
    );

    let long = format!("{}.jsonl", "n".repeat(64 << 10));
    let (s, e) = h
        .upload_as(None, &long, &chat_file(&["hi".to_owned()]))
        .await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 255"),
        "{e}"
    );
    let (_, list) = h.get("/v1/files").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "nothing was kept"
    );
}

/// A file without a record (a crash between writing and recording it) is
/// removed once it is older than the grace period, and not before: a young
/// one may be an upload about to be recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_without_a_record_is_removed_only_after_the_grace_period() {
    let mut h = Harness::new(|_| {}).await;
    let kept = h.upload(&chat_file(&texts(1, |i| format!("hi {i}")))).await;
    h.stop().await;
    let files = h.dir.path().join("files");
    let old = files.join("file-orphanold");
    let young = files.join("file-orphanyoung");
    std::fs::write(&old, b"left by a crash\n").unwrap();
    std::fs::write(&young, b"about to be recorded\n").unwrap();
    let long_ago = std::time::SystemTime::now()
        - batchkit_server::engine::ORPHAN_GRACE
        - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let cfg = common::config(&h.upstream, h.dir.path());
    h.start(cfg).await;
    assert!(!old.exists(), "an old orphan is removed at start");
    assert!(young.exists(), "a young one is left for a later sweep");
    let (s, _) = h.get(&format!("/v1/files/{kept}/content")).await;
    assert_eq!(s, 200, "a recorded file stays");
}

/// OpenAI's recorded reply: a create naming a file that is not there is
/// accepted, and the batch then fails with `invalid_request`, param
/// `file_id`, no line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_input_file_is_missing_is_created_and_then_fails() {
    let h = Harness::new(|_| {}).await;
    let b = h.create_batch("file-nonexistent-xyz", "24h").await;
    assert_eq!(b["status"], "validating", "{b}");
    assert!(b["errors"].is_null(), "{b}");
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(b["status"], "failed", "{b}");
    assert!(b["failed_at"].as_i64().is_some());
    let errors = b["errors"]["data"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{b}");
    assert_eq!(errors[0]["code"], "invalid_request");
    assert_eq!(errors[0]["param"], "file_id");
    assert!(errors[0]["line"].is_null());
    let message = errors[0]["message"].as_str().unwrap().to_lowercase();
    assert!(message.contains("cannot find file"), "{message}");
}

/// OpenAI's recorded reply: what is inside a message does not fail the
/// batch; that request runs, its 400 lands in the error file, and the
/// rest completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_contents_fail_their_request_not_the_batch() {
    let h = Harness::new(|_| {}).await;
    let bad = json!({"custom_id": "bad-keys", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "test-model", "messages": [{"rolez": "user", "contentz": "Hi"}]}});
    let text = format!(
        "{}\n{bad}\n{}\n",
        chat_line("ok-1", "hello"),
        chat_line("ok-2", "hello again")
    );
    let file = h.upload(text.as_bytes()).await;
    let b = h.create_batch(&file, "24h").await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 3, "completed": 2, "failed": 1})
    );
    let (out, err) = h.results(&b).await;
    assert_eq!(out.len(), 2);
    assert_eq!(err.len(), 1);
    assert_eq!(err[0]["custom_id"], "bad-keys");
    assert_eq!(err[0]["response"]["status_code"], 400, "{}", err[0]);
}

/// A model the upstream's `GET /v1/models` does not list fails the batch
/// at validation with OpenAI's `model_not_found`, before any request is
/// sent; a listed one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_the_upstream_does_not_serve_fails_the_batch_at_validation() {
    let opts = batchkit_testkit::Options {
        models: Some(vec!["test-model".to_owned()]),
        ..Default::default()
    };
    let h = Harness::with_upstream(opts, |_| {}).await;
    let line = json!({"custom_id": "invalid-model", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "nonexistent-model-xyz", "messages": [{"role": "user", "content": "Hello"}]}});
    let file = h.upload(format!("{line}\n").as_bytes()).await;
    let b = h.create_batch(&file, "24h").await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(b["status"], "failed", "{b}");
    let errors = b["errors"]["data"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{b}");
    assert_eq!(errors[0]["code"], "model_not_found");
    assert_eq!(errors[0]["line"], 1);
    assert_eq!(errors[0]["param"], "body.model");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "The provided model 'nonexistent-model-xyz' is not supported by the Batch API."
        ) && message.contains("'test-model'"),
        "{message}"
    );
    assert_eq!(
        h.upstream
            .stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let file = h.upload(&chat_file(&texts(2, |i| format!("hi {i}")))).await;
    let b = h.create_batch(&file, "24h").await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(b["status"], "completed", "{b}");
}

/// Every answer, whatever its status, carries an `x-request-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_carries_a_request_id() {
    let h = Harness::new(|c| c.api_keys = vec!["k".to_owned()]).await;
    let requests = [
        h.client.get(h.url("/v1/batches")).bearer_auth("k"),
        h.client.get(h.url("/v1/batches")),
        h.client
            .get(h.url("/v1/batches/batch_nope"))
            .bearer_auth("k"),
        h.client.get(h.url("/v1/nothing")).bearer_auth("k"),
        h.client
            .post(h.url("/v1/batches"))
            .bearer_auth("k")
            .json(&json!({})),
        h.client.get(h.url("/health")),
    ];
    let mut seen = std::collections::HashSet::new();
    for rb in requests {
        let r = rb.send().await.unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(id.starts_with("req_") && id.len() > 20, "{id}");
        assert!(seen.insert(id), "request ids repeat");
    }
}

/// As on OpenAI, an input file a running batch reads can be deleted: it is
/// gone from the API at once, and the batch finishes from its bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_file_deleted_while_its_batch_runs_leaves_the_api_and_the_batch_finishes() {
    let h = Harness::new(|c| c.concurrency = 2).await;
    let file = h
        .upload(&chat_file(&texts(20, |i| format!("slow:30 {i}"))))
        .await;
    let b = h.create_batch(&file, "24h").await;
    let id = b["id"].as_str().unwrap().to_owned();
    h.until_completed(&id, 2).await;
    let r = h
        .client
        .delete(h.url(&format!("/v1/files/{file}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deleted: Value = r.json().await.unwrap();
    assert_eq!(
        deleted,
        json!({"id": file, "object": "file", "deleted": true})
    );
    for path in [
        format!("/v1/files/{file}"),
        format!("/v1/files/{file}/content"),
    ] {
        assert_eq!(h.get(&path).await.0, 404, "{path}");
    }
    let (_, list) = h.get("/v1/files").await;
    assert!(list["data"].as_array().unwrap().is_empty(), "{list}");
    let b = h.wait(&id, Duration::from_secs(20)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 20, "{b}");
}

/// A `batch` upload must be a file with a first request object (OpenAI:
/// "Invalid file format for Batch API"); the rest is judged when a batch
/// reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_uploads_are_refused_when_empty_or_not_jsonl() {
    let h = Harness::new(|_| {}).await;
    for content in [&b""[..], b"\n\n", b"{malformed json", b"not json at all\n"] {
        let (s, e) = h.upload_as(None, "input.jsonl", content).await;
        assert_eq!(s, 400, "{e}");
        let message = e["error"]["message"].as_str().unwrap().to_lowercase();
        assert!(
            message.contains("invalid file format") && message.contains("jsonl"),
            "{message}"
        );
        assert_eq!(e["error"]["param"], "file");
    }
    // A bad second line passes the upload and fails the batch at line 2.
    let text = format!("{}\n{{invalid json here\n", chat_line("valid", "hi"));
    let file = h.upload(text.as_bytes()).await;
    let b = h.create_batch(&file, "24h").await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    assert_eq!(b["status"], "failed", "{b}");
    let last = b["errors"]["data"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (&last["code"], &last["line"]),
        (&json!("invalid_json_line"), &json!(2))
    );
    // Other purposes are not batch files.
    let form = reqwest::multipart::Form::new()
        .text("purpose", "user_data")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"plain text".to_vec()).file_name("notes.txt"),
        );
    let r = h
        .client
        .post(h.url("/v1/files"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// An upstream that goes away (killed: connections dropped, the port
/// refusing) pauses dispatch; when it listens again, dispatch resumes and
/// every request succeeds, though the outage lasts far longer than the
/// retries would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_goes_away_pauses_dispatch_and_loses_no_request() {
    let mut engine = batchkit_testkit::Killable::start(Default::default());
    let url = engine.url();
    let h = Harness::new(|c| {
        c.upstreams = vec![url.parse().unwrap()];
        c.concurrency = 4;
        c.max_retries = 1;
    })
    .await;
    let file = h
        .upload(&chat_file(&texts(60, |i| format!("slow:20 {i}"))))
        .await;
    let b = h.create_batch(&file, "24h").await;
    let id = b["id"].as_str().unwrap().to_owned();
    h.until_completed(&id, 10).await;
    engine.kill();
    // Long enough for every retry of the old budget, many times over.
    let mut down = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, health) = h.get("/health").await;
        if health["upstreams"][0]["up"] == false {
            down = true;
            break;
        }
    }
    assert!(down, "the upstream was not seen down");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, mid) = h.get(&format!("/v1/batches/{id}")).await;
    assert_eq!(mid["request_counts"]["failed"], 0, "{mid}");
    engine.restart();
    let b = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(
        b["request_counts"],
        json!({"total": 60, "completed": 60, "failed": 0})
    );
    let (_, health) = h.get("/health").await;
    assert_eq!(health["upstreams"][0]["up"], true, "{health}");
}

/// An upstream that keeps its connections but answers nothing (an engine
/// stopping) is probed once a request has waited `--stall-timeout`; with
/// no answer to the probe it is taken as down, the requests in flight are
/// abandoned, and they are sent again when it is back: the batch finishes
/// without waiting for `--request-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_is_found_dead_and_its_requests_sent_again() {
    let mut engine = batchkit_testkit::Killable::start(Default::default());
    let url = engine.url();
    let h = Harness::new(|c| {
        c.upstreams = vec![url.parse().unwrap()];
        c.concurrency = 4;
        c.stall_timeout = Duration::from_secs(1);
        c.request_timeout = Duration::from_secs(600);
    })
    .await;
    let file = h
        .upload(&chat_file(&texts(30, |i| format!("slow:20 {i}"))))
        .await;
    let b = h.create_batch(&file, "24h").await;
    let id = b["id"].as_str().unwrap().to_owned();
    h.until_completed(&id, 5).await;
    engine.hang(true);
    let started = std::time::Instant::now();
    let mut down = false;
    while started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if h.get("/health").await.1["upstreams"][0]["up"] == false {
            down = true;
            break;
        }
    }
    assert!(down, "a hung upstream was not found dead");
    engine.hang(false);
    engine.restart();
    let b = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 30, "{b}");
}

/// Several upstreams: `MODEL=URL` serves that model only; plain URLs are
/// replicas for any model (the ones they list) and share the requests; a
/// killed replica's requests go to the one still up; a model that none
/// serves fails the batch at validation, naming what they serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_upstreams_route_by_model_and_share_replicas() {
    let listing = |m: &str| batchkit_testkit::Options {
        models: Some(vec![m.to_owned()]),
        ..Default::default()
    };
    let named = batchkit_testkit::TestUpstream::start(listing("model-a")).await;
    let mut r1 = batchkit_testkit::Killable::start(listing("test-model"));
    let r2 = batchkit_testkit::Killable::start(listing("test-model"));
    let (a, u1, u2) = (named.url(), r1.url(), r2.url());
    let h = Harness::new(|c| {
        c.upstreams = vec![
            format!("model-a={a}").parse().unwrap(),
            u1.parse().unwrap(),
            u2.parse().unwrap(),
        ];
        c.concurrency = 4;
    })
    .await;
    let done = |s: &batchkit_testkit::Stats| s.succeeded.load(std::sync::atomic::Ordering::Relaxed);

    let file = h
        .upload(&chat_file(&texts(40, |i| format!("slow:10 share {i}"))))
        .await;
    let b = h.create_batch(&file, "24h").await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(b["request_counts"]["completed"], 40, "{b}");
    let (n1, n2) = (done(&r1.stats), done(&r2.stats));
    assert!(n1 > 0 && n2 > 0 && n1 + n2 == 40, "{n1} + {n2}");
    assert_eq!(
        named
            .stats
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );

    let mut text = String::new();
    for i in 0..5 {
        let line = json!({"custom_id": format!("a-{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "model-a", "messages": [{"role": "user", "content": format!("for a {i}")}]}});
        text.push_str(&format!("{line}\n"));
    }
    let b = h
        .create_batch(&h.upload(text.as_bytes()).await, "24h")
        .await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(b["request_counts"]["completed"], 5, "{b}");
    assert_eq!(done(&named.stats), 5);
    assert_eq!((done(&r1.stats), done(&r2.stats)), (n1, n2));

    let unknown = text.replace("model-a", "model-z");
    let b = h
        .create_batch(&h.upload(unknown.as_bytes()).await, "24h")
        .await;
    let b = h
        .wait(b["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    assert_eq!(b["status"], "failed", "{b}");
    let message = b["errors"]["data"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("'model-z'")
            && message.ends_with("The upstream serves: 'model-a', 'test-model'."),
        "{message}"
    );

    // One replica killed mid-batch: the other takes its requests.
    let file = h
        .upload(&chat_file(&texts(60, |i| format!("slow:30 failover {i}"))))
        .await;
    let b = h.create_batch(&file, "24h").await;
    let id = b["id"].as_str().unwrap().to_owned();
    h.until_completed(&id, 10).await;
    r1.kill();
    let b = h.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(
        b["request_counts"],
        json!({"total": 60, "completed": 60, "failed": 0}),
        "{b}"
    );
    let (_, health) = h.get("/health").await;
    let ups = health["upstreams"].as_array().unwrap();
    assert_eq!(ups.len(), 3, "{health}");
    assert_eq!(ups[0]["model"], "model-a");
    assert_eq!(
        (&ups[1]["up"], &ups[2]["up"]),
        (&json!(false), &json!(true)),
        "{health}"
    );
}

/// An engine that publishes its queue (vLLM's `/metrics`): while requests
/// wait inside it, batch requests yield (the limit is cut and does not
/// grow); with none waiting, the limit grows with the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_queues_makes_batch_requests_yield() {
    for waiting in [0u64, 5] {
        let opts = batchkit_testkit::Options {
            queue: Some(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
                waiting,
            ))),
            ..Default::default()
        };
        let h = Harness::with_upstream(opts, |c| c.concurrency = 64).await;
        // The queue is read every two seconds.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let file = h
            .upload(&chat_file(&texts(120, |i| format!("slow:10 q {i}"))))
            .await;
        let b = h.create_batch(&file, "24h").await;
        let b = h
            .wait(b["id"].as_str().unwrap(), Duration::from_secs(30))
            .await;
        assert_eq!(b["request_counts"]["completed"], 120, "{b}");
        let (_, health) = h.get("/health").await;
        let limit = health["upstreams"][0]["concurrency_limit"]
            .as_u64()
            .unwrap();
        if waiting == 0 {
            assert!(limit > 8, "the limit grows: {health}");
        } else {
            assert!(limit <= 3, "the limit yields: {health}");
        }
    }
}

/// Requests that wait on an engine which was replaced behind the same
/// address (its models stamped anew), while the address still answers, are
/// sent again at once when a stall has the upstream probed, instead of
/// waiting for `--request-timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_to_an_engine_replaced_behind_the_address_are_sent_again() {
    let engine = batchkit_testkit::Killable::start(batchkit_testkit::Options {
        models: Some(vec!["test-model".to_owned()]),
        ..Default::default()
    });
    let url = engine.url();
    let h = Harness::new(|c| {
        c.upstreams = vec![url.parse().unwrap()];
        c.concurrency = 4;
        c.stall_timeout = Duration::from_secs(1);
        c.request_timeout = Duration::from_secs(600);
    })
    .await;
    let file = h
        .upload(&chat_file(&texts(30, |i| format!("slow:20 {i}"))))
        .await;
    let b = h.create_batch(&file, "24h").await;
    let id = b["id"].as_str().unwrap().to_owned();
    h.until_completed(&id, 5).await;
    let opts = engine.options();
    let stall = |on| opts.stall.store(on, std::sync::atomic::Ordering::Relaxed);
    stall(true);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new engine: what hangs now hangs for good; new requests are answered.
    opts.generation
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    stall(false);
    let b = h.wait(&id, Duration::from_secs(20)).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert_eq!(b["request_counts"]["completed"], 30, "{b}");
    let (_, health) = h.get("/health").await;
    assert_eq!(
        health["upstreams"][0]["up"], true,
        "not taken as down: {health}"
    );
}

/// Tenants share the upstream by weight: two tenants of weights 1 and 3,
/// each with a backlog, get about 25% and 75% of the upstream's requests
/// while both wait; a tenant's small batch gets through while another's
/// large one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_share_the_upstream_by_weight() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    let tenant = |name: &str, key: &str, weight: u32| {
        format!(
            "[[tenant]]\nname = \"{name}\"\nkeys = [\"{}\"]\nweight = {weight}\n\n",
            batchkit_server::tenants::hash_key(key)
        )
    };
    std::fs::write(
        &file,
        tenant("light", "sk-light", 1)
            + &tenant("heavy", "sk-heavy", 3)
            + &tenant("small", "sk-small", 1),
    )
    .unwrap();
    let h = Harness::new(|c| {
        c.tenants_file = Some(file.clone());
        c.concurrency = 4;
    })
    .await;
    let create = |key: &'static str, text: &'static str, n: usize| {
        let content = chat_file(&texts(n, |i| format!("slow:20 {text} {i}")));
        let h = &h;
        async move { h.create_as(Some(key), &content).await }
    };
    create("sk-light", "light", 600).await;
    create("sk-heavy", "heavy", 600).await;
    let seen = |p: &str| h.upstream.stats.seen_prefix(p);
    while seen("slow:20 light") < 20 || seen("slow:20 heavy") < 20 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Four windows of half a second: each tenant's upstream requests.
    let mut windows = Vec::new();
    let (mut l, mut hv) = (seen("slow:20 light"), seen("slow:20 heavy"));
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (l1, h1) = (seen("slow:20 light"), seen("slow:20 heavy"));
        windows.push((h1 - hv, l1 - l));
        (l, hv) = (l1, h1);
    }
    let share = |(h, l): (u64, u64)| h as f64 / (h + l) as f64;
    let total = windows.iter().fold((0, 0), |(h, l), w| (h + w.0, l + w.1));
    eprintln!(
        "weights 1:3, heavy's share per 0.5 s window: {:?}; over 2 s: {:.1}% ({} against {})",
        windows
            .iter()
            .map(|w| format!("{:.1}%", share(*w) * 100.0))
            .collect::<Vec<_>>(),
        share(total) * 100.0,
        total.0,
        total.1
    );
    assert!(
        (0.65..=0.85).contains(&share(total)),
        "heavy got {:.0}% over 2 s: {windows:?}",
        share(total) * 100.0
    );
    for w in &windows {
        assert!(
            (0.55..=0.95).contains(&share(*w)),
            "heavy got {:.0}% in a window: {windows:?}",
            share(*w) * 100.0
        );
    }
    // A small batch gets through while both backlogs run.
    let started = std::time::Instant::now();
    let small = create("sk-small", "small", 10).await;
    h.poll_as(
        Some("sk-small"),
        &small,
        |s| s == "completed",
        Duration::from_secs(10),
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        seen("slow:20 heavy") < 600,
        "the small batch was not held up behind the backlog"
    );
    // Usage per tenant, for billing.
    let metrics = h
        .client
        .get(h.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"batchkit_tenant_requests_total{tenant="small",model="test-model",outcome="succeeded"} 10"#),
        "{metrics}"
    );
    // The test upstream counts a word of the text and the model's answer:
    // "slow:20 small i" is 3 input and 2 output tokens.
    assert!(
        metrics.contains(
            r#"batchkit_tenant_tokens_total{tenant="small",model="test-model",kind="input"} 30"#
        ) && metrics.contains(
            r#"batchkit_tenant_tokens_total{tenant="small",model="test-model",kind="output"} 20"#
        ),
        "{metrics}"
    );
}

/// An enqueued-token quota: a batch that would take its tenant over the
/// limit fails as OpenAI's does (`token_limit_exceeded`, OpenAI's message),
/// and once the batch holding the tokens completes, the same batch runs.
/// Tokens are estimated as the input's BPE count plus `max_tokens`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_quota_fails_a_batch_over_it_and_frees_as_batches_finish() {
    let mut lines = String::new();
    for i in 0..20 {
        let line = json!({"custom_id": format!("r-{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "test-model", "max_tokens": 50,
                "messages": [{"role": "user", "content": format!("slow:100 quota {i}")}]}});
        lines.push_str(&format!("{line}\n"));
    }
    let counter = batchkit_core::tokens::TokenCounter { forced: None };
    let one = counter.enqueued(lines.as_bytes());
    assert!(one > 20 * 50, "input counted besides max_tokens: {one}");
    // Room for one such batch and a half.
    let limit = one + one / 2;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    std::fs::write(
        &file,
        format!(
            "[[tenant]]\nname = \"acme\"\nkeys = [\"{}\"]\nenqueued_tokens_per_model = {{ \"test-model\" = {limit} }}\n\n\
             [[tenant]]\nname = \"other\"\nkeys = [\"{}\"]\nenqueued_tokens = {limit}\n",
            batchkit_server::tenants::hash_key("sk-acme"),
            batchkit_server::tenants::hash_key("sk-other"),
        ),
    )
    .unwrap();
    let h = Harness::new(|c| {
        c.tenants_file = Some(file.clone());
        c.concurrency = 2;
    })
    .await;
    let create = |key: &'static str| h.create_as(Some(key), lines.as_bytes());
    let status = |key: &'static str, id: String| {
        let h = &h;
        async move {
            h.poll_as(
                Some(key),
                &id,
                |s| s != "validating",
                Duration::from_secs(10),
            )
            .await
        }
    };
    let first = create("sk-acme").await;
    assert_eq!(
        status("sk-acme", first.clone()).await["status"],
        "in_progress"
    );
    // Another tenant's quota is its own.
    let theirs = create("sk-other").await;
    assert_eq!(status("sk-other", theirs).await["status"], "in_progress");
    let second = create("sk-acme").await;
    let b = status("sk-acme", second).await;
    assert_eq!(b["status"], "failed", "{b}");
    let e = &b["errors"]["data"][0];
    assert_eq!(e["code"], "token_limit_exceeded", "{b}");
    assert_eq!(
        e["message"],
        format!(
            "Enqueued token limit reached for test-model in organization acme. Limit: {} enqueued tokens. \
             Please try again once some in_progress batches have been completed.",
            batchkit_core::diag::thousands(limit)
        )
    );
    assert_eq!(b["request_counts"]["total"], 20);
    // The first completes: its tokens are free again.
    let (_, done) = h
        .get_as(Some("sk-acme"), &format!("/v1/batches/{first}"))
        .await;
    assert_ne!(done["status"], "completed", "the first was still running");
    h.poll_as(
        Some("sk-acme"),
        &first,
        |s| s == "completed",
        Duration::from_secs(20),
    )
    .await;
    let third = create("sk-acme").await;
    assert_eq!(status("sk-acme", third).await["status"], "in_progress");
}

/// What a webhook receiver got: each delivery's headers and body.
type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(axum::http::HeaderMap, String)>>>;

/// A receiver on loopback that answers 200 to every delivery and keeps
/// them; its URL.
async fn receiver() -> (String, Deliveries) {
    let got = Deliveries::default();
    let kept = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push((headers, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// A tenant's webhook tells it of its batches' ends (here a cancelled
/// batch and an expired one), signed with its secret; a tenant without a
/// webhook is told nothing, and its events leave the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_webhook_tells_of_cancelled_and_expired_batches() {
    use batchkit_server::tenants::hash_key;
    use batchkit_server::webhooks::{new_secret, parse_secret, sign};
    let (url, got) = receiver().await;
    let secret = new_secret();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tenants.toml");
    std::fs::write(
        &file,
        format!(
            "[[tenant]]\nname = \"hooked\"\nkeys = [\"{}\"]\nwebhook_url = \"{url}\"\nwebhook_secret = \"{secret}\"\n\n\
             [[tenant]]\nname = \"quiet\"\nkeys = [\"{}\"]\n",
            hash_key("sk-hooked"),
            hash_key("sk-quiet"),
        ),
    )
    .unwrap();
    let h = Harness::new(|c| {
        c.tenants_file = Some(file.clone());
        c.concurrency = 1;
    })
    .await;
    let key = Some("sk-hooked");
    let slow = chat_file(&texts(50, |i| format!("slow:200 {i}")));
    let cancelled = h.create_as(key, &slow).await;
    h.poll_as(
        key,
        &cancelled,
        |s| s == "in_progress",
        Duration::from_secs(10),
    )
    .await;
    let (s, _, _) = h
        .post_as(key, &format!("/v1/batches/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(s, 200);
    let (_, f) = h.upload_as(key, "slow.jsonl", &slow).await;
    let (s, b, _) = h
        .post_as(key, "/v1/batches", &json!({"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "2s"}))
        .await;
    assert_eq!(s, 200, "{b}");
    let expired = b["id"].as_str().unwrap().to_owned();
    let quiet = h
        .create_as(
            Some("sk-quiet"),
            &chat_file(&texts(2, |i| format!("hi {i}"))),
        )
        .await;
    for (k, id) in [
        (key, &cancelled),
        (key, &expired),
        (Some("sk-quiet"), &quiet),
    ] {
        h.poll_as(
            k,
            id,
            |s| ["cancelled", "expired", "completed"].contains(&s),
            Duration::from_secs(20),
        )
        .await;
    }
    let started = std::time::Instant::now();
    while got.lock().unwrap().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(10), "not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Time for a delivery the quiet tenant must not get.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = got.lock().unwrap().clone();
    let key_bytes = parse_secret(&secret).unwrap();
    let mut kinds = Vec::new();
    for (headers, body) in &got {
        let header = |n: &str| headers[n].to_str().unwrap().to_owned();
        let (id, ts) = (header("webhook-id"), header("webhook-timestamp"));
        let ts: i64 = ts.parse().unwrap();
        assert!((ts - batchkit_server::ids::now()).abs() < 60);
        assert_eq!(header("webhook-signature"), sign(&key_bytes, &id, ts, body));
        assert_eq!(header("content-type"), "application/json");
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            (v["object"].as_str(), v["id"].as_str()),
            (Some("event"), Some(id.as_str()))
        );
        kinds.push((
            v["type"].as_str().unwrap().to_owned(),
            v["data"]["id"].as_str().unwrap().to_owned(),
        ));
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("batch.cancelled".to_owned(), cancelled),
            ("batch.expired".to_owned(), expired)
        ],
        "only the hooked tenant's, once each"
    );
}
