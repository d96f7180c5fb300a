/* linecap's thin DPDK shim: the static-inline functions of DPDK 22.11 that
 * Rust cannot call through bindgen, plus the offsets of the rte_mbuf fields
 * the receive loop reads directly (no call per packet). Built by build.rs
 * with `pkg-config --cflags libdpdk` as they are. */
#ifndef LINECAP_DPDK_SHIM_H
#define LINECAP_DPDK_SHIM_H

#include <stdint.h>
#include <stddef.h>

struct rte_mbuf;
struct rte_mempool;

/* Where the fields the receive loop reads are in a struct rte_mbuf (checked
 * at start against the Rust mirror; the shim's _Static_asserts pin them). */
struct lc_mbuf_layout {
	uint32_t size;       /* sizeof(struct rte_mbuf) */
	uint32_t buf_addr;   /* void * */
	uint32_t data_off;   /* uint16_t */
	uint32_t nb_segs;    /* uint16_t */
	uint32_t ol_flags;   /* uint64_t */
	uint32_t pkt_len;    /* uint32_t */
	uint32_t data_len;   /* uint16_t */
};

void lc_mbuf_layout(struct lc_mbuf_layout *out);
uint16_t lc_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
uint16_t lc_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n);
/* Allocate an mbuf from `pool` holding a copy of `len` bytes (NULL when the
 * pool is empty or the frame does not fit one segment). Test injection only. */
struct rte_mbuf *lc_mbuf_from_bytes(struct rte_mempool *pool, const uint8_t *data, uint32_t len);
void lc_pktmbuf_free(struct rte_mbuf *m);
unsigned lc_lcore_id(void);
int lc_errno(void);
uint64_t lc_rdtsc(void);
/* The first int of the PMD's private receive-queue struct of (port, queue),
 * as rte_eth_rx_burst finds it (rte_eth_fp_ops[port].rxq.data[queue]); -1
 * when there is none. For net_af_packet (22.11) that int is the queue's
 * AF_PACKET socket: the caller must check that it is one (SO_DOMAIN, bound
 * interface) before using it. */
int lc_rxq_first_int(uint16_t port, uint16_t queue);
/* net_af_packet (DPDK 22.11): the PMD's receive queue starts with
 * { int sockfd; struct iovec *rd; uint8_t *map; unsigned framecount;
 * unsigned framenum; } (the same in every release since 2014). Returns 0
 * when the queue of (port, queue) looks like that: rd[0] starts at map,
 * the slots are iov_len apart, framenum < framecount. */
int lc_afp_check(uint16_t port, uint16_t queue);
/* net_af_packet: the kernel's receive stamps (TPACKET_V2 tp_sec/tp_nsec,
 * CLOCK_REALTIME, in ns) of the frames waiting in the queue's ring from the
 * PMD's next slot on, up to `max`: exactly the frames (in order) that an
 * rx_burst of at most the returned count will hand out. Call only on the
 * thread that polls the queue, and only after lc_afp_check succeeded. */
uint16_t lc_afp_peek_stamps(uint16_t port, uint16_t queue, uint64_t *ts, uint16_t max);

#endif
