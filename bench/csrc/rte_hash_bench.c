/* rte_hash side of `bench flows` (feature `dpdk`): DPDK 22.11's rte_hash doing
 * lookup-or-add + a counter update on the same 48-byte keys and the same
 * packet sequence as linecap's flow table.
 *
 * usage: rte_hash_bench KEYFILE SEQFILE SECONDS
 *   KEYFILE: N keys of 48 bytes (the flows); SEQFILE: packet choices as u32 ids.
 * Prints one JSON line: {"mpps":..,"flows":N,"entries":E}.
 * Burst of 32 (rte_hash_lookup_bulk's best size), CRC32 hash, no hugepages. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_hash.h>
#include <rte_hash_crc.h>
#include <rte_prefetch.h>

#define KEY_LEN 48
#define BURST 32

struct ctr {
	uint64_t first_ns, last_ns, packets[2], bytes[2];
};

static void *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		exit(2);
	}
	fseek(f, 0, SEEK_END);
	*len = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	void *p = malloc(*len ? *len : 1);
	if (!p || fread(p, 1, *len, f) != *len) {
		fprintf(stderr, "%s: read failed\n", path);
		exit(2);
	}
	fclose(f);
	return p;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s KEYFILE SEQFILE SECONDS\n", argv[0]);
		return 2;
	}
	char prefix[64];
	snprintf(prefix, sizeof prefix, "--file-prefix=lcrtehash%d", (int)getpid());
	char *eal[] = {"rte_hash_bench", "--no-huge", "-m", "2048", "--no-pci", "--no-shconf",
		       "--no-telemetry", "-l", "0", "--log-level", "error", prefix};
	if (rte_eal_init((int)(sizeof eal / sizeof eal[0]), eal) < 0) {
		fprintf(stderr, "rte_eal_init failed\n");
		return 1;
	}
	size_t klen, slen;
	uint8_t *keys = slurp(argv[1], &klen);
	uint32_t *seq = slurp(argv[2], &slen);
	size_t n = klen / KEY_LEN, m = slen / 4;
	double seconds = atof(argv[3]);
	uint32_t entries = 1024;
	while (entries < 2 * n)
		entries <<= 1;
	struct rte_hash_parameters p = {
		.name = "lcflows",
		.entries = entries,
		.key_len = KEY_LEN,
		.hash_func = rte_hash_crc,
		.hash_func_init_val = 0,
		.socket_id = 0,
	};
	struct rte_hash *h = rte_hash_create(&p);
	if (!h) {
		fprintf(stderr, "rte_hash_create failed\n");
		return 1;
	}
	struct ctr *c = calloc(entries + 1, sizeof *c);
	for (size_t i = 0; i < n; i++) {
		int32_t pos = rte_hash_add_key(h, keys + i * KEY_LEN);
		if (pos < 0) {
			fprintf(stderr, "add failed at %zu\n", i);
			return 1;
		}
		c[pos].first_ns = 1;
	}
	const void *kp[BURST];
	int32_t pos[BURST];
	uint64_t done = 0, ts = 2;
	size_t nlat = 0, maxlat = 1 << 20;
	uint32_t *lat = malloc(maxlat * sizeof *lat);
	double t0 = now_s(), busy = 0;
	for (;;) {
		for (size_t off = 0; off + BURST <= m; off += BURST) {
			double b0 = now_s();
			/* The burst's keys first come into cache, as a NIC's frames are
			 * when a worker reads them (the linecap and hashbrown columns do
			 * the same). */
			for (int i = 0; i < BURST; i++) {
				kp[i] = keys + (size_t)seq[off + i] * KEY_LEN;
				rte_prefetch0(kp[i]);
			}
			rte_hash_lookup_bulk(h, kp, BURST, pos);
			for (int i = 0; i < BURST; i++) {
				int32_t q = pos[i];
				if (q < 0) {
					q = rte_hash_add_key(h, kp[i]);
					if (q < 0)
						continue;
					c[q].first_ns = ts;
				}
				int d = seq[off + i] & 1;
				c[q].packets[d]++;
				c[q].bytes[d] += 64;
				if (ts > c[q].last_ns)
					c[q].last_ns = ts;
			}
			double d = now_s() - b0;
			busy += d;
			if (lat && nlat < maxlat)
				lat[nlat++] = (uint32_t)(d * 1e9);
			done += BURST;
			ts++;
			if ((done & 0xffff) == 0 && now_s() - t0 >= seconds)
				goto out;
		}
	}
out:
	double p50 = 0;
	if (lat && nlat) {
		qsort(lat, nlat, sizeof *lat, cmp_u32);
		p50 = lat[nlat / 2];
	}
	printf("{\"mpps\":%.4f,\"burst_ns_p50\":%.0f,\"burst\":%d,\"flows\":%zu,\"entries\":%u}\n",
	       (double)done / busy / 1e6, p50, BURST, n, entries);
	rte_hash_free(h);
	rte_eal_cleanup();
	return 0;
}
