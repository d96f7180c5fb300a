#!/usr/bin/env bash
# Build the seed corpora of the fuzz targets from ../shared/traces (nothing
# binary is committed: the corpora are derived here, into fuzz/corpus/*).
#
#   bash fuzz/seed.sh            # from anywhere; needs python3, lz4 and tcpdump,
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

targets=(wire_parse erf_record capture_reader lz4_frames profile_parse bpf_filter
  ipfix_roundtrip canary)
for t in "${targets[@]}"; do
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

# profile_parse: the bundled hardware profiles, and one profile per other
# backend (file, dpdk) with every optional key.
cp "$root"/hw-profiles/*.toml "$corpus/profile_parse/"
cat > "$corpus/profile_parse/file-all-keys.toml" <<'TOML'
[host]
name = "replay"
description = "every key"
user = "linecap"
[nic]
backend = "file"
file = "/data/trace.pcap"
queues = 4
numa_node = 0
driver = "veth"
line_rate_gbps = 10.0
xdp_mode = "generic"
xsk_ring_entries = 2048
rss_key = "6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a:6d:5a"
[cores]
workers = [2, 3, 4, 5]
housekeeping = "0-1"
isolated = true
[memory]
hugepages = 64
hugepage_size = "2M"
batch_bytes = "512K"
ring_bytes = "8M"
ring_slots = 16
[flows]
capacity = 1024
idle_timeout_s = 1.5
active_timeout_s = 30
linger_s = 0.5
[writer]
threads = 2
dirs = ["/data/a", "/data/b"]
compress = false
rotate_bytes = 1073741824
rotate_seconds = 60
rotate_files = 10
disk_budget = "1T"
write_test_bytes = "1M"
[metrics]
address = "[::]:9464"
allow_remote = true
TOML
sed -e 's/backend = "file"/backend = "dpdk"\npci = "0000:3b:00.0"/' -e '/^file = /d' \
  "$corpus/profile_parse/file-all-keys.toml" > "$corpus/profile_parse/dpdk.toml"

# bpf_filter: (a) programs tcpdump compiles, each with a frame, in the
# target's layout [0, L, L x (code u16le, jt, jf, k u32le), wire_len u32le,
# frame]; (b) frames to run the target's fixed expressions over, [1, frame].
frames=("$corpus"/wire_parse/*.*-*)  # the seeds above, not what a run added
i=0
for expr in ip ip6 tcp 'udp port 53' 'tcp port 80 or tcp port 443' 'vlan and ip' 'mpls' \
  'host 10.0.0.1' 'net 192.168.0.0/16' 'ip[6:2] & 0x1fff != 0' \
  'tcp[tcpflags] & (tcp-syn|tcp-fin) != 0' 'tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420' \
  'greater 100' 'len % 7 = 3' 'ether broadcast' 'icmp6'; do
  tcpdump -r "$shared/traces/tcpreplay__test.pcap" -ddd "$expr" 2>/dev/null > "$tmp/prog"
  for k in 0 1 2; do
    frame="${frames[$(( (i * 7 + k * 131) % ${#frames[@]} ))]}"
    python3 - "$tmp/prog" "$frame" "$corpus/bpf_filter/prog-$i-$k" <<'PY'
import struct, sys
lines = open(sys.argv[1]).read().split()
n, nums = int(lines[0]), list(map(int, lines[1:]))
frame = open(sys.argv[2], "rb").read()
out = bytes([0, n])
for j in range(n):
    code, jt, jf, k = nums[4 * j : 4 * j + 4]
    out += struct.pack("<HBBI", code, jt, jf, k)
out += struct.pack("<I", len(frame)) + frame
open(sys.argv[3], "wb").write(out)
PY
  done
  i=$((i + 1))
done
for f in "${frames[@]:0:200}"; do
  { printf '\001'; cat "$f"; } > "$corpus/bpf_filter/frame-$(basename "$f")"
done

# ipfix_roundtrip: the input only drives arbitrary::Unstructured; a few
# deterministic pseudo-random blobs of different sizes.
python3 - "$corpus/ipfix_roundtrip" <<'PY'
import random, sys
r = random.Random(9)
for n in (0, 16, 64, 256, 1024, 4096):
    open(f"{sys.argv[1]}/blob-{n}", "wb").write(bytes(r.randrange(256) for _ in range(n)))
PY

# canary: one harmless input; the fuzzer must find `LINECAP!` on its own.
printf 'hello' > "$corpus/canary/hello"

for t in "${targets[@]}"; do
  printf '%-16s %5d seeds\n' "$t" "$(ls "$corpus/$t" | wc -l)"
done
