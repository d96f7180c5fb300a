// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
//
// linecap's XDP program: stamp every frame with its arrival time, redirect
// it to the AF_XDP socket bound to the queue it arrived on, and count what it
// sees per queue so user space can account for frames that never reached a
// socket.
//
// Built twice by dataplane/build.rs with Debian's clang:
//   clang -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c linecap_xdp.c
//     -> linecap_xdp.o: bpf_ktime_get_ns() per frame; loaded by aya, attaches
//        in native and generic mode;
//   ... -DLINECAP_DEV_BOUND -> linecap_xdp_hw.o: also asks the driver for the
//        frame's RX hardware timestamp (bpf_xdp_metadata_rx_timestamp, a
//        kfunc); must be loaded device-bound (prog_ifindex +
//        BPF_F_XDP_DEV_BOUND_ONLY), native mode only; loaded by
//        dataplane/src/afxdp/devbound.rs into the maps aya created for the
//        first object.
// Map names and layouts are shared with dataplane/src/afxdp (XSKS_MAP,
// STATS_MAP, QUEUES_MAX, struct queue_stats, struct linecap_meta).

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
// The device-bound program also counts, per frame it stamped, whether the
// driver gave a hardware timestamp (hw_stamped) or not (hw_missing: the
// kfunc returned an error or 0, and the frame carries bpf_ktime_get_ns()
// alone); the other program leaves both at 0. Read in loader.rs as [u64; 5].
struct queue_stats {
    __u64 redirected;
    __u64 not_redirected;
    __u64 no_meta;
    __u64 hw_stamped;
    __u64 hw_missing;
};

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, QUEUES_MAX);
    __type(key, __u32);
    __type(value, struct queue_stats);
} linecap_stats SEC(".maps");

// The XDP metadata the program puts right before the frame (the kernel
// copies it into UMEM with the frame, in copy and zero-copy mode alike).
// Layout shared with dataplane/src/afxdp/socket.rs (XdpMeta): the last 16
// bytes before the frame are always (rx_ns, clock, magic); with clock =
// LINECAP_CLOCK_HW the 8 bytes before them hold the hardware stamp.
#define LINECAP_META_MAGIC 0x4c435453u /* "LCTS" */
#define LINECAP_CLOCK_KTIME 1u         /* rx_ns only: bpf_ktime_get_ns(), CLOCK_MONOTONIC */
#define LINECAP_CLOCK_HW 2u            /* hw_ns too: the NIC's RX stamp (its PHC, ns) */
struct linecap_meta {
    __u64 rx_ns;
    __u32 clock;
    __u32 magic;
};
struct linecap_meta_hw {
    __u64 hw_ns;
    struct linecap_meta m;
};

#ifdef LINECAP_DEV_BOUND
// A kfunc (kernel >= 6.3): the driver's implementation when the netdev has
// xdp_metadata_ops, else the kernel's default, which returns -EOPNOTSUPP.
extern int bpf_xdp_metadata_rx_timestamp(const struct xdp_md *ctx, __u64 *timestamp) __ksym;
#define META_SIZE sizeof(struct linecap_meta_hw)
#else
#define META_SIZE sizeof(struct linecap_meta)
#endif

SEC("xdp")
int linecap_xdp(struct xdp_md *ctx)
{
    // One clock read per frame, first thing at the hook (also with the
    // hardware stamp: user space aligns the NIC's clock to the host's with
    // the pair, see docs/architecture.md "Timestamps").
#ifndef LINECAP_NO_META
    __u64 now = bpf_ktime_get_ns();
#endif
    __u32 q = ctx->rx_queue_index;
    struct queue_stats *st = bpf_map_lookup_elem(&linecap_stats, &q);
#ifdef LINECAP_DEV_BOUND
    __u64 hw = 0;
    // 0 with a zero stamp is what veth gives for an skb (no hardware).
    if (bpf_xdp_metadata_rx_timestamp(ctx, &hw) != 0)
        hw = 0;
#endif
    int stamped = 0;
#ifdef LINECAP_NO_META
    // The variant for kernels whose verifier refuses bpf_xdp_adjust_meta in
    // XDP programs (seen on a 6.18 build): no stamp in the metadata, so user
    // space stamps each frame at receive; every frame counts in no_meta below, as
    // for a driver that gives no metadata room.
#else
    if (bpf_xdp_adjust_meta(ctx, -(int)META_SIZE) == 0) {
        void *data = (void *)(long)ctx->data;
        void *meta = (void *)(long)ctx->data_meta;
        if (meta + META_SIZE <= data) {
            // Written through data_meta (the verifier checks packet access
            // from there); the struct ends exactly at data.
#ifdef LINECAP_DEV_BOUND
            struct linecap_meta_hw *h = meta;
            struct linecap_meta *m = &h->m;
            h->hw_ns = hw;
            m->clock = hw ? LINECAP_CLOCK_HW : LINECAP_CLOCK_KTIME;
#else
            struct linecap_meta *m = meta;
            m->clock = LINECAP_CLOCK_KTIME;
#endif
            m->rx_ns = now;
            m->magic = LINECAP_META_MAGIC;
            stamped = 1;
        }
    }
#endif
    if (st) {
        if (!stamped)
            st->no_meta++;
#ifdef LINECAP_DEV_BOUND
        else if (hw)
            st->hw_stamped++;
        else
            st->hw_missing++;
#endif
    }
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
