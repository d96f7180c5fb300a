#!/usr/bin/env bash
# Build the seed corpora of the fuzz targets from ../shared/traces (nothing
# binary is committed: the corpora are derived here, into fuzz/corpus/*).
#
#   bash fuzz/seed.sh            # from anywhere; needs python3 and lz4,
#                                # and builds target/debug/linecap if missing
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
shared="${LINECAP_SHARED:-$root/../shared}"
[ -d "$shared/traces" ] || shared="$root/../../shared"
[ -d "$shared/traces" ] || { echo "no shared/traces beside the checkout" >&2; exit 1; }
corpus="$here/corpus"
linecap="${LINECAP:-$root/target/debug/linecap}"
if [ ! -x "$linecap" ]; then
  (cd "$root" && cargo build -q -p linecap)
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for t in wire_parse erf_record capture_reader lz4_frames canary; do
  mkdir -p "$corpus/$t"
done
KB64=65536

# capture_reader: every trace (the first 64 KiB; a cut file is a seed too),
# the reference LZ4 and ERF files, and files linecap itself writes.
for f in "$shared"/traces/* "$shared"/reference/lz4/* "$shared"/reference/erf_writers/*; do
  head -c $KB64 "$f" > "$corpus/capture_reader/$(basename "$f")"
done
"$linecap" capture --source "file:$shared/traces/tcpreplay__test.pcap" --out "$tmp/cap" \
  --rotate-bytes 16K >/dev/null
"$linecap" capture --source "file:$shared/traces/zeek__wikipedia.pcap" --out "$tmp/capraw" \
  --no-compress >/dev/null
i=0
for f in $(find "$tmp/cap" "$tmp/capraw" -name '*.erf*' ! -name '*.json' | sort | head -8); do
  cp "$f" "$corpus/capture_reader/linecap-$i.$(basename "$f" | sed 's/.*\.erf/erf/')"
  i=$((i + 1))
done

# lz4_frames: the lz4 CLI's frames (default, linked, no checksums, small
# blocks), the reference files, and linecap's own (one frame per file).
for f in tcpreplay__test.pcap zeek__wikipedia.pcap libtrace__100_packets.erf; do
  src="$shared/traces/$f"
  lz4 -q -c "$src" > "$corpus/lz4_frames/$f.default.lz4"
  lz4 -q -c -BD -B4 "$src" > "$corpus/lz4_frames/$f.linked.lz4"
  lz4 -q -c --no-frame-crc -B4 "$src" > "$corpus/lz4_frames/$f.nocrc.lz4"
  lz4 -q -c -B4 --content-size -BX "$src" > "$corpus/lz4_frames/$f.size.lz4"
done
for f in "$shared"/reference/lz4/*; do
  head -c $KB64 "$f" > "$corpus/lz4_frames/$(basename "$f")"
done
cp "$corpus"/capture_reader/linecap-*.lz4 "$corpus/lz4_frames/" 2>/dev/null || true

# erf_record: the ERF traces and writers (first 16 KiB), and every other
# trace converted to ERF by linecap read.
for f in "$shared"/traces/*.erf "$shared"/reference/erf_writers/*; do
  head -c 16384 "$f" > "$corpus/erf_record/$(basename "$f")"
done
for f in "$shared"/traces/*.pcap*; do
  "$linecap" read "$f" -F erf -w "$tmp/x.erf" >/dev/null 2>&1 || continue
  head -c 4096 "$tmp/x.erf" > "$corpus/erf_record/$(basename "$f").erf"
done

# wire_parse: single frames, the first 40 of every trace (each trace read
# back as ns pcap by linecap, then split), deduplicated by content.
for f in "$shared"/traces/*; do
  "$linecap" read "$f" -F pcap -w "$tmp/x.pcap" >/dev/null 2>&1 || continue
  python3 - "$tmp/x.pcap" "$corpus/wire_parse" "$(basename "$f")" <<'PY'
import hashlib, struct, sys
data = open(sys.argv[1], "rb").read()
out, tag = sys.argv[2], sys.argv[3]
pos, n = 24, 0
while pos + 16 <= len(data) and n < 40:
    _, _, incl, _ = struct.unpack_from("<IIII", data, pos)
    frame = data[pos + 16 : pos + 16 + incl]
    pos += 16 + incl
    name = hashlib.sha1(frame).hexdigest()[:16]
    open(f"{out}/{tag}-{name}", "wb").write(frame)
    n += 1
PY
done

# canary: one harmless input; the fuzzer must find `LINECAP!` on its own.
printf 'hello' > "$corpus/canary/hello"

for t in wire_parse erf_record capture_reader lz4_frames canary; do
  printf '%-16s %5d seeds\n' "$t" "$(ls "$corpus/$t" | wc -l)"
done
