#!/usr/bin/env python3
"""Side-by-side timing of batchkit against the tools people use today.

Generates a deterministic ~1 GB chat request file (benches/data/), then runs
every tool on it in interleaved rounds and prints, per tool, the median wall
time, MB/s, lines/s, peak RSS and the ratio to batchkit. Peak RSS of a
memory-mapped run includes the mapped file's pages; the stdin run shows the
memory batchkit needs beyond its input.

    python3 benches/compare.py                      # validate, merge, split, tokens
    python3 benches/compare.py validate --bytes 200e6 --rounds 5
    python3 benches/compare.py merge --requests 100000

Needs cargo, jq and Python 3; it installs the rest on first use: openbatch,
tiktoken and orjson (benches/requirements.txt) into benches/.venv, and jaq
(`cargo install jaq`) into benches/.tools.
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benches" / "data"
# The figures are a release's: the `dist` profile (fat LTO), as shipped.
BIN = ROOT / "target" / "dist"


# Widen the pipe at stdin to 1 MiB (F_SETPIPE_SZ), then become cat.
WIDE_CAT = "import fcntl, os; fcntl.fcntl(0, 1031, 1 << 20); os.execvp('cat', ['cat'])"

VENV = ROOT / "benches" / ".venv"
TOOLS = ROOT / "benches" / ".tools"
JAQ_VERSION = "3.1.2"


def python():
    """The venv's Python, with benches/requirements.txt installed."""
    py = VENV / "bin" / "python"
    stamp = VENV / "requirements.txt"
    wanted = (ROOT / "benches" / "requirements.txt").read_text()
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(ROOT / "benches" / "requirements.txt")], check=True)
        stamp.write_text(wanted)
    return str(py)


def jaq():
    """jaq, the Rust jq clone, built from crates.io into benches/.tools."""
    exe = TOOLS / "bin" / "jaq"
    if not exe.exists():
        subprocess.run(["cargo", "install", "-q", "--locked", "--root", str(TOOLS), "jaq", "--version", JAQ_VERSION], check=True)
    return str(exe)


def build():
    subprocess.run(
        ["cargo", "build", "--profile", "dist", "-q", "-p", "batchkit", "-p", "batchkit-benches", "--bins"],
        cwd=ROOT,
        check=True,
    )


def corpus(nbytes: int, seed: int) -> Path:
    path = DATA / f"corpus-{nbytes}-{seed}.jsonl"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        subprocess.run(
            [BIN / "gen-corpus", "--bytes", str(nbytes), "--seed", str(seed), tmp], check=True
        )
        tmp.rename(path)
    return path


class Redirect:
    """Standard input opened on a file (`tool < FILE`), not piped through cat."""

    def __init__(self, path):
        self.path = path


def timed(argv, stdin_path=None):
    """Run argv (stdout discarded); return (seconds, peak RSS, peak anonymous RSS).

    Both are sampled from /proc every 20 ms by a thread beside a blocking
    wait (VmHWM is the kernel's own high-water mark; sampling every 5 ms
    took CPU from two-thread runs). Peak RSS counts a mapped input's
    pages; the anonymous peak is the memory a tool needs beyond its inputs.
    With stdin_path, `cat` pipes the file in, as a user's pipeline would;
    with a Redirect, the file itself is standard input."""
    start = time.perf_counter()
    feeder = None
    stdin = subprocess.DEVNULL
    if isinstance(stdin_path, Redirect):
        stdin = open(stdin_path.path, "rb")
    elif stdin_path is not None:
        feeder = subprocess.Popen(["cat", str(stdin_path)], stdout=subprocess.PIPE)
        stdin = feeder.stdout
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=err)
        if feeder is not None:
            feeder.stdout.close()
        elif stdin is not subprocess.DEVNULL:
            stdin.close()
        peaks = {"anon": 0, "hwm": 0}
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    with open(f"/proc/{proc.pid}/status") as f:
                        for line in f:
                            if line.startswith("RssAnon:"):
                                peaks["anon"] = max(peaks["anon"], int(line.split()[1]) * 1024)
                            elif line.startswith("VmHWM:"):
                                peaks["hwm"] = max(peaks["hwm"], int(line.split()[1]) * 1024)
                except OSError:
                    pass
                done.wait(0.02)

        # The sampler runs beside a blocking wait, so the end is timed exactly.
        sampler = threading.Thread(target=sample)
        sampler.start()
        _, status, _ = os.wait4(proc.pid, 0)
        done.set()
        sampler.join()
        anon, hwm = peaks["anon"], peaks["hwm"]
        code = os.waitstatus_to_exitcode(status)
        if feeder is not None:
            feeder.wait()
        elapsed = time.perf_counter() - start
        if code not in (0, 1):
            err.seek(0)
            sys.exit(f"{argv[0]} failed ({code}): {err.read().decode(errors='replace')[:500]}")
    # ru_maxrss would include the forked Python parent's pages (it survives
    # exec), so the peak comes from the child's own VmHWM.
    return elapsed, hwm, anon


def warm(*paths):
    """Read files into the page cache."""
    for p in paths:
        subprocess.run(["cat", str(p)], stdout=subprocess.DEVNULL, check=True)


def settle(out=None):
    """Before a run that writes: remove the last run's output and flush dirty
    pages, so that one run's writeback is not billed to the next."""
    if out is not None:
        shutil.rmtree(out, ignore_errors=True)
    subprocess.run(["sync"], check=False)


def run_rounds(tools, rounds, before=None):
    results = {name: [] for name, _, _ in tools}
    for r in range(rounds):
        for name, argv, stdin in tools:
            if before is not None:
                before()
            results[name].append(timed(argv, stdin))
            print(f"round {r + 1}/{rounds}: {name}: {results[name][-1][0]:.2f} s", file=sys.stderr)
    return results


def table(tools, results, size, lines, unit="lines"):
    base = statistics.median(t for t, _, _ in results[tools[0][0]])
    print(f"| tool | median s | MB/s | {unit}/s | peak RSS MB | peak anon MB | time vs batchkit |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, _, _ in tools:
        t = statistics.median(x for x, _, _ in results[name])
        rss = max(m for _, m, _ in results[name])
        anon = max(a for _, _, a in results[name])
        print(f"| {name} | {t:.2f} | {size / t / 1e6:,.0f} | {lines / t:,.0f} | {rss / 1e6:,.0f} | {anon / 1e6:,.0f} | {t / base:.1f}x |")


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu})"


def count_lines(path):
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))


def bench_validate(args):
    path = corpus(int(args.bytes), args.seed)
    size = path.stat().st_size
    lines = count_lines(path)
    bk = str(BIN / "batchkit")
    # Lift the size limits so the whole 1 GB is one (valid) batch: every rule
    # still runs on every line.
    lift = ["--max-requests", "0", "--max-bytes", "0", "-q"]
    tools = [
        ("batchkit validate (file)", [bk, "validate", *lift, str(path)], None),
        ("batchkit validate (stdin, piped by cat)", [bk, "validate", *lift, "-"], path),
        ("batchkit validate (stdin < file)", [bk, "validate", *lift, "-"], Redirect(path)),
        ("batchkit validate -j1 (file)", [bk, "-j", "1", "validate", *lift, str(path)], None),
        # What the pipe alone costs: cat to cat, with the 1 MiB pipe buffer
        # batchkit asks for (F_SETPIPE_SZ), Python's start included.
        ("floor: cat piped to cat (1 MiB pipe)", [sys.executable, "-c", WIDE_CAT], path),
    ]
    if not shutil.which("jq"):
        sys.exit("jq not found: `apt-get install jq`")
    tools.append(("jq -c .custom_id", ["jq", "-c", ".custom_id", str(path)], None))
    tools.append(("jaq -c .custom_id", [jaq(), "-c", ".custom_id", str(path)], None))
    py = python()
    base = ROOT / "benches" / "baselines"
    tools.append(("python json.loads + set", [py, str(base / "py_json_loop.py"), str(path)], None))
    tools.append(("python orjson.loads + set", [py, str(base / "py_json_loop.py"), "--orjson", str(path)], None))
    tools.append(("openbatch validate_batch_file", [py, str(base / "openbatch_validate.py"), str(path)], None))
    tools = [t for t in tools if not any(s in t[0] for s in args.skip)]
    # Warm the page cache before every run: on these machines pages of an
    # idle file are reclaimed within seconds even with memory free
    # (`fincore` shows it), and a run that reads from disk says nothing
    # about the tool.
    results = run_rounds(tools, args.rounds, before=lambda: warm(path))
    print(f"\n### validate\n\nCorpus: {path.name}, {size / 1e6:.0f} MB, {lines:,} lines; {machine()};"
          f" median of {args.rounds} interleaved rounds.\n")
    table(tools, results, size, lines)
    targets(results, size, [
        ("validate from a file, MB/s", "batchkit validate (file)", None, 3000),
        ("validate from stdin (< file), MB/s", "batchkit validate (stdin < file)", None, 2000),
        ("jq's time over batchkit's", "batchkit validate (file)", "jq -c .custom_id", 25),
        ("Python json's time over batchkit's", "batchkit validate (file)", "python json.loads + set", 20),
    ])


def targets(results, size, checks):
    """Print each target with what this run measured: MB/s of a tool, or the
    ratio of another tool's median time to it."""
    med = {name: statistics.median(t for t, _, _ in runs) for name, runs in results.items()}
    print("\n| target | measured | wanted | met |\n|---|---:|---:|---|")
    for what, tool, other, wanted in checks:
        if tool not in med or (other is not None and other not in med):
            continue
        got = size / med[tool] / 1e6 if other is None else med[other] / med[tool]
        shown = f"{got:,.0f}" if other is None else f"{got:.1f}x"
        want = f"{wanted:,}" if other is None else f"{wanted}x"
        print(f"| {what} | {shown} | ≥ {want} | {'yes' if got >= wanted else 'no'} |")


def bench_merge(args):
    d = DATA / f"merge-{args.requests}"
    if not (d / "errors.jsonl").exists():
        subprocess.run([BIN / "gen-results", "--requests", str(args.requests), "--out-dir", d], check=True)
    req, out, err = d / "requests.jsonl", d / "output.jsonl", d / "errors.jsonl"
    size = sum(p.stat().st_size for p in (req, out, err))
    bk = str(BIN / "batchkit")
    merged = d / "merged.tmp.jsonl"
    tools = [
        ("batchkit merge", [bk, "merge", "-i", str(req), str(out), str(err), "-o", str(merged)], None),
        # The same work with the output thrown away: what the merge costs
        # without the page cache's share of writing a file.
        ("batchkit merge (-o -, discarded)", [bk, "merge", "-i", str(req), str(out), str(err), "-o", "-"], None),
        ("batchkit retry", [bk, "retry", "-i", str(req), str(out), str(err), "-o", str(d / "retry.tmp.jsonl")], None),
        ("python dict merge", [python(), str(ROOT / "benches/baselines/py_merge.py"), str(req), str(d / "py.tmp.jsonl"), str(out), str(err)], None),
    ]
    tools = [t for t in tools if not any(s in t[0] for s in args.skip)]
    def before():
        # No run pays for deleting the last run's output as it replaces it.
        for p in d.glob("*.tmp.jsonl"):
            p.unlink()
        settle()
        warm(req, out, err)

    results = run_rounds(tools, args.rounds, before=before)
    print(f"\n### merge\n\n{args.requests:,} requests; requests + shuffled output + error files:"
          f" {size / 1e6:.0f} MB; {machine()}; median of {args.rounds} interleaved rounds.\n")
    table(tools, results, size, args.requests, unit="requests")
    if args.requests == 1_000_000:
        # #13: half of the 2.35 s measured when it was filed (1,784 MB of
        # inputs), and 40 times the Python dict join.
        targets(results, size, [
            ("merge, MB/s of inputs (half of 2.35 s)", "batchkit merge", None, 1518),
            ("Python dict merge's time over batchkit's", "batchkit merge", "python dict merge", 40),
        ])
    for p in d.glob("*.tmp.jsonl"):
        p.unlink()


def bench_split(args):
    path = corpus(int(args.bytes), args.seed)
    size = path.stat().st_size
    lines = count_lines(path)
    bk = str(BIN / "batchkit")
    out = DATA / "split-out"
    shutil.rmtree(out, ignore_errors=True)
    # The writers run back to back, each right after the last one's output
    # is deleted and synced. cp writes the same bytes through the page cache
    # with no other work: the cost of putting them there. split writes with
    # direct I/O by default; --buffered goes through the page cache like cp
    # (on a VM that hands freed memory back to its host, fresh page cache
    # costs far more than the disk write: see docs/performance.md).
    tools = [
        ("batchkit validate (file)", [bk, "validate", "-q", "--max-requests", "0", "--max-bytes", "0", str(path)], None),
        ("batchkit split --dry-run", [bk, "split", str(path), "--dry-run"], None),
        ("cp (the same bytes, no work)", ["sh", "-c", f'mkdir -p "{out}" && cp "{path}" "{out}/copy.jsonl"'], None),
        ("batchkit split (openai limits)", [bk, "split", str(path), "--out-dir", str(out)], None),
        ("batchkit split --buffered", [bk, "split", str(path), "--buffered", "--out-dir", str(out)], None),
    ]
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    results = run_rounds(tools, args.rounds, before=lambda: settle(out))
    bk_split = [bk, "split", str(path), "--out-dir", str(out)]
    settle(out)
    subprocess.run(bk_split, check=True, capture_output=True)
    written = sum(p.stat().st_size for p in out.glob("*.jsonl"))
    print(f"\n### split\n\nCorpus: {path.name}, {size / 1e6:.0f} MB, {lines:,} lines; {machine()};"
          f" median of {args.rounds} interleaved rounds. Chunks written: {len(list(out.glob('*.jsonl')))},"
          f" {written:,} bytes (input: {size:,}).\n")
    table(tools, results, size, lines)
    shutil.rmtree(out, ignore_errors=True)


def bench_tokens(args):
    path = corpus(int(args.token_bytes), args.seed)
    size = path.stat().st_size
    lines = count_lines(path)
    bk = str(BIN / "batchkit")
    py = python()
    script = str(ROOT / "benches/baselines/tiktoken_count.py")
    ours = json.loads(subprocess.run([bk, "stats", "--format", "json", str(path)], capture_output=True, check=True).stdout)
    theirs = int(subprocess.run([py, script, str(path)], capture_output=True, check=True).stdout)
    tools = [
        ("batchkit stats (token estimate)", [bk, "stats", "--format", "json", str(path)], None),
        ("python tiktoken loop", [py, script, str(path)], None),
    ]
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    results = run_rounds(tools, args.rounds)
    same = "identical" if ours["tokens"]["input_total"] == theirs else "DIFFERENT"
    print(f"\n### tokens\n\nCorpus: {path.name}, {size / 1e6:.0f} MB, {lines:,} lines; {machine()};"
          f" median of {args.rounds} interleaved rounds. Input tokens: batchkit {ours['tokens']['input_total']:,},"
          f" tiktoken {theirs:,} ({same}).\n")
    table(tools, results, size, lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="*", default=["validate", "merge", "split", "tokens"],
                    help="validate, merge, split, tokens (default: all)")
    ap.add_argument("--token-bytes", type=float, default=2e8, help="tokens corpus size (default 2e8)")
    ap.add_argument("--bytes", type=float, default=1e9, help="validate corpus size (default 1e9)")
    ap.add_argument("--requests", type=int, default=1_000_000, help="merge: requests (default 1e6)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip", action="append", default=[], help="skip tools whose name contains this")
    args = ap.parse_args()
    build()
    for what in args.what:
        {"validate": bench_validate, "merge": bench_merge, "split": bench_split, "tokens": bench_tokens}[what](args)


if __name__ == "__main__":
    main()
