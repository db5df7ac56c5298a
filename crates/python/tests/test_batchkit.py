"""The Python package, installed from its wheel: the ``batchkit`` command
against the cargo-built binary, and the API on the repository's test files.

Run by ``crates/cli/tests/it/python.rs`` (``cargo test``), which gives
``BATCHKIT_BIN`` (the cargo-built binary) and ``BATCHKIT_TESTDATA``.
"""

import doctest
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import batchkit_jsonl as bk

TESTDATA = Path(os.environ.get("BATCHKIT_TESTDATA", Path(__file__).resolve().parents[3] / "testdata"))
CARGO_BIN = os.environ.get("BATCHKIT_BIN")
# The console script of the installed wheel, beside this Python.
WHEEL_BIN = shutil.which("batchkit", path=str(Path(sys.executable).parent))
MERGE = TESTDATA / "merge"


def shipped_files():
    files = sorted(TESTDATA.glob("*.jsonl"))
    files += sorted((TESTDATA / "valid").glob("*.jsonl"))
    files += sorted((TESTDATA / "invalid").glob("*.jsonl"))
    return files


def run(binary, *args):
    return subprocess.run([binary, *map(str, args)], capture_output=True, cwd=TESTDATA.parent)


def test_the_command_is_installed_beside_python():
    assert WHEEL_BIN, "no batchkit script beside " + sys.executable
    out = run(WHEEL_BIN, "--version")
    assert out.returncode == 0
    assert out.stdout.decode().startswith("batchkit ")


@pytest.mark.skipif(not CARGO_BIN, reason="BATCHKIT_BIN (the cargo-built binary) is set by cargo test")
@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: str(p.relative_to(TESTDATA)))
def test_the_command_prints_what_the_cargo_binary_prints(path):
    rel = path.relative_to(TESTDATA.parent)
    for args in (["validate", rel, "--format", "json"], ["stats", rel, "--format", "json"]):
        ours, theirs = run(WHEEL_BIN, *args), run(CARGO_BIN, *args)
        assert ours.returncode == theirs.returncode, (args, ours.stderr)
        assert ours.stdout == theirs.stdout, args
        assert ours.stderr == theirs.stderr, args


def test_exit_statuses_are_the_commands():
    assert run(WHEEL_BIN, "validate", "testdata/example.jsonl").returncode == 0
    assert run(WHEEL_BIN, "validate", "testdata/example-broken.jsonl").returncode == 1
    missing = run(WHEEL_BIN, "validate", "testdata/no-such-file.jsonl")
    assert missing.returncode == 2
    assert b"no-such-file.jsonl" in missing.stderr
    assert run(WHEEL_BIN, "validate", "--no-such-flag").returncode == 2
    # `python -m batchkit_jsonl` is the same command.
    module = subprocess.run(
        [sys.executable, "-m", "batchkit_jsonl", "validate", "-q", "testdata/example-broken.jsonl"],
        capture_output=True,
        cwd=TESTDATA.parent,
    )
    assert module.returncode == 1


def test_validate_a_valid_file_and_its_bytes():
    report = bk.validate(TESTDATA / "example.jsonl")
    assert report.valid and report.errors == [] and report.file.endswith("example.jsonl")
    assert report.summary["requests"] == 5
    assert report.summary["models"] == {"gpt-4o-mini": 5}
    same = bk.validate((TESTDATA / "example.jsonl").read_bytes(), name="example.jsonl")
    assert same.valid and same.summary == report.summary and same.file == "example.jsonl"


def test_validate_a_broken_file_says_what_and_where():
    report = bk.validate(TESTDATA / "example-broken.jsonl")
    assert not report.valid
    got = [(e.code, e.line, e.param) for e in report.errors]
    assert ("duplicate_custom_id", 3, "custom_id") in got
    assert ("invalid_json_line", 6, None) in got
    first = report.errors[0]
    assert isinstance(first, bk.Diagnostic) and first.severity == "error" and first.message
    # The command's JSON says the same.
    printed = json.loads(run(WHEEL_BIN, "validate", TESTDATA / "example-broken.jsonl", "--format", "json").stdout)
    assert [e["code"] for e in printed["errors"]["data"]] == [e.code for e in report.errors]


def test_validate_options_are_the_commands_flags():
    lines = b"".join(
        b'{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", '
        b'"body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}\n' % i
        for i in range(3)
    )
    assert bk.validate(lines).valid
    over = bk.validate(lines, max_requests=2)
    assert [e.code for e in over.errors] == ["too_many_tasks"]
    assert bk.validate(lines, provider="vllm").summary["provider"] == "vllm"
    with pytest.raises(bk.BatchkitError, match="max-requests"):
        bk.validate(lines, max_requests="many")
    with pytest.raises(bk.BatchkitError, match="no-such.jsonl"):
        bk.validate(TESTDATA / "no-such.jsonl")


def test_stats_counts_tokens_and_cost():
    s = bk.stats(TESTDATA / "example.jsonl", price_input=2.5, price_output=10)
    assert s["requests"] == 5
    assert s["tokens"]["input_total"] > 0
    assert s["cost_usd"]["input"] > 0
    printed = json.loads(
        run(WHEEL_BIN, "stats", TESTDATA / "example.jsonl", "--price-input", "2.5", "--price-output", "10", "--format", "json").stdout
    )
    assert printed == s


def test_split_writes_chunks_and_returns_the_manifest(tmp_path):
    out = tmp_path / "chunks"
    manifest = bk.split(TESTDATA / "example.jsonl", out, max_requests=2)
    assert [c["requests"] for c in manifest["chunks"]] == [2, 2, 1]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == manifest
    for c in manifest["chunks"]:
        assert (out / c["path"]).stat().st_size == c["bytes"]
        assert bk.validate(out / c["path"]).valid
    with pytest.raises(bk.InvalidInputError) as e:
        bk.split(TESTDATA / "example-broken.jsonl", tmp_path / "broken")
    assert e.value.report is not None
    assert "duplicate_custom_id" in [d.code for d in e.value.report.errors]
    assert not (tmp_path / "broken").exists() or not any((tmp_path / "broken").iterdir())
    set_aside = bk.split(TESTDATA / "example-broken.jsonl", tmp_path / "kept", skip_invalid=True)
    assert set_aside["rejects"]["lines"] >= 1


@pytest.mark.parametrize(
    "results, expected",
    [
        (["round1.output.jsonl", "round1.errors.jsonl"], "round1.jsonl"),
        (["vllm.results.jsonl"], "vllm.jsonl"),
    ],
)
def test_merge_streams_the_merged_records_in_input_order(results, expected):
    merged = bk.merge(MERGE / "requests.jsonl", [MERGE / r for r in results])
    assert iter(merged) is merged, "a generator, not a list"
    want = [json.loads(line) for line in (MERGE / "expected" / expected).read_text().splitlines()]
    assert list(merged) == want


def test_merge_adds_what_it_is_asked_for():
    merged = bk.merge(MERGE / "requests.jsonl", [MERGE / "anthropic.results.jsonl"], text=True)
    want = [json.loads(line) for line in (MERGE / "expected" / "anthropic.jsonl").read_text().splitlines()]
    assert list(merged) == want
    with_request = next(bk.merge(MERGE / "requests.jsonl", [], with_request=True))
    assert with_request["request"]["model"]
    # One result file needs no list.
    one = list(bk.merge(str(MERGE / "requests.jsonl"), str(MERGE / "vllm.results.jsonl")))
    assert one == list(bk.merge(MERGE / "requests.jsonl", [MERGE / "vllm.results.jsonl"]))


def test_merge_to_and_retry_write_what_the_commands_write(tmp_path):
    results = [MERGE / "round1.output.jsonl", MERGE / "round1.errors.jsonl"]
    summary = bk.merge_to(MERGE / "requests.jsonl", results, tmp_path / "merged.jsonl")
    assert summary["requests"] == summary["written"] > 0
    assert (tmp_path / "merged.jsonl").read_text() == (MERGE / "expected" / "round1.jsonl").read_text()
    retried = bk.retry(MERGE / "requests.jsonl", results, tmp_path / "retry.jsonl")
    assert retried["written"] == len((tmp_path / "retry.jsonl").read_text().splitlines())
    assert (tmp_path / "retry.jsonl").read_text() == (MERGE / "expected" / "retry_default.jsonl").read_text()
    with pytest.raises(bk.BatchkitError, match="one of the files read"):
        bk.merge_to(MERGE / "requests.jsonl", results, MERGE / "requests.jsonl")


def test_a_merge_left_early_stops(tmp_path):
    requests = tmp_path / "r.jsonl"
    with requests.open("w") as f:
        for i in range(200_000):
            f.write(json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": "x"}}) + "\n")
    first = next(bk.merge(requests, []))
    assert first["custom_id"] == "r0" and first["status"] == "missing"


def test_the_gil_is_released_while_rust_works(tmp_path):
    big = tmp_path / "big.jsonl"
    line = '{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "%s"}]}}\n'
    with big.open("w") as f:
        for i in range(400_000):
            f.write(line % (i, "a fairly ordinary question about batches " * 3))
    ticks = []
    done = threading.Event()

    def count():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    start = time.perf_counter()
    report = bk.validate(big, max_requests=0)
    took = time.perf_counter() - start
    done.set()
    t.join()
    assert report.valid and report.summary["requests"] == 400_000
    during = [x for x in ticks if start <= x <= start + took]
    # A thread that held the GIL for the whole call would leave no tick
    # inside it; with it released, the counter ticks throughout.
    assert took > 0.05, f"too quick to tell: {took:.3f}s"
    assert len(during) >= 10, f"{len(during)} ticks in {took:.2f}s"


def test_the_docstrings_examples_run():
    failed, tried = doctest.testmod(bk, optionflags=doctest.ELLIPSIS)
    assert tried >= 2 and failed == 0


PRE_COMMIT = shutil.which("pre-commit", path=str(Path(sys.executable).parent))


def test_the_pre_commit_hook_installs_the_package_and_validates(tmp_path):
    """`pre-commit try-repo` installs this repository's hook (language:
    python: the package built from source) and runs it on staged files."""
    assert PRE_COMMIT, "pre-commit is installed beside " + sys.executable
    project = tmp_path / "project"
    project.mkdir()
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    subprocess.run(["git", "init", "-q"], cwd=project, check=True, env=env)
    for name in ("example.jsonl", "example-broken.jsonl"):
        shutil.copy(TESTDATA / name, project / name)
    subprocess.run(["git", "add", "."], cwd=project, check=True, env=env)

    def hook(name):
        return subprocess.run(
            [PRE_COMMIT, "try-repo", str(TESTDATA.parent), "batchkit-validate", "--files", name],
            cwd=project,
            capture_output=True,
            env=env,
            text=True,
        )

    ok = hook("example.jsonl")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "Passed" in ok.stdout
    bad = hook("example-broken.jsonl")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "duplicate_custom_id" in bad.stdout


def test_the_package_is_typed():
    package = Path(bk.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_native.pyi").exists()
