#!/usr/bin/env bash
# Run the fuzz targets on stable Rust with libFuzzer.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
#
# Each target runs for SECONDS (default 60) from its kept corpus
# (fuzz/corpus/TARGET, not committed) and its seeds (fuzz/seeds/TARGET:
# hand-written inputs and the inputs that once found bugs, which run first
# as regression tests). A crash stops with exit 1 and leaves its input in
# fuzz/artifacts/TARGET/; replay it with
#   fuzz/target/x86_64-unknown-linux-gnu/release/TARGET fuzz/artifacts/TARGET/crash-...
# Targets: scanner results validate merge split (all by default).
# BATCHKIT_FUZZ_TARGET_DIR moves the build (CI keeps it in ~/.cache).
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(scanner results validate merge split)
fi
# What cargo-fuzz passes, minus the sanitizer (nightly only): coverage
# counters and comparison tracing for libFuzzer, and the checks of a debug
# build so that an overflow is a crash.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="${BATCHKIT_FUZZ_TARGET_DIR:-$PWD/target}"
# With an explicit --target the flags reach only the targets, not the build
# scripts and proc-macros (which cannot link without libFuzzer).
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --locked --bins --target "$host"
bin="$CARGO_TARGET_DIR/$host/release"
status=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t" "seeds/$t"
  echo "== fuzz $t for ${seconds}s"
  if ! "$bin/$t" "corpus/$t" "seeds/$t" \
      -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 -timeout=20 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 2> "artifacts/$t.log"; then
    tail -n 40 "artifacts/$t.log"
    echo "fuzz target $t found a problem: see fuzz/artifacts/$t/" >&2
    status=1
  else
    { grep -E "^Done [0-9]+ runs" "artifacts/$t.log" || true; } | sed "s/^/  $t: /"
    { grep -E "stat::peak_rss_mb" "artifacts/$t.log" || true; } | sed "s/^/  $t: /"
    echo "  $t: corpus $(find "corpus/$t" -type f | wc -l) inputs"
  fi
done
exit $status
