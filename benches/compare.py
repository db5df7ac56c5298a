#!/usr/bin/env python3
"""Side-by-side timing of batchkit against the tools people use today.

Generates a deterministic ~1 GB chat request file (benches/data/), then runs
every tool on it in interleaved rounds and prints, per tool, the median wall
time, MB/s, lines/s, peak RSS and the ratio to batchkit. Peak RSS of a
memory-mapped run includes the mapped file's pages; the stdin run shows the
memory batchkit needs beyond its input.

    python3 benches/compare.py                # 1 GB, 3 rounds
    python3 benches/compare.py --bytes 200e6 --rounds 5

Needs: cargo, jq, and for the openbatch row `pip install openbatch`
(a missing tool's row says so instead of failing the run).
"""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benches" / "data"
BIN = ROOT / "target" / "release"


def build():
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "batchkit", "-p", "batchkit-benches"],
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


def timed(argv, stdin_path=None):
    """Run argv (stdout discarded); return (seconds, peak RSS bytes, exit code).

    With stdin_path, `cat` pipes the file in, as a user's pipeline would."""
    start = time.perf_counter()
    feeder = None
    stdin = subprocess.DEVNULL
    if stdin_path is not None:
        feeder = subprocess.Popen(["cat", str(stdin_path)], stdout=subprocess.PIPE)
        stdin = feeder.stdout
    proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if feeder is not None:
        feeder.stdout.close()
    stderr = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if feeder is not None:
        feeder.wait()
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        sys.exit(f"{argv[0]} failed ({proc.returncode}): {stderr.decode(errors='replace')[:500]}")
    return elapsed, usage.ru_maxrss * 1024, proc.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bytes", type=float, default=1e9, help="corpus size (default 1e9)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip", action="append", default=[], help="skip tools whose name contains this")
    args = ap.parse_args()

    build()
    path = corpus(int(args.bytes), args.seed)
    size = path.stat().st_size
    with open(path, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    bk = str(BIN / "batchkit")
    # Lift the size limits so the whole 1 GB is one (valid) batch: every rule
    # still runs on every line.
    lift = ["--max-requests", "0", "--max-bytes", "0", "-q"]
    tools = [
        ("batchkit validate (file)", [bk, "validate", *lift, str(path)], None),
        ("batchkit validate (stdin)", [bk, "validate", *lift, "-"], path),
        ("batchkit validate -j1 (file)", [bk, "-j", "1", "validate", *lift, str(path)], None),
    ]
    if shutil.which("jq"):
        tools.append(("jq -c .custom_id", ["jq", "-c", ".custom_id", str(path)], None))
    py = sys.executable
    tools.append(("python json.loads + set", [py, str(ROOT / "benches/baselines/py_json_loop.py"), str(path)], None))
    has_openbatch = subprocess.run([py, "-c", "import openbatch"], capture_output=True).returncode == 0
    if has_openbatch:
        tools.append(("openbatch validate_batch_file", [py, str(ROOT / "benches/baselines/openbatch_validate.py"), str(path)], None))
    tools = [t for t in tools if not any(s in t[0] for s in args.skip)]

    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    results = {name: [] for name, _, _ in tools}
    for r in range(args.rounds):
        for name, argv, stdin in tools:
            results[name].append(timed(argv, stdin))
            print(f"round {r + 1}/{args.rounds}: {name}: {results[name][-1][0]:.2f} s", file=sys.stderr)

    base = statistics.median(t for t, _, _ in results[tools[0][0]])
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"Corpus: {path.name}, {size / 1e6:.0f} MB, {lines:,} lines; {os.cpu_count()} cores ({cpu});"
          f" median of {args.rounds} interleaved rounds.\n")
    print("| tool | median s | MB/s | lines/s | peak RSS MB | time vs batchkit (file) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in tools:
        t = statistics.median(x for x, _, _ in results[name])
        rss = max(m for _, m, _ in results[name])
        print(f"| {name} | {t:.2f} | {size / t / 1e6:,.0f} | {lines / t:,.0f} | {rss / 1e6:,.0f} | {t / base:.1f}x |")
    if not has_openbatch:
        print("\n(openbatch row skipped: `pip install openbatch` to include it)")


if __name__ == "__main__":
    main()
