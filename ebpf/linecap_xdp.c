// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// linecap's XDP program: redirect every frame to the AF_XDP socket bound to
// the queue it arrived on, and count what it sees per queue so user space
// can account for frames that never reached a socket.
//
// Built by linecap/build.rs with Debian's clang:
//   clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c linecap_xdp.c
// and loaded with aya. Map names and layouts are shared with
// dataplane/src/afxdp (XSKS_MAP, STATS_MAP, QUEUES_MAX).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define QUEUES_MAX 256

// Queue index -> AF_XDP socket. A queue without a socket passes frames to
// the kernel stack (XDP_PASS), so attaching never blackholes traffic.
struct {
    __uint(type, BPF_MAP_TYPE_XSKMAP);
    __uint(max_entries, QUEUES_MAX);
    __type(key, __u32);
    __type(value, __u32);
} linecap_xsks SEC(".maps");

// Per queue: [0] frames seen by the program, [1] frames it could not
// redirect (no socket bound, or the redirect failed).
struct queue_stats {
    __u64 seen;
    __u64 not_redirected;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, QUEUES_MAX);
    __type(key, __u32);
    __type(value, struct queue_stats);
} linecap_stats SEC(".maps");

SEC("xdp")
int linecap_xdp(struct xdp_md *ctx)
{
    __u32 q = ctx->rx_queue_index;
    struct queue_stats *st = bpf_map_lookup_elem(&linecap_stats, &q);
    if (st)
        st->seen++;
    long action = bpf_redirect_map(&linecap_xsks, q, XDP_PASS);
    if (action != XDP_REDIRECT && st)
        st->not_redirected++;
    return action;
}

char _license[] SEC("license") = "Dual BSD/GPL";
