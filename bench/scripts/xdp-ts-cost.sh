#!/usr/bin/env bash
# Per-frame cost of linecap's two XDP programs (issue 14): with kernel.bpf_stats_enabled=1 (restored on
# exit), the same veth traffic (bench gen, COUNT frames of 64 B at PPS) through a capture with the
# ktime-only program and with the device-bound one (RX hardware timestamp kfunc), native mode; the figure
# is the kernel's own run_time_ns / run_cnt of the attached program (bpftool prog show), per run.
# Run from the repository root as root, after: cargo build -p linecap -p bench (or set L and B).
# Traffic stays inside two namespaces this script creates (both veth ends inside them).
set -u
L=${L:-./target/debug/linecap}; B=${B:-./target/debug/bench}
COUNT=${COUNT:-500000}; PPS=${PPS:-50000}; RUNS=${RUNS:-3}
ns=xtc$$
old=$(sysctl -n kernel.bpf_stats_enabled)
pid=
cleanup() {
  [ -n "$pid" ] && kill -INT "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  sysctl -qw kernel.bpf_stats_enabled="$old"
  ip netns del ${ns}a 2>/dev/null; ip netns del ${ns}b 2>/dev/null
  rm -rf /tmp/${ns} /tmp/${ns}.err
}
trap cleanup EXIT
ip netns add ${ns}a; ip netns add ${ns}b
ip link add vA netns ${ns}a type veth peer name vB netns ${ns}b
ip -n ${ns}a link set vA up; ip -n ${ns}b link set vB up
sysctl -qw kernel.bpf_stats_enabled=1
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d.get('$1', 0))"; }
printf "%-4s %-13s %10s %14s %10s\n" run program run_cnt run_time_ns ns/frame
for run in $(seq "$RUNS"); do for ts in ktime auto; do
  rm -rf /tmp/${ns}
  timeout 120 ip netns exec ${ns}a $L capture --source afxdp:vA --xdp-mode native --xdp-timestamps $ts \
    --no-threaded-napi --no-metrics --out /tmp/${ns} >/dev/null 2>/tmp/${ns}.err &
  pid=$!
  for _ in $(seq 200); do grep -q ready /tmp/${ns}.err 2>/dev/null && break; sleep 0.1; done
  id=
  for _ in $(seq 20); do
    id=$(ip netns exec ${ns}a bpftool net show dev vA --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["xdp"][0]["id"])' 2>/dev/null)
    [ -n "$id" ] && break; sleep 0.1
  done
  if [ -z "$id" ]; then echo "run $run $ts: no XDP program attached; linecap said:"; cat /tmp/${ns}.err; exit 1; fi
  b=$(ip netns exec ${ns}a bpftool prog show id "$id" --json)
  timeout 120 ip netns exec ${ns}b $B gen -i vB --size 64 --count "$COUNT" --pps "$PPS" >/dev/null 2>&1
  a=$(ip netns exec ${ns}a bpftool prog show id "$id" --json)
  # Device-bound: the verifier turned the kfunc call into a call to the driver's own function
  # (bpf_prog_info has no ifindex for a device-bound program; the kernel fills it for offloaded ones only).
  if ip netns exec ${ns}a bpftool prog dump xlated id "$id" | grep -q 'call veth_xdp_rx_timestamp'; then
    dev=device-bound; else dev=ktime; fi
  cnt=$(( $(echo "$a" | field run_cnt) - $(echo "$b" | field run_cnt) ))
  rt=$(( $(echo "$a" | field run_time_ns) - $(echo "$b" | field run_time_ns) ))
  printf "%-4s %-13s %10d %14d %10.1f\n" "$run" "$dev" "$cnt" "$rt" "$(python3 -c "print($rt / max($cnt, 1))")"
  kill -INT $pid; wait $pid; pid=
done; done
