//! `batchkit files` and `batchkit batches` against a real `batchkit serve`.

use crate::common;

use std::process::Output;

use common::serve::{Serve, requests};
use serde_json::Value;

/// Run `batchkit ARGS` against `serve` (its address from OPENAI_BASE_URL,
/// as a user of the SDKs would set it).
fn bk(serve: &Serve, args: &[&str]) -> Output {
    common::batchkit()
        .args(args)
        .env("OPENAI_BASE_URL", serve.url("/v1"))
        .env("OPENAI_API_KEY", "sk-cli")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn files_and_batches_through_their_whole_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &["--api-key", "sk-cli"]);
    let reqs = dir.path().join("requests.jsonl");
    std::fs::write(
        &reqs,
        requests(6, |i| {
            if i == 2 {
                "fail:400".into()
            } else {
                format!("hi {i}")
            }
        }),
    )
    .unwrap();
    let r = reqs.to_str().unwrap();

    let up = bk(&serve, &["files", "upload", r, "--format", "json"]);
    assert_eq!(up.status.code(), Some(0), "{}", stderr(&up));
    let file = &json_lines(&up)[0];
    let file_id = file["id"].as_str().unwrap();
    assert_eq!(file["object"], "file", "the service's object, unchanged");

    let human = bk(&serve, &["files", "get", file_id]);
    common::succeeded(&human);
    assert!(
        stdout(&human).starts_with(file_id) && stdout(&human).contains("requests.jsonl"),
        "{}",
        stdout(&human)
    );
    let list = bk(
        &serve,
        &["files", "list", "--purpose", "batch", "--format", "json"],
    );
    assert_eq!(json_lines(&list).len(), 1);

    let created = bk(
        &serve,
        &[
            "batches",
            "create",
            "--input-file-id",
            file_id,
            "--endpoint",
            "/v1/chat/completions",
            "--metadata",
            "team=search",
            "--output-expires-after",
            "3600",
            "--format",
            "json",
        ],
    );
    assert_eq!(created.status.code(), Some(0), "{}", stderr(&created));
    let batch = &json_lines(&created)[0];
    let id = batch["id"].as_str().unwrap().to_owned();
    assert_eq!(batch["metadata"]["team"], "search");

    let waited = bk(
        &serve,
        &[
            "batches",
            "wait",
            &id,
            "--interval",
            "0.05",
            "--timeout",
            "30s",
        ],
    );
    assert_eq!(waited.status.code(), Some(0), "{}", stderr(&waited));
    assert!(
        stdout(&waited).contains("5/6 done, 1 failed") && stdout(&waited).starts_with(&id),
        "{}",
        stdout(&waited)
    );
    // Without a terminal, status changes are reported as lines on stderr.
    assert!(stderr(&waited).contains("completed"), "{}", stderr(&waited));

    let got = bk(&serve, &["batches", "get", &id]);
    let text = stdout(&got);
    assert!(
        text.contains("status:        completed") && text.contains("metadata:      team=search"),
        "{text}"
    );

    let out_dir = dir.path().join("results");
    let dl = bk(
        &serve,
        &["batches", "download", &id, "-o", out_dir.to_str().unwrap()],
    );
    assert_eq!(dl.status.code(), Some(0), "{}", stderr(&dl));
    let output = std::fs::read_to_string(out_dir.join(format!("{id}_output.jsonl"))).unwrap();
    let errors = std::fs::read_to_string(out_dir.join(format!("{id}_error.jsonl"))).unwrap();
    assert_eq!((output.lines().count(), errors.lines().count()), (5, 1));
    assert_eq!(
        stdout(&dl).lines().count(),
        2,
        "the two paths: {}",
        stdout(&dl)
    );

    // --file uploads first; list --all follows the pages.
    for _ in 0..2 {
        let c = bk(
            &serve,
            &[
                "batches",
                "create",
                "--file",
                r,
                "--endpoint",
                "/v1/chat/completions",
            ],
        );
        assert_eq!(c.status.code(), Some(0), "{}", stderr(&c));
        assert!(stderr(&c).contains("uploaded"), "{}", stderr(&c));
    }
    let all = bk(
        &serve,
        &[
            "batches", "list", "--all", "--limit", "1", "--format", "json",
        ],
    );
    let listed = json_lines(&all);
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2]["id"], id.as_str(), "newest first");
    let one = bk(&serve, &["batches", "list", "--limit", "1"]);
    assert_eq!(stdout(&one).lines().count(), 1);

    // content to a file, atomically, and to stdout.
    let out_file = batch_output_id(&serve, &id);
    let to = dir.path().join("content.jsonl");
    let c = bk(
        &serve,
        &["files", "content", &out_file, "-o", to.to_str().unwrap()],
    );
    common::succeeded(&c);
    assert_eq!(std::fs::read_to_string(&to).unwrap(), output);
    assert_eq!(
        stdout(&bk(&serve, &["files", "content", &out_file])),
        output
    );

    // A service error: exit 1, the status, the message and the id involved.
    let cancel = bk(&serve, &["batches", "cancel", &id]);
    assert_eq!(cancel.status.code(), Some(1));
    let e = stderr(&cancel);
    assert!(
        e.contains(&format!(
            "batch {id}: HTTP 409: Cannot cancel a batch with status 'completed'."
        )),
        "{e}"
    );
    let missing = bk(&serve, &["files", "get", "file-nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("file file-nope: HTTP 404"),
        "{}",
        stderr(&missing)
    );

    let del = bk(&serve, &["files", "delete", &out_file]);
    assert_eq!(
        (del.status.code(), stdout(&del).trim()),
        (Some(0), format!("{out_file} deleted").as_str())
    );
}

fn batch_output_id(serve: &Serve, id: &str) -> String {
    let got = bk(serve, &["batches", "get", id, "--format", "json"]);
    json_lines(&got)[0]["output_file_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn wait_exits_1_and_says_why_a_batch_failed() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let bad = serve.upload(b"{\"custom_id\":\"a\"}\nnot json\n");
    let id = serve.create(&bad);
    let w = bk(&serve, &["batches", "wait", &id, "--poll-interval", "0.05"]);
    assert_eq!(w.status.code(), Some(1));
    let e = stderr(&w);
    assert!(e.contains(&format!("batch {id} ended failed:")), "{e}");
    assert!(e.contains("line 2: invalid_json_line"), "{e}");
    // Nothing to download from a failed batch, and that is not an error.
    let dl = bk(
        &serve,
        &[
            "batches",
            "download",
            &id,
            "-o",
            dir.path().to_str().unwrap(),
        ],
    );
    common::succeeded(&dl);
    assert!(
        stderr(&dl).contains("no output or error file"),
        "{}",
        stderr(&dl)
    );
}

#[test]
fn wait_gives_up_at_its_timeout_and_download_waits_for_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &["--concurrency", "1"]);
    let slow = serve.upload(&requests(50, |i| format!("slow:100 {i}")));
    let id = serve.create(&slow);
    let w = bk(
        &serve,
        &[
            "batches",
            "wait",
            &id,
            "--interval",
            "0.05",
            "--timeout",
            "0.3s",
        ],
    );
    assert_eq!(w.status.code(), Some(1));
    assert!(
        stderr(&w).contains("is still in_progress after"),
        "{}",
        stderr(&w)
    );
    let dl = bk(&serve, &["batches", "download", &id]);
    assert_eq!(dl.status.code(), Some(1));
    assert!(
        stderr(&dl).contains("batchkit batches wait"),
        "{}",
        stderr(&dl)
    );
    let c = bk(&serve, &["batches", "cancel", &id, "--format", "json"]);
    common::succeeded(&c);
    assert_eq!(json_lines(&c)[0]["status"], "cancelling");
}

#[test]
fn limits_are_checked_locally_and_nothing_is_sent() {
    // Nothing listens here: a request would fail with exit 2 and "cannot reach".
    let env = [("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")];
    let run = |args: &[&str]| common::batchkit().args(args).envs(env).output().unwrap();
    let many: Vec<String> = (0..17).map(|i| format!("--metadata=k{i}=v")).collect();
    let mut args = vec![
        "batches",
        "create",
        "--input-file-id",
        "file-x",
        "--endpoint",
        "/v1/embeddings",
    ];
    args.extend(many.iter().map(String::as_str));
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("at most 16 pairs"), "{}", stderr(&o));
    let o = run(&[
        "batches",
        "create",
        "--input-file-id",
        "f",
        "--endpoint",
        "/v1/embeddings",
        "--output-expires-after",
        "60",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("output_expires_after.seconds"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("cannot reach"));
    let o = run(&[
        "batches",
        "create",
        "--input-file-id",
        "f",
        "--endpoint",
        "/v1/embeddings",
        "--metadata",
        "novalue",
    ]);
    assert_eq!(o.status.code(), Some(2));
    // And a service that does not answer is exit 2, saying where it tried.
    let o = run(&["batches", "list", "--max-retries", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("cannot reach http://127.0.0.1:9/v1/batches"),
        "{}",
        stderr(&o)
    );
}

/// `OPENAI_BASE_URL` without `/v1` once gave "HTTP 404: Invalid URL (GET
/// /batches)" and nothing more; the message now names the missing `/v1`.
#[test]
fn a_base_url_without_v1_gets_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), &[]);
    let o = common::batchkit()
        .args(["batches", "list"])
        .env("OPENAI_BASE_URL", &serve.base)
        .env("OPENAI_API_KEY", "sk-cli")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("HTTP 404"), "{err}");
    assert!(
        err.contains(&format!(
            "has no /v1, under which OpenAI-compatible APIs answer: try {}/v1",
            serve.base
        )),
        "{err}"
    );
}
