"""The whole batch lifecycle through the official `openai` SDK, unchanged,
against `batchkit serve`.

usage: lifecycle.py BASE_URL API_KEY REQUESTS SLOW_REQUESTS OUT_DIR

Prints one JSON object with what it saw; exits non-zero on any surprise.
"""

import json
import sys
import time

import openai
from openai import OpenAI


def wait(client, batch_id, terminal=("completed", "failed", "expired", "cancelled"), timeout=60):
    deadline = time.time() + timeout
    while True:
        b = client.batches.retrieve(batch_id)
        if b.status in terminal:
            return b
        if time.time() > deadline:
            raise SystemExit(f"batch {batch_id} still {b.status} after {timeout}s")
        time.sleep(0.1)


def main():
    base_url, key, requests, slow, out_dir = sys.argv[1:6]
    client = OpenAI(base_url=base_url, api_key=key, max_retries=2)
    seen = {}

    with open(requests, "rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    assert uploaded.object == "file" and uploaded.purpose == "batch", uploaded
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "sdk-test"},
    )
    assert batch.status == "validating", batch
    done = wait(client, batch.id)
    assert done.status == "completed", done
    assert done.metadata == {"job": "sdk-test"}, done.metadata
    counts = done.request_counts
    assert counts.completed + counts.failed == counts.total, counts
    seen["counts"] = counts.model_dump()
    seen["usage_total"] = done.usage.total_tokens if done.usage else None

    for name, file_id in (("output", done.output_file_id), ("error", done.error_file_id)):
        if file_id:
            content = client.files.content(file_id)
            with open(f"{out_dir}/{name}.jsonl", "wb") as f:
                f.write(content.content)
            seen[name] = file_id

    # Cancel a slow batch while it runs.
    with open(slow, "rb") as f:
        slow_file = client.files.create(file=f, purpose="batch")
    running = client.batches.create(
        input_file_id=slow_file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while client.batches.retrieve(running.id).request_counts.completed < 1:
        time.sleep(0.05)
    cancelling = client.batches.cancel(running.id)
    assert cancelling.status in ("cancelling", "cancelled"), cancelling
    cancelled = wait(client, running.id)
    assert cancelled.status == "cancelled", cancelled
    c = cancelled.request_counts
    assert c.completed + c.failed == c.total, c
    seen["cancelled_counts"] = c.model_dump()

    # Cancelling a finished batch is a 409 the SDK does not retry.
    try:
        client.batches.cancel(batch.id)
        raise SystemExit("cancelling a completed batch succeeded")
    except openai.ConflictError as e:
        assert e.status_code == 409, e
        seen["conflict"] = e.body["message"] if isinstance(e.body, dict) else e.message

    # Auto-paging walks every batch, newest first, two at a time.
    ids = [b.id for b in client.batches.list(limit=2)]
    assert ids[:2] == [running.id, batch.id], ids
    seen["listed"] = len(ids)
    page = client.batches.list(limit=1)
    assert page.has_more and len(page.data) == 1

    files = [f.id for f in client.files.list(purpose="batch")]
    assert uploaded.id in files and slow_file.id in files, files

    try:
        client.batches.retrieve("batch_doesnotexist")
        raise SystemExit("a missing batch was found")
    except openai.NotFoundError:
        pass

    deleted = client.files.delete(slow_file.id)
    assert deleted.deleted, deleted

    errors(client, uploaded.id, seen)
    print(json.dumps(seen))


def refused(call, status):
    """The error a call must end in; every one has a request id."""
    try:
        call()
    except openai.APIStatusError as e:
        assert e.status_code == status, (e.status_code, e.body)
        assert (e.request_id or "").startswith("req_"), e.response.headers
        return e
    raise SystemExit(f"expected a {status}")


def errors(client, file_id, seen):
    """The error cases, shaped as OpenAI's (status, code, param, message,
    request id), from the replies recorded against the real service."""
    b = client.batches.list(limit=1)
    assert b._request_id.startswith("req_"), b._request_id
    create = dict(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")

    e = refused(lambda: client.batches.create(**{**create, "endpoint": "/v1/invalid/endpoint"}), 400)
    assert isinstance(e, openai.BadRequestError)
    assert (e.code, e.param) == ("invalid_value", "endpoint"), e.body
    assert "supported values" in e.message.lower() and "/v1/invalid/endpoint" in e.message, e.message
    seen["bad_endpoint"] = e.code

    for window in ("1h", "48h", "invalid", ""):
        e = refused(lambda: client.batches.create(**{**create, "completion_window": window}), 400)
        assert (e.code, e.param) == ("invalid_value", "completion_window"), e.body

    e = refused(lambda: client.batches.create(**create, metadata={"tags": ["tag1", "tag2"]}), 400)
    assert (e.code, e.param) == ("invalid_type", "metadata.tags"), e.body
    assert "expected a string, but got an array" in e.message, e.message

    for call in (
        lambda: client.batches.retrieve("batch-nonexistent-xyz"),
        lambda: client.batches.cancel("batch-nonexistent-xyz"),
        lambda: client.files.retrieve("file-nonexistent-xyz"),
    ):
        e = refused(call, 404)
        assert isinstance(e, openai.NotFoundError)
        assert "not found" in e.message.lower(), e.message

    # A file that is not there: created, then failed at validation.
    missing = client.batches.create(**{**create, "input_file_id": "file-nonexistent-xyz"})
    failed = wait(client, missing.id)
    assert failed.status == "failed" and failed.failed_at, failed
    [error] = failed.errors.data
    assert (error.code, error.param, error.line) == ("invalid_request", "file_id", None), error
    assert "cannot find file" in error.message.lower(), error
    seen["missing_file"] = error.code

    # A message without a role runs and fails alone; the batch completes.
    bad = client.files.create(
        file=("contents.jsonl", b'{"custom_id": "ok", "method": "POST", "url": "/v1/chat/completions", '
              b'"body": {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}}\n'
              b'{"custom_id": "rolez", "method": "POST", "url": "/v1/chat/completions", '
              b'"body": {"model": "test-model", "messages": [{"rolez": "user", "contentz": "hi"}]}}\n'),
        purpose="batch",
    )
    ran = wait(client, client.batches.create(**{**create, "input_file_id": bad.id}).id)
    assert ran.status == "completed", ran
    assert (ran.request_counts.completed, ran.request_counts.failed) == (1, 1), ran.request_counts

    # An empty or non-JSONL upload is refused at once.
    for content in (b"", b"{malformed json"):
        e = refused(lambda: client.files.create(file=("bad.jsonl", content), purpose="batch"), 400)
        assert "invalid file format" in e.message.lower() and "jsonl" in e.message.lower(), e.message

    # Cancelling again answers with the batch (OpenAI allows it).
    again = client.batches.list(limit=10).data
    cancelled = next(b for b in again if b.status == "cancelled")
    assert client.batches.cancel(cancelled.id).status == "cancelled"
    seen["errors_checked"] = True


if __name__ == "__main__":
    main()
