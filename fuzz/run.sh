#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 60) on its corpus, one after the
# other; fail on any crash. The canary target must crash (its planted bug must
# be found within the same time), or the harness itself is broken.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#   FUZZ_RUNS=10000000 bash fuzz/run.sh 1800 TARGET   # stop at 10 M executions
#                                                     # or 1800 s, whichever first
#
# A dictionary fuzz/dicts/TARGET.dict, if present, is passed with -dict=.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Seeds: `bash fuzz/seed.sh` (run here first if fuzz/corpus is missing).
# Logs: fuzz/logs/TARGET.log; crashing inputs: fuzz/artifacts/TARGET/.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
seconds="${1:-60}"
shift || true
targets=("$@")
((${#targets[@]})) || targets=(wire_parse erf_record capture_reader lz4_frames profile_parse bpf_filter
  ipfix_roundtrip canary)
[ -d corpus/wire_parse ] || bash ./seed.sh
mkdir -p logs
# Only the targets to run are built (a long run of one target does not wait
# for the others, nor fail on them).
for t in "${targets[@]}"; do
  cargo +nightly fuzz build "$t" >/dev/null 2>logs/build.log || { cat logs/build.log; exit 2; }
done
runs=()
[ -z "${FUZZ_RUNS:-}" ] || runs=(-runs="$FUZZ_RUNS")

failed=0
printf '%-16s %8s %12s %10s  %s\n' target seconds execs exec/s result
for t in "${targets[@]}"; do
  log="logs/$t.log"
  if [ "$t" = canary ]; then
    # A fresh, empty corpus each time: the crash must be found, not remembered.
    work="$(mktemp -d)"
    cargo +nightly fuzz run canary "$work" -- -max_total_time="$seconds" "${runs[@]}" \
      -artifact_prefix="$work/" >"$log" 2>&1
    rc=$?
    rm -rf "$work"
    if [ $rc -ne 0 ] && grep -q "canary found" "$log"; then
      result="ok (planted bug found)"
    else
      result="FAILED: the canary's planted bug was not found"
      failed=1
    fi
  else
    mkdir -p "corpus/$t"
    dict=()
    [ ! -f "dicts/$t.dict" ] || dict=(-dict="dicts/$t.dict")
    cargo +nightly fuzz run "$t" "corpus/$t" -- -max_total_time="$seconds" "${runs[@]}" \
      "${dict[@]}" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then
      result="ok (no crash)"
    else
      result="FAILED: crash, see $log and artifacts/$t/"
      failed=1
    fi
  fi
  execs="$(grep -oE 'Done [0-9]+ runs' "$log" | tail -1 | grep -oE '[0-9]+')"
  [ -n "$execs" ] || execs="$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')"
  rate="$(grep -oE 'exec/s: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')"
  printf '%-16s %8s %12s %10s  %s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "$result"
done
exit $failed
