#!/usr/bin/env bash
# Fuzzes every target of tests/fuzz/ for a few seconds (FUZZ_SECONDS, default 5), starting
# from its committed seeds: what `make test` runs, so a decoder that panics on its seeds or
# on what a short run finds fails the suite. `make fuzz` runs the same with a longer time.
# Installs the nightly toolchain and cargo-fuzz when missing. See FUZZING.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${FUZZ_SECONDS:-5}"
fuzz_dir=tests/fuzz

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=$(cargo +nightly fuzz list --fuzz-dir "$fuzz_dir")
cargo +nightly fuzz build --fuzz-dir "$fuzz_dir"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
count=0
for target in $targets; do
  corpus="$fuzz_dir/corpus/$target"
  mkdir -p "$corpus"
  # The first directory collects what the run finds (git-ignored); the seeds are only read.
  if cargo +nightly fuzz run --fuzz-dir "$fuzz_dir" "$target" "$corpus" "$fuzz_dir/seeds/$target" \
    -- -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $target: $runs runs in ${seconds}s, no crash"
    count=$((count + 1))
  else
    tail -n 40 "$log"
    echo "fuzz: $target crashed; the input is in $fuzz_dir/artifacts/$target/ (see FUZZING.md)"
    exit 1
  fi
done
echo "fuzz: every target ran ${seconds}s without a crash"
echo "fuzz: $count passed, 0 failed"
