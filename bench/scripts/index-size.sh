#!/usr/bin/env bash
# Index size (issue 20) on the shared traces and on `bench query`'s traffic, with the breakdown by
# section that `linecap index` prints. No root needed. Usage (from the repository):
#   cargo build -p linecap -p bench && bench/scripts/index-size.sh [target/debug]
set -euo pipefail
bin=${1:-target/debug}
L=$bin/linecap
B=$bin/bench
T=${TRACES:-../shared/traces}
[ -d "$T" ] || { echo "$T is missing" >&2; exit 1; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/rot" "$W/whole"
for t in "$T"/*; do
  n=$(basename "$t")
  "$L" capture --source "file:$t" --spread 3 --rotate-seconds 1 --rotate-bytes 4K --batch-bytes 64K \
    --out "$W/rot/$n" >/dev/null 2>&1
  "$L" capture --source "file:$t" --out "$W/whole/$n" >/dev/null 2>&1
done
echo "== shared traces as the tests capture them (3 queues, 4K / 1 s files, 64K batches)"
"$L" index "$W"/rot/* | tail -1
echo "== shared traces, one file each"
"$L" index "$W"/whole/* | tail -1
for flows in 50000 200000; do
  "$B" query-pcap "$W/z.pcap" 20 "$flows" $((256 << 20)) 100000 >/dev/null
  rm -rf "$W/z"
  "$L" capture --source "file:$W/z.pcap" -C 256M --out "$W/z" >/dev/null 2>&1
  echo "== bench query traffic: $flows Zipf flows, 256 MiB of ERF records, 256 MiB files"
  "$L" index "$W/z" | tail -1
  rm -f "$W/z.pcap"
done
