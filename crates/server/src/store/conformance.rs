//! The cases every job store must pass, whatever its backend: results
//! recorded once, status changes only as the lifecycle allows, cancels,
//! paging, tenants kept apart, file records. Each backend's tests call
//! [`run`] on a fresh store; the cases use their own ids, so one store
//! serves them all.

use tokio::io::AsyncReadExt;

use super::{Cancel, FileStore, Finish, JobStore, ListError, Page, ResultRow};
use crate::objects::{BatchRecord, FileRecord, Stamps, Status, Usage};

/// Run every case on `store`, which must be empty.
pub async fn run(store: &dyn JobStore) {
    results_are_recorded_once(store).await;
    status_changes_follow_the_lifecycle(store).await;
    cancel_only_what_can_be_cancelled(store).await;
    lists_page_newest_first_and_keep_tenants_apart(store).await;
    file_records(store).await;
}

fn batch(id: &str, tenant: &str, input: &str, created_at: i64) -> BatchRecord {
    BatchRecord {
        id: id.into(),
        tenant: tenant.into(),
        endpoint: "/v1/chat/completions".into(),
        model: None,
        input_file_id: input.into(),
        completion_window: "24h".into(),
        status: Status::Validating,
        output_file_id: None,
        error_file_id: None,
        created_at,
        expires_at: created_at + 86_400,
        stamps: Stamps::default(),
        total: 0,
        completed: 0,
        failed: 0,
        metadata: None,
        errors: None,
        usage: Usage::default(),
        output_expires_after: None,
    }
}

fn file(id: &str, tenant: &str, expires_at: Option<i64>) -> FileRecord {
    FileRecord {
        id: id.into(),
        tenant: tenant.into(),
        bytes: 1,
        created_at: 10,
        expires_at,
        filename: "f.jsonl".into(),
        purpose: "batch".into(),
    }
}

fn row(line: u64, ok: bool) -> ResultRow {
    ResultRow {
        line,
        ok,
        body: format!("{{\"line\":{line}}}"),
        usage: Usage {
            input_tokens: 1,
            total_tokens: 1,
            ..Usage::default()
        },
    }
}

fn finish(status: Status, completed: u64, failed: u64, at: i64) -> Finish {
    Finish {
        status,
        output: None,
        error: None,
        completed,
        failed,
        total: completed + failed,
        at,
    }
}

async fn results_are_recorded_once(s: &dyn JobStore) {
    s.insert_batch(&batch("batch-rec", "t", "file-in", 100))
        .await
        .expect("insert");
    assert!(
        s.begin("batch-rec", 3, Some("m"), 101)
            .await
            .expect("begin")
    );
    s.record("batch-rec", &[row(1, true), row(2, false)])
        .await
        .expect("record");
    s.record("batch-rec", &[row(2, true), row(3, true), row(1, true)])
        .await
        .expect("record again");
    let b = s
        .batch("t", "batch-rec")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(
        (b.completed, b.failed, b.usage.input_tokens),
        (2, 1, 3),
        "the first result of a line counts, once"
    );
    let lines = s.recorded_lines("batch-rec").await.expect("lines");
    let recorded: Vec<u64> = (0..6).filter(|&l| lines.contains(l)).collect();
    assert_eq!(recorded, [1, 2, 3]);
    let page = s.results_after("batch-rec", 1, 1).await.expect("page");
    assert_eq!((page.len(), page[0].line, page[0].ok), (1, 2, false));
    assert!(s.finalizing("batch-rec", 150).await.expect("finalizing"));
    let done = finish(Status::Completed, 2, 1, 200);
    assert!(s.finish("batch-rec", &done).await.expect("finish"));
    assert!(
        !s.finish("batch-rec", &done).await.expect("finish twice"),
        "a batch ends once"
    );
    assert!(
        s.results_after("batch-rec", 0, 10)
            .await
            .expect("page")
            .is_empty(),
        "an ended batch keeps no results in flight"
    );
    let b = s
        .batch("t", "batch-rec")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(
        (
            b.status,
            b.stamps.completed,
            b.completed + b.failed,
            b.total
        ),
        (Status::Completed, Some(200), 3, 3)
    );
}

async fn status_changes_follow_the_lifecycle(s: &dyn JobStore) {
    s.insert_batch(&batch("batch-life", "t", "file-in", 100))
        .await
        .expect("insert");
    assert!(
        !s.finalizing("batch-life", 101).await.expect("finalizing"),
        "not from validating"
    );
    assert!(s.begin("batch-life", 2, None, 102).await.expect("begin"));
    assert!(
        !s.begin("batch-life", 2, None, 103).await.expect("begin"),
        "begins once"
    );
    assert!(
        !s.fail("batch-life", 2, &[], 104).await.expect("fail"),
        "a running batch is not failed by validation"
    );
    assert!(
        !s.finish("batch-life", &finish(Status::Completed, 2, 0, 105))
            .await
            .expect("finish"),
        "completed only after finalizing"
    );
    assert!(
        s.finish("batch-life", &finish(Status::Expired, 1, 1, 106))
            .await
            .expect("expire"),
        "the window may end a running batch"
    );
    let b = s
        .batch_by_id("batch-life")
        .await
        .expect("get")
        .expect("found");
    assert_eq!((b.status, b.stamps.expired), (Status::Expired, Some(106)));
    assert!(
        !s.finish("batch-life", &finish(Status::Cancelled, 1, 1, 107))
            .await
            .expect("finish"),
        "nothing leaves a final status"
    );
    assert!(
        s.finish("batch-life", &finish(Status::Failed, 0, 0, 108))
            .await
            .is_err(),
        "a batch does not finish as failed: validation fails it"
    );

    s.insert_batch(&batch("batch-invalid", "t", "file-in", 100))
        .await
        .expect("insert");
    assert!(s.fail("batch-invalid", 0, &[], 101).await.expect("fail"));
    assert!(!s.begin("batch-invalid", 1, None, 102).await.expect("begin"));
    let unfinished: Vec<String> = s
        .unfinished()
        .await
        .expect("unfinished")
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert!(
        !unfinished
            .iter()
            .any(|id| id == "batch-invalid" || id == "batch-life")
    );
}

async fn cancel_only_what_can_be_cancelled(s: &dyn JobStore) {
    s.insert_batch(&batch("batch-cancel", "t", "file-in", 100))
        .await
        .expect("insert");
    assert!(matches!(
        s.cancel("t", "batch-cancel", 5).await.expect("cancel"),
        Cancel::Cancelling(_)
    ));
    assert!(matches!(
        s.cancel("t", "batch-cancel", 6).await.expect("again"),
        Cancel::Cancelling(b) if b.stamps.cancelling == Some(5)
    ));
    assert_eq!(
        s.cancel("u", "batch-cancel", 6)
            .await
            .expect("other tenant"),
        Cancel::NotFound
    );
    assert!(
        !s.begin("batch-cancel", 1, None, 7).await.expect("begin"),
        "a cancelling batch does not start"
    );
    assert!(
        s.finish("batch-cancel", &finish(Status::Cancelled, 0, 1, 8))
            .await
            .expect("finish")
    );
    assert_eq!(
        s.cancel("t", "batch-cancel", 9).await.expect("cancel"),
        Cancel::Refused(Status::Cancelled)
    );
}

async fn lists_page_newest_first_and_keep_tenants_apart(s: &dyn JobStore) {
    for i in 0..5 {
        s.insert_batch(&batch(
            &format!("batch-page-{i}"),
            "lister",
            "file-in",
            1000 + i,
        ))
        .await
        .expect("insert");
    }
    s.insert_batch(&batch("batch-page-other", "someone", "file-in", 2000))
        .await
        .expect("insert");
    let page = |after: Option<&'static str>, limit| Page {
        after,
        limit,
        ascending: false,
    };
    let ids = |v: Vec<BatchRecord>| -> Vec<String> { v.into_iter().map(|b| b.id).collect() };
    let (first, more) = s
        .list_batches("lister", &page(None, 2))
        .await
        .expect("list");
    assert_eq!(ids(first), ["batch-page-4", "batch-page-3"]);
    assert!(more);
    let (rest, more) = s
        .list_batches("lister", &page(Some("batch-page-3"), 10))
        .await
        .expect("list");
    assert_eq!(ids(rest), ["batch-page-2", "batch-page-1", "batch-page-0"]);
    assert!(!more);
    assert!(
        matches!(
            s.list_batches("lister", &page(Some("batch-page-other"), 10))
                .await,
            Err(ListError::UnknownAfter(_))
        ),
        "another tenant's id is no cursor"
    );
    assert_eq!(
        s.batch("lister", "batch-page-other").await.expect("get"),
        None,
        "tenants are apart"
    );
    let (theirs, _) = s
        .list_batches("someone", &page(None, 10))
        .await
        .expect("list");
    assert_eq!(ids(theirs), ["batch-page-other"]);
}

async fn file_records(s: &dyn JobStore) {
    s.insert_file(&file("file-a", "t", Some(50)))
        .await
        .expect("insert");
    s.insert_file(&file("file-b", "t", Some(500)))
        .await
        .expect("insert");
    s.insert_file(&file("file-c", "u", None))
        .await
        .expect("insert");
    let expired = |now| async move {
        let files = s.expired_files(now).await.expect("expired");
        files.into_iter().map(|f| f.id).collect::<Vec<String>>()
    };
    assert_eq!(expired(49).await, Vec::<String>::new());
    assert_eq!(expired(50).await, ["file-a"]);
    assert_eq!(expired(10_000).await, ["file-a", "file-b"]);
    assert!(s.file_exists("file-c").await.expect("exists"));
    assert_eq!(
        s.file("t", "file-c").await.expect("get"),
        None,
        "tenants are apart"
    );
    let asc = Page {
        after: None,
        limit: 10,
        ascending: true,
    };
    let (files, _) = s.list_files("t", Some("batch"), &asc).await.expect("list");
    let names: Vec<String> = files.into_iter().map(|f| f.id).collect();
    assert_eq!(names, ["file-a", "file-b"]);

    s.insert_batch(&batch("batch-reads-c", "u", "file-c", 100))
        .await
        .expect("insert");
    assert_eq!(
        s.file_in_use("u", "file-c").await.expect("in use"),
        Some("batch-reads-c".to_owned())
    );
    assert!(s.delete_file("u", "file-c").await.expect("delete"));
    assert!(!s.delete_file("u", "file-c").await.expect("delete again"));
    assert!(!s.file_exists("file-c").await.expect("exists"));
}

/// Run the file store's cases on `files`, which must be empty: what is put
/// reads back whole and by byte range, a missing file is `NotFound`, and a
/// removed file is gone from the listing.
pub async fn run_files(files: &dyn FileStore) {
    let scratch = files.scratch_dir().join("upload");
    std::fs::write(&scratch, b"0123456789").expect("a scratch file");
    files.put("file-one", &scratch).expect("put");
    let read = |range: Option<std::ops::Range<u64>>| async move {
        let mut r = files.read("file-one", range).await.expect("read");
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes).await.expect("read to end");
        bytes
    };
    assert_eq!(read(None).await, b"0123456789");
    assert_eq!(read(Some(2..5)).await, b"234");
    assert_eq!(
        read(Some(8..100)).await,
        b"89",
        "a range past the end reads what there is"
    );
    assert_eq!(read(Some(20..30)).await, b"");
    let missing = files.read("file-none", None).await.map(|_| ());
    assert_eq!(
        missing.expect_err("missing").kind(),
        std::io::ErrorKind::NotFound
    );
    let listed: Vec<String> = files
        .stored()
        .expect("stored")
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(listed, ["file-one"]);
    files.remove("file-one").expect("remove");
    files.remove("file-one").expect("remove again is fine");
    assert!(files.stored().expect("stored").is_empty());
}
