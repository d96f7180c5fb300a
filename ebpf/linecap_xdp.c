// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// linecap's XDP program: stamp every frame with its arrival time, redirect
// it to the AF_XDP socket bound to the queue it arrived on, and count what it
// sees per queue so user space can account for frames that never reached a
// socket.
//
// Built by dataplane/build.rs with Debian's clang:
//   clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c linecap_xdp.c
// and loaded with aya. Map names and layouts are shared with
// dataplane/src/afxdp (XSKS_MAP, STATS_MAP, QUEUES_MAX, struct linecap_meta).

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

// Per queue: frames handed to the socket's redirect, frames passed to the
// stack (no socket bound), and frames it could not stamp (the driver gave no
// metadata room; user space then stamps them per burst). Each frame adds one
// to exactly one of the first two, after the decision, so a reading taken
// while frames flow is always consistent: seen = redirected + not_redirected.
struct queue_stats {
    __u64 redirected;
    __u64 not_redirected;
    __u64 no_meta;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, QUEUES_MAX);
    __type(key, __u32);
    __type(value, struct queue_stats);
} linecap_stats SEC(".maps");

// The XDP metadata the program puts right before the frame (the kernel
// copies it into UMEM with the frame, in copy and zero-copy mode alike).
// Layout shared with dataplane/src/afxdp/socket.rs (XdpMeta).
#define LINECAP_META_MAGIC 0x4c435453u /* "LCTS" */
#define LINECAP_CLOCK_KTIME 1u         /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
struct linecap_meta {
    __u64 rx_ns;
    __u32 clock;
    __u32 magic;
};

SEC("xdp")
int linecap_xdp(struct xdp_md *ctx)
{
    // One clock read per frame, first thing at the hook. The driver's RX
    // hardware timestamp (bpf_xdp_metadata_rx_timestamp) needs a
    // device-bound program (BPF_F_XDP_DEV_BOUND_ONLY), which aya 0.14 cannot
    // load; see docs/architecture.md "Timestamps".
    __u64 now = bpf_ktime_get_ns();
    __u32 q = ctx->rx_queue_index;
    struct queue_stats *st = bpf_map_lookup_elem(&linecap_stats, &q);
    int stamped = 0;
    if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct linecap_meta)) == 0) {
        void *data = (void *)(long)ctx->data;
        struct linecap_meta *m = (void *)(long)ctx->data_meta;
        if ((void *)(m + 1) <= data) {
            m->rx_ns = now;
            m->clock = LINECAP_CLOCK_KTIME;
            m->magic = LINECAP_META_MAGIC;
            stamped = 1;
        }
    }
    if (!stamped && st)
        st->no_meta++;
    long action = bpf_redirect_map(&linecap_xsks, q, XDP_PASS);
    if (st) {
        if (action == XDP_REDIRECT)
            st->redirected++;
        else
            st->not_redirected++;
    }
    return action;
}

char _license[] SEC("license") = "Dual BSD/GPL";
