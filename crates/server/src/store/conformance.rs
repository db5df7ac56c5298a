//! The cases every job store must pass, whatever its backend: results
//! recorded once, status changes only as the lifecycle allows, cancels,
//! claims, leases that run out, fencing, paging, tenants kept apart, file
//! records. Each backend's tests call
//! [`run`] on a fresh store; the cases use their own ids, so one store
//! serves them all.

use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::{
    Cancel, Chunk, Claim, FileStore, Finish, JobStore, ListError, Page, Renewed, ResultRow, Start,
    Started, StoreError, StoreResult, TokenLimit, Unit, UsageRow,
};
use crate::objects::{BatchRecord, FileRecord, Status, Usage};

/// Run every case on `store`, which must be empty.
pub async fn run(store: &dyn JobStore) {
    // The cases that claim work first: each leaves its batches ended, so
    // that the next finds only its own work.
    results_are_recorded_once(store).await;
    status_changes_follow_the_lifecycle(store).await;
    cancel_only_what_can_be_cancelled(store).await;
    leases_are_exclusive_run_out_and_fence(store).await;
    finalization_waits_for_the_chunks(store).await;
    a_restarted_node_gives_up_its_leases(store).await;
    webhook_events_wait_in_the_outbox(store).await;
    usage_counts_the_batches_that_ended_in_the_period(store).await;
    // The last that claims: it leaves batches running.
    token_limits_count_what_is_unfinished(store).await;
    lists_page_newest_first_and_keep_tenants_apart(store).await;
    file_records(store).await;
}

fn batch(id: &str, tenant: &str, input: &str, created_at: i64) -> BatchRecord {
    BatchRecord::validating(
        id.into(),
        tenant.into(),
        "/v1/chat/completions".into(),
        input.into(),
        "24h".into(),
        created_at,
        crate::ids::now() + 86_400,
    )
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

/// A lease period long enough never to run out during a case.
const LONG: Duration = Duration::from_secs(600);

/// Claim the next unit for `owner`, which must be `unit` of batch `id`.
async fn claim(s: &dyn JobStore, owner: &str, busy: &[&str], id: &str, unit: Unit) -> Claim {
    let busy: Vec<String> = busy.iter().map(|b| b.to_string()).collect();
    let c = s
        .claim(owner, LONG, &busy)
        .await
        .expect("claim")
        .unwrap_or_else(|| panic!("{owner} finds no work; expected {unit} of {id}"));
    assert_eq!(
        (
            c.lease.batch_id.as_str(),
            c.lease.unit,
            c.lease.owner.as_str()
        ),
        (id, unit, owner)
    );
    assert_eq!(c.batch.id, id);
    c
}

async fn nothing_to_claim(s: &dyn JobStore, why: &str) {
    let c = s.claim("idle", LONG, &[]).await.expect("claim");
    assert!(c.is_none(), "{why}: claimed {:?}", c.map(|c| c.lease));
}

fn chunk(unit: u32, lines: std::ops::Range<u64>, bytes: std::ops::Range<u64>) -> Chunk {
    Chunk {
        unit: Unit(unit),
        first_line: lines.start,
        end_line: lines.end,
        start: bytes.start,
        end: bytes.end,
    }
}

fn fenced<T: std::fmt::Debug>(r: StoreResult<T>, what: &str) {
    assert!(matches!(r, Err(StoreError::Fenced(_))), "{what}: {r:?}");
}

async fn results_are_recorded_once(s: &dyn JobStore) {
    let id = "batch-rec";
    s.insert_batch(&batch(id, "t", "file-in", 100))
        .await
        .expect("insert");
    let v = claim(s, "n1", &[], id, Unit::BATCH).await;
    assert_eq!((v.batch.status, v.chunk), (Status::Validating, None));
    let only = chunk(1, 1..4, 0..300);
    assert!(
        s.begin(&v.lease, 3, Some("m"), &[only], 101)
            .await
            .expect("begin")
    );
    let c = claim(s, "n1", &[], id, Unit(1)).await;
    assert_eq!(c.chunk, Some(only), "the chunk as validation cut it");
    s.record(&c.lease, &[row(1, true), row(2, false)])
        .await
        .expect("record");
    s.record(&c.lease, &[row(2, true), row(3, true), row(1, true)])
        .await
        .expect("record again");
    let b = s.batch("t", id).await.expect("get").expect("found");
    assert_eq!(
        (b.completed, b.failed, b.usage.input_tokens),
        (2, 1, 3),
        "the first result of a line counts, once"
    );
    let lines = s.recorded_lines(id, 1..4).await.expect("lines");
    let recorded: Vec<u64> = (0..6).filter(|&l| lines.contains(l)).collect();
    assert_eq!(recorded, [1, 2, 3]);
    let lines = s.recorded_lines(id, 2..3).await.expect("lines");
    let recorded: Vec<u64> = (0..6).filter(|&l| lines.contains(l)).collect();
    assert_eq!(recorded, [2], "only the lines asked for");
    let page = s.results_after(id, 1, 1).await.expect("page");
    assert_eq!((page.len(), page[0].line, page[0].ok), (1, 2, false));
    assert!(
        s.chunk_done(&c.lease, 150).await.expect("done"),
        "the last chunk done: finalizing"
    );
    let f = claim(s, "n2", &[], id, Unit::BATCH).await;
    assert_eq!(f.batch.status, Status::Finalizing);
    let done = finish(Status::Completed, 2, 1, 200);
    assert!(s.finish(&f.lease, &done).await.expect("finish"));
    fenced(
        s.finish(&f.lease, &done).await,
        "a batch ends once, and its units with it",
    );
    assert!(
        s.results_after(id, 0, 10).await.expect("page").is_empty(),
        "an ended batch keeps no results in flight"
    );
    let b = s.batch("t", id).await.expect("get").expect("found");
    assert_eq!(
        (
            b.status,
            b.stamps.completed,
            b.completed + b.failed,
            b.total
        ),
        (Status::Completed, Some(200), 3, 3)
    );
    nothing_to_claim(s, "an ended batch has no work").await;
}

async fn status_changes_follow_the_lifecycle(s: &dyn JobStore) {
    let id = "batch-life";
    s.insert_batch(&batch(id, "t", "file-in", 100))
        .await
        .expect("insert");
    let v = claim(s, "n1", &[], id, Unit::BATCH).await;
    assert!(matches!(
        s.cancel("t", id, 101).await.expect("cancel"),
        Cancel::Cancelling(_)
    ));
    // The lease is still held: each refusal below is the lifecycle's.
    assert!(
        !s.begin(&v.lease, 2, None, &[chunk(1, 1..3, 0..9)], 102)
            .await
            .expect("begin"),
        "a cancelling batch does not start"
    );
    assert!(
        !s.fail(&v.lease, 2, &[], 103).await.expect("fail"),
        "a cancelling batch is not failed by validation"
    );
    assert!(
        !s.finish(&v.lease, &finish(Status::Completed, 0, 2, 104))
            .await
            .expect("finish"),
        "completed only after finalizing"
    );
    assert!(
        s.finish(&v.lease, &finish(Status::Failed, 0, 0, 105))
            .await
            .is_err(),
        "a batch does not finish as failed: validation fails it"
    );
    assert!(
        s.finish(&v.lease, &finish(Status::Cancelled, 0, 2, 106))
            .await
            .expect("finish")
    );
    let b = s.batch_by_id(id).await.expect("get").expect("found");
    assert_eq!(
        (b.status, b.stamps.cancelled),
        (Status::Cancelled, Some(106))
    );

    let id = "batch-invalid";
    s.insert_batch(&batch(id, "t", "file-in", 100))
        .await
        .expect("insert");
    let v = claim(s, "n1", &[], id, Unit::BATCH).await;
    assert!(s.fail(&v.lease, 0, &[], 101).await.expect("fail"));
    fenced(
        s.begin(&v.lease, 1, None, &[], 102).await,
        "a failed batch has no units left",
    );
    nothing_to_claim(s, "a failed batch has no work").await;

    // An input without requests goes straight on to finalizing.
    let f = finalizing(s, "batch-empty").await;
    assert!(
        s.finish(&f.lease, &finish(Status::Completed, 0, 0, 102))
            .await
            .expect("finish")
    );
}

/// A batch of tenant `t` without requests, validated: straight on to
/// finalizing, claimed for it.
async fn finalizing(s: &dyn JobStore, id: &str) -> Claim {
    s.insert_batch(&batch(id, "t", "file-in", 100))
        .await
        .expect("insert");
    let v = claim(s, "n1", &[], id, Unit::BATCH).await;
    assert!(s.begin(&v.lease, 0, None, &[], 101).await.expect("begin"));
    let f = claim(s, "n1", &[], id, Unit::BATCH).await;
    assert_eq!(f.batch.status, Status::Finalizing);
    f
}

async fn cancel_only_what_can_be_cancelled(s: &dyn JobStore) {
    let id = "batch-cancel";
    s.insert_batch(&batch(id, "t", "file-in", 100))
        .await
        .expect("insert");
    assert!(matches!(
        s.cancel("t", id, 5).await.expect("cancel"),
        Cancel::Cancelling(_)
    ));
    assert!(matches!(
        s.cancel("t", id, 6).await.expect("again"),
        Cancel::Cancelling(b) if b.stamps.cancelling == Some(5)
    ));
    assert_eq!(
        s.cancel("u", id, 6).await.expect("other tenant"),
        Cancel::NotFound
    );
    let f = claim(s, "n1", &[], id, Unit::BATCH).await;
    assert_eq!(f.batch.status, Status::Cancelling);
    assert!(
        s.finish(&f.lease, &finish(Status::Cancelled, 0, 1, 8))
            .await
            .expect("finish")
    );
    match s.cancel("t", id, 9).await.expect("cancel") {
        Cancel::Unchanged(b) => assert_eq!(b.status, Status::Cancelled),
        other => panic!("a cancelled batch stays cancelled: {other:?}"),
    }

    // A finalizing batch finishes as it would: the cancel changes nothing.
    let id = "batch-finalizing";
    let f = finalizing(s, id).await;
    match s.cancel("t", id, 102).await.expect("cancel") {
        Cancel::Unchanged(b) => assert_eq!(b.status, Status::Finalizing),
        other => panic!("a finalizing batch is not cancelled: {other:?}"),
    }
    assert!(
        s.finish(&f.lease, &finish(Status::Completed, 0, 0, 103))
            .await
            .expect("the finalization goes on")
    );
}

/// Leases: one holder at a time; a lease not renewed runs out and is
/// taken over under a higher epoch; the old holder's writes are refused;
/// a node's busy batches are left to others; renewals say what was lost.
async fn leases_are_exclusive_run_out_and_fence(s: &dyn JobStore) {
    let id = "batch-lease";
    s.insert_batch(&batch(id, "t", "file-in", 100))
        .await
        .expect("insert");
    let short = Duration::from_millis(200);
    let a = s
        .claim("a", short, &[])
        .await
        .expect("claim")
        .expect("work");
    assert_eq!((a.lease.batch_id.as_str(), a.lease.unit), (id, Unit::BATCH));
    nothing_to_claim(s, "a held lease is no one else's").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let b = claim(s, "b", &[], id, Unit::BATCH).await;
    assert!(b.lease.epoch > a.lease.epoch, "a takeover raises the epoch");
    let chunks = [chunk(1, 1..3, 0..20), chunk(2, 3..4, 20..30)];
    fenced(
        s.begin(&a.lease, 3, None, &chunks, 101).await,
        "the former holder cannot begin",
    );
    fenced(
        s.fail(&a.lease, 3, &[], 101).await,
        "the former holder cannot fail the batch",
    );
    assert_eq!(
        s.renew(&[a.lease.clone(), b.lease.clone()], LONG)
            .await
            .expect("renew"),
        [Renewed::Lost, Renewed::Held(Status::Validating)]
    );
    assert!(
        s.begin(&b.lease, 3, None, &chunks, 102)
            .await
            .expect("begin")
    );
    fenced(
        s.begin(&b.lease, 3, None, &chunks, 103).await,
        "begin gives the batch's lease up",
    );
    let c1 = claim(s, "a", &[], id, Unit(1)).await;
    assert!(
        s.claim("a", LONG, &[id.to_owned()])
            .await
            .expect("claim")
            .is_none(),
        "a busy batch's chunks are left to other nodes"
    );
    let c2 = claim(s, "b", &[], id, Unit(2)).await;
    nothing_to_claim(s, "every chunk is held, and the batch is in progress").await;
    s.record(&c1.lease, &[row(1, true), row(2, true)])
        .await
        .expect("record");
    s.release(&c2.lease).await.expect("release");
    let c2b = claim(s, "c", &[], id, Unit(2)).await;
    assert!(c2b.lease.epoch > c2.lease.epoch);
    fenced(
        s.record(&c2.lease, &[row(3, false)]).await,
        "a released lease records nothing",
    );
    fenced(s.chunk_done(&c2.lease, 104).await, "nor ends its chunk");
    assert!(
        !s.chunk_done(&c1.lease, 104).await.expect("done"),
        "one chunk is left"
    );
    s.record(&c2b.lease, &[row(3, true)]).await.expect("record");
    nothing_to_claim(s, "the last chunk is held").await;
    assert!(s.chunk_done(&c2b.lease, 105).await.expect("done"));
    let f = claim(s, "a", &[], id, Unit::BATCH).await;
    assert_eq!(f.batch.status, Status::Finalizing);
    assert!(
        s.finish(&f.lease, &finish(Status::Completed, 3, 0, 106))
            .await
            .expect("finish")
    );
    assert_eq!(
        s.renew(&[c1.lease, c2b.lease, f.lease], LONG)
            .await
            .expect("renew"),
        [Renewed::Lost, Renewed::Lost, Renewed::Lost],
        "an ended batch's leases are gone"
    );
    let b = s.batch_by_id(id).await.expect("get").expect("found");
    assert_eq!((b.completed, b.failed), (3, 0));
}

/// A cancelled batch, or one whose window ended, is finalized only once
/// no chunk of it is leased: the requests in flight are recorded first.
async fn finalization_waits_for_the_chunks(s: &dyn JobStore) {
    let id = "batch-stop";
    s.insert_batch(&batch(id, "t", "file-in", 100))
        .await
        .expect("insert");
    let v = claim(s, "a", &[], id, Unit::BATCH).await;
    let chunks = [chunk(1, 1..2, 0..10), chunk(2, 2..3, 10..20)];
    assert!(
        s.begin(&v.lease, 2, None, &chunks, 101)
            .await
            .expect("begin")
    );
    let c = claim(s, "a", &[], id, Unit(1)).await;
    assert!(matches!(
        s.cancel("t", id, 102).await.expect("cancel"),
        Cancel::Cancelling(_)
    ));
    assert_eq!(
        s.renew(std::slice::from_ref(&c.lease), LONG)
            .await
            .expect("renew"),
        [Renewed::Held(Status::Cancelling)],
        "the holder hears of the cancel"
    );
    nothing_to_claim(s, "a chunk of the cancelled batch is still leased").await;
    s.record(&c.lease, &[row(1, true)]).await.expect("record");
    s.release(&c.lease).await.expect("release");
    let f = claim(s, "b", &[], id, Unit::BATCH).await;
    assert_eq!(f.batch.status, Status::Cancelling);
    assert!(
        s.finish(&f.lease, &finish(Status::Cancelled, 1, 1, 103))
            .await
            .expect("finish")
    );

    // The window: a batch past it is finalized (as expired) once its
    // chunks are given up; its chunks are not claimed any more.
    let id = "batch-late";
    let mut late = batch(id, "t", "file-in", 100);
    late.expires_at = crate::ids::now() + 1;
    s.insert_batch(&late).await.expect("insert");
    let v = claim(s, "a", &[], id, Unit::BATCH).await;
    assert!(
        s.begin(&v.lease, 2, None, &chunks, 101)
            .await
            .expect("begin")
    );
    let c = claim(s, "a", &[], id, Unit(1)).await;
    while crate::ids::now() < late.expires_at {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nothing_to_claim(s, "chunk 2 is past the window; chunk 1 is leased").await;
    s.release(&c.lease).await.expect("release");
    let f = claim(s, "b", &[], id, Unit::BATCH).await;
    assert_eq!(f.batch.status, Status::InProgress);
    assert!(
        s.finish(&f.lease, &finish(Status::Expired, 0, 2, 104))
            .await
            .expect("finish")
    );
}

/// A node that starts again gives up what its former run held (or, on a
/// store only one server uses, every lease at all).
async fn a_restarted_node_gives_up_its_leases(s: &dyn JobStore) {
    let id = "batch-restart";
    s.insert_batch(&batch(id, "t", "file-in", 100))
        .await
        .expect("insert");
    claim(s, "x", &[], id, Unit::BATCH).await;
    assert_eq!(s.release_all(Some("y")).await.expect("release"), 0);
    nothing_to_claim(s, "x still holds it").await;
    assert_eq!(s.release_all(Some("x")).await.expect("release"), 1);
    let v = claim(s, "y", &[], id, Unit::BATCH).await;
    assert_eq!(s.release_all(None).await.expect("release"), 1);
    let v2 = claim(s, "z", &[], id, Unit::BATCH).await;
    fenced(s.fail(&v.lease, 0, &[], 101).await, "y's lease is gone");
    assert!(s.fail(&v2.lease, 0, &[], 101).await.expect("fail"));
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
    assert!(s.file_needed("file-c").await.expect("needed"));
    assert_eq!(s.unfinished_batches("u").await.expect("count"), 0);
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
    assert_eq!(s.unfinished_batches("u").await.expect("count"), 1);
    assert_eq!(s.unfinished_batches("t").await.expect("count"), 0);
    assert!(s.delete_file("u", "file-c").await.expect("delete"));
    assert!(!s.delete_file("u", "file-c").await.expect("delete again"));
    assert_eq!(s.file("u", "file-c").await.expect("get"), None);
    assert!(
        s.file_needed("file-c").await.expect("needed"),
        "an unfinished batch still reads the bytes of its deleted input"
    );
    assert!(s.delete_file("t", "file-a").await.expect("delete"));
    assert!(!s.file_needed("file-a").await.expect("needed"));
}

/// Run the file store's cases on `files`, which must be empty: what is
/// written reads back whole and by byte range, also when it took many
/// writes and more than one part of an object store's multipart upload; a
/// writer dropped without a commit stores nothing; a missing file is
/// `NotFound`; a removed file is gone from the listing.
pub async fn run_files(files: &dyn FileStore) {
    super::put_bytes(files, "file-one", b"0123456789")
        .await
        .expect("put");
    let read = |id: &'static str, range: Option<std::ops::Range<u64>>| async move {
        let mut r = files.read(id, range).await.expect("read");
        let mut bytes = Vec::new();
        r.read_to_end(&mut bytes).await.expect("read to end");
        bytes
    };
    assert_eq!(read("file-one", None).await, b"0123456789");
    assert_eq!(read("file-one", Some(2..5)).await, b"234");
    assert_eq!(
        read("file-one", Some(8..100)).await,
        b"89",
        "a range past the end reads what there is"
    );
    assert_eq!(read("file-one", Some(20..30)).await, b"");
    let missing = files.read("file-none", None).await.map(|_| ());
    assert_eq!(
        missing.expect_err("missing").kind(),
        std::io::ErrorKind::NotFound
    );

    // 20 MiB in 64 KiB writes: several parts of a multipart upload.
    let block: Vec<u8> = (0..65_536u32).map(|i| (i % 251) as u8).collect();
    let mut w = files.create("file-big").await.expect("create");
    for _ in 0..320 {
        w.write(bytes::Bytes::copy_from_slice(&block))
            .await
            .expect("write");
    }
    w.commit().await.expect("commit");
    let whole = read("file-big", None).await;
    assert_eq!(whole.len(), 320 * 65_536);
    assert!(whole.chunks(65_536).all(|c| c == block.as_slice()));
    let at = 13 * 1024 * 1024 + 7;
    assert_eq!(
        read("file-big", Some(at..at + 100_000)).await,
        &whole[at as usize..at as usize + 100_000],
        "a range across a part boundary"
    );

    // Past one part: an object store's multipart upload has begun.
    let mut dropped = files.create("file-dropped").await.expect("create");
    for _ in 0..160 {
        dropped
            .write(bytes::Bytes::copy_from_slice(&block))
            .await
            .expect("write");
    }
    drop(dropped);
    let gone = files.read("file-dropped", None).await.map(|_| ());
    assert_eq!(
        gone.expect_err("not stored").kind(),
        std::io::ErrorKind::NotFound
    );

    let mut listed: Vec<String> = files
        .stored()
        .await
        .expect("stored")
        .into_iter()
        .map(|f| f.id)
        .collect();
    listed.sort();
    assert_eq!(listed, ["file-big", "file-one"]);
    for id in ["file-one", "file-big"] {
        files.remove(id).await.expect("remove");
        files.remove(id).await.expect("remove again is fine");
    }
    assert!(files.stored().await.expect("stored").is_empty());
}

/// A start over an enqueued-token limit leaves the batch validating; a
/// running batch holds its tokens in proportion to its unfinished
/// requests; limits per model count that model's batches only; tenants
/// are apart.
async fn token_limits_count_what_is_unfinished(s: &dyn JobStore) {
    let limit = |model: Option<&str>, limit| TokenLimit {
        model: model.map(str::to_owned),
        limit,
    };
    let start = |total: u64, model: &str, tokens, limits| Start {
        total,
        model: Some(model.to_owned()),
        chunks: vec![chunk(1, 1..total + 1, 0..100)],
        tokens,
        limits,
    };
    let ids = ["batch-q1", "batch-q2", "batch-q3", "batch-q4"];
    for (i, id) in ids.iter().enumerate() {
        let tenant = if i < 3 { "tq" } else { "tr" };
        s.insert_batch(&batch(id, tenant, "file-in", 300 + i as i64))
            .await
            .expect("insert");
    }
    let mut v = Vec::new();
    for id in ids {
        v.push(claim(s, "n1", &[], id, Unit::BATCH).await.lease);
    }
    let started = |r: StoreResult<Started>| r.expect("start");
    assert_eq!(
        started(
            s.start(&v[0], &start(10, "m", 600, vec![limit(None, 1000)]), 310)
                .await
        ),
        Started::Started
    );
    assert_eq!(
        started(
            s.start(
                &v[1],
                &start(4, "m", 500, vec![limit(Some("m"), 1000)]),
                311
            )
            .await
        ),
        Started::OverLimit {
            limit: limit(Some("m"), 1000),
            held: 600
        }
    );
    let b = s
        .batch("tq", "batch-q2")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(b.status, Status::Validating, "left as it was");
    // Half of the first batch's requests finish: it holds half its tokens.
    let c = claim(s, "n2", &[], "batch-q1", Unit(1)).await;
    let rows: Vec<ResultRow> = (1..=5).map(|l| row(l, l % 2 == 0)).collect();
    s.record(&c.lease, &rows).await.expect("record");
    assert_eq!(
        started(
            s.start(&v[1], &start(4, "m", 500, vec![limit(None, 1000)]), 312)
                .await
        ),
        Started::Started
    );
    // 300 + 500 held across models; model n holds nothing yet.
    assert_eq!(
        started(
            s.start(
                &v[2],
                &start(2, "n", 400, vec![limit(Some("n"), 400), limit(None, 1000)]),
                313
            )
            .await
        ),
        Started::OverLimit {
            limit: limit(None, 1000),
            held: 800
        }
    );
    assert_eq!(
        started(
            s.start(&v[2], &start(2, "n", 400, vec![limit(Some("n"), 400)]), 314)
                .await
        ),
        Started::Started
    );
    assert_eq!(
        started(
            s.start(&v[3], &start(2, "m", 1000, vec![limit(None, 1000)]), 315)
                .await
        ),
        Started::Started,
        "another tenant's batches hold none of this one's limit"
    );
    let b = s
        .batch("tq", "batch-q2")
        .await
        .expect("get")
        .expect("found");
    assert_eq!((b.status, b.total), (Status::InProgress, 4));
}

/// A batch's end puts its event in the outbox in the same step; a caller
/// holds a due event for a while; a failed delivery comes due again
/// later; a delivered one is gone.
async fn webhook_events_wait_in_the_outbox(s: &dyn JobStore) {
    let hold = Duration::from_secs(60);
    // The ends of the cases before: delivered, as far as this case goes.
    for e in s.due_events(i64::MAX / 2, hold, 1000).await.expect("due") {
        s.event_done(&e.id).await.expect("done");
    }
    assert_eq!(s.pending_events().await.expect("pending"), 0);
    let id = "batch-hook";
    s.insert_batch(&batch(id, "th", "file-in", 500))
        .await
        .expect("insert");
    let v = claim(s, "n1", &[], id, Unit::BATCH).await;
    let now = crate::ids::now_ms();
    assert!(
        s.due_events(now + 1000, hold, 10)
            .await
            .expect("due")
            .is_empty(),
        "no event before the batch ends"
    );
    assert!(s.fail(&v.lease, 0, &[], 501).await.expect("fail"));
    let due = s.due_events(now + 1000, hold, 10).await.expect("due");
    assert_eq!(due.len(), 1, "{due:?}");
    let e = &due[0];
    assert!(e.id.starts_with("evt_"), "{e:?}");
    assert_eq!(
        (
            e.tenant.as_str(),
            e.batch_id.as_str(),
            e.kind.as_str(),
            e.created_at,
            e.attempts
        ),
        ("th", id, "batch.failed", 501, 0)
    );
    assert!(
        s.due_events(now + 2000, hold, 10)
            .await
            .expect("due")
            .is_empty(),
        "held by the first caller"
    );
    assert_eq!(
        s.due_events(now + 1000 + 61_000, hold, 10)
            .await
            .expect("due")
            .len(),
        1,
        "a holder that died leaves it to another"
    );
    s.event_retry(e, now + 200_000, "503 from the receiver")
        .await
        .expect("retry");
    assert!(
        s.due_events(now + 199_000, hold, 10)
            .await
            .expect("due")
            .is_empty()
    );
    let again = s.due_events(now + 200_000, hold, 10).await.expect("due");
    assert_eq!((again.len(), again[0].attempts), (1, 1));
    assert_eq!(s.pending_events().await.expect("pending"), 1);
    s.event_done(&e.id).await.expect("done");
    assert_eq!(s.pending_events().await.expect("pending"), 0);
}

/// Usage by tenant and model counts each batch that ended in the period
/// once, with its requests and tokens; the period's end is not in it.
async fn usage_counts_the_batches_that_ended_in_the_period(s: &dyn JobStore) {
    let id = "batch-use";
    s.insert_batch(&batch(id, "tu", "file-in", 4000))
        .await
        .expect("insert");
    let v = claim(s, "n1", &[], id, Unit::BATCH).await;
    assert!(
        s.begin(&v.lease, 2, Some("m"), &[chunk(1, 1..3, 0..20)], 4001)
            .await
            .expect("begin")
    );
    let c = claim(s, "n1", &[], id, Unit(1)).await;
    s.record(&c.lease, &[row(1, true), row(2, false)])
        .await
        .expect("record");
    assert!(s.chunk_done(&c.lease, 4002).await.expect("done"));
    let f = claim(s, "n1", &[], id, Unit::BATCH).await;
    assert!(
        s.finish(&f.lease, &finish(Status::Completed, 1, 1, 5000))
            .await
            .expect("finish")
    );
    let of = |rows: Vec<UsageRow>, tenant: &str| -> Vec<UsageRow> {
        rows.into_iter().filter(|r| r.tenant == tenant).collect()
    };
    let rows = of(s.usage(4000, 6000).await.expect("usage"), "tu");
    assert_eq!(
        rows,
        [UsageRow {
            tenant: "tu".into(),
            model: Some("m".into()),
            batches: 1,
            completed: 1,
            failed: 1,
            usage: Usage {
                input_tokens: 2,
                total_tokens: 2,
                ..Usage::default()
            },
        }]
    );
    assert!(of(s.usage(0, 5000).await.expect("usage"), "tu").is_empty());
    assert!(of(s.usage(5001, 9000).await.expect("usage"), "tu").is_empty());
    // A batch that failed at validation has no model.
    let failed = of(s.usage(500, 502).await.expect("usage"), "th");
    assert_eq!(
        (failed.len(), failed[0].model.as_deref(), failed[0].batches),
        (1, None, 1)
    );
}
