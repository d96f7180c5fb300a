#!/usr/bin/env bash
# Run from the repository root as root, after: cargo build --release -p linecap -p bench
# Generator ceiling per TX path: unpaced `bench gen` for 2 s on a 2-queue veth, with nothing on the
# receiving end (the stack drops the frames) and with linecap capturing it (AF_XDP native, threaded NAPI).
set -u
B=./target/release/bench; L=./target/release/linecap
ns=gtx$$
ip netns add ${ns}a; ip netns add ${ns}b
trap 'ip netns del ${ns}a; ip netns del ${ns}b; rm -rf /tmp/${ns}' EXIT
ip link add vA netns ${ns}a numtxqueues 2 numrxqueues 2 type veth peer name vB netns ${ns}b numtxqueues 2 numrxqueues 2
ip -n ${ns}a link set vA up; ip -n ${ns}b link set vB up
printf "%-10s %-6s %-7s %-8s %12s\n" receiver size tx threads achieved_pps
for recv in none linecap; do for size in 64 1514; do for tx in packet xdp; do for t in 1 2; do
  if [ $recv = linecap ]; then
    rm -rf /tmp/${ns}; ip netns exec ${ns}a $L capture --source afxdp:vA --xdp-mode native --no-metrics --out /tmp/${ns} >/dev/null 2>/tmp/${ns}.err &
    pid=$!; for i in $(seq 100); do grep -q ready /tmp/${ns}.err 2>/dev/null && break; sleep 0.1; done
  fi
  r=$(ip netns exec ${ns}b $B gen -i vB --size $size --duration 2 --threads $t --tx $tx --json - 2>/dev/null | grep '"achieved_pps"' | tr -dc '0-9.')
  printf "%-10s %-6s %-7s %-8s %12.0f\n" $recv $size $tx $t $r
  if [ $recv = linecap ]; then kill -INT $pid; wait $pid; fi
done; done; done; done
