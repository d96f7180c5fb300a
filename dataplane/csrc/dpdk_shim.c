/* See dpdk_shim.h. */
#include <string.h>
#include <sys/uio.h>
#include <linux/if_packet.h>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>

#include "dpdk_shim.h"

/* The receive loop reads these fields through a Rust mirror of the start of
 * struct rte_mbuf (`MbufHead` in src/dpdk/port.rs, which asserts the same
 * offsets): a DPDK whose layout differs fails the build here. */
_Static_assert(offsetof(struct rte_mbuf, buf_addr) == 0, "rte_mbuf.buf_addr moved");
_Static_assert(offsetof(struct rte_mbuf, data_off) == 16, "rte_mbuf.data_off moved");
_Static_assert(offsetof(struct rte_mbuf, nb_segs) == 20, "rte_mbuf.nb_segs moved");
_Static_assert(offsetof(struct rte_mbuf, ol_flags) == 24, "rte_mbuf.ol_flags moved");
_Static_assert(offsetof(struct rte_mbuf, pkt_len) == 36, "rte_mbuf.pkt_len moved");
_Static_assert(offsetof(struct rte_mbuf, data_len) == 40, "rte_mbuf.data_len moved");
_Static_assert(sizeof(((struct rte_mbuf *)0)->data_off) == 2, "rte_mbuf.data_off size");
_Static_assert(sizeof(((struct rte_mbuf *)0)->pkt_len) == 4, "rte_mbuf.pkt_len size");
_Static_assert(sizeof(((struct rte_mbuf *)0)->data_len) == 2, "rte_mbuf.data_len size");

void lc_mbuf_layout(struct lc_mbuf_layout *out)
{
	out->size = sizeof(struct rte_mbuf);
	out->buf_addr = offsetof(struct rte_mbuf, buf_addr);
	out->data_off = offsetof(struct rte_mbuf, data_off);
	out->nb_segs = offsetof(struct rte_mbuf, nb_segs);
	out->ol_flags = offsetof(struct rte_mbuf, ol_flags);
	out->pkt_len = offsetof(struct rte_mbuf, pkt_len);
	out->data_len = offsetof(struct rte_mbuf, data_len);
}

uint16_t lc_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_rx_burst(port, queue, pkts, n);
}

uint16_t lc_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n)
{
	return rte_eth_tx_burst(port, queue, pkts, n);
}

struct rte_mbuf *lc_mbuf_from_bytes(struct rte_mempool *pool, const uint8_t *data, uint32_t len)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
	if (m == NULL)
		return NULL;
	char *p = len <= UINT16_MAX ? rte_pktmbuf_append(m, (uint16_t)len) : NULL;
	if (p == NULL) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	memcpy(p, data, len);
	return m;
}

void lc_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

unsigned lc_lcore_id(void)
{
	return rte_lcore_id();
}

int lc_errno(void)
{
	return rte_errno;
}

uint64_t lc_rdtsc(void)
{
	return rte_rdtsc();
}

int lc_rxq_first_int(uint16_t port, uint16_t queue)
{
	if (port >= RTE_MAX_ETHPORTS || queue >= RTE_MAX_QUEUES_PER_PORT)
		return -1;
	void **data = rte_eth_fp_ops[port].rxq.data;
	if (data == NULL || data[queue] == NULL)
		return -1;
	int v;
	memcpy(&v, data[queue], sizeof v);
	return v;
}

/* The leading fields of net_af_packet's struct pkt_rx_queue. */
struct lc_afp_rxq {
	int sockfd;
	struct iovec *rd;
	uint8_t *map;
	unsigned int framecount;
	unsigned int framenum;
};

static struct lc_afp_rxq *lc_afp_rxq(uint16_t port, uint16_t queue)
{
	if (port >= RTE_MAX_ETHPORTS || queue >= RTE_MAX_QUEUES_PER_PORT)
		return NULL;
	void **data = rte_eth_fp_ops[port].rxq.data;
	if (data == NULL)
		return NULL;
	return data[queue];
}

int lc_afp_check(uint16_t port, uint16_t queue)
{
	struct lc_afp_rxq *q = lc_afp_rxq(port, queue);
	if (q == NULL || q->rd == NULL || q->map == NULL || q->framecount == 0 ||
	    q->framenum >= q->framecount)
		return -1;
	size_t len = q->rd[0].iov_len;
	if (q->rd[0].iov_base != (void *)q->map || len < TPACKET2_HDRLEN)
		return -1;
	if (q->framecount > 1 && (uint8_t *)q->rd[1].iov_base != q->map + len)
		return -1;
	if ((uint8_t *)q->rd[q->framecount - 1].iov_base != q->map + (size_t)(q->framecount - 1) * len)
		return -1;
	return 0;
}

uint16_t lc_afp_peek_stamps(uint16_t port, uint16_t queue, uint64_t *ts, uint16_t max)
{
	struct lc_afp_rxq *q = lc_afp_rxq(port, queue);
	unsigned int n = q->framecount, at = q->framenum;
	uint16_t i;
	for (i = 0; i < max; i++) {
		struct tpacket2_hdr *h = q->rd[at].iov_base;
		/* The kernel publishes the slot (and its header) with the status. */
		uint32_t st = __atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE);
		if ((st & TP_STATUS_USER) == 0)
			break;
		ts[i] = (uint64_t)h->tp_sec * 1000000000u + h->tp_nsec;
		if (++at >= n)
			at = 0;
	}
	return i;
}
