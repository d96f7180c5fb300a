#!/usr/bin/env bash
# What one clock read costs on this machine, back to back (issue 19, DPDK
# receive loop): rdtsc, rdtscp and clock_gettime(CLOCK_REALTIME), each the
# mean over a loop of reads. Prints ns per read. Needs gcc.
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/rd.c" <<'C'
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <x86intrin.h>

static double since(struct timespec a, long n)
{
	struct timespec b;
	clock_gettime(CLOCK_MONOTONIC, &b);
	return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n;
}

int main(void)
{
	const long n = 50000000;
	struct timespec a, t;
	uint64_t sink = 0;
	unsigned aux;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		sink += __rdtsc();
	printf("rdtsc          %6.2f ns\n", since(a, n));
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		sink += __rdtscp(&aux);
	printf("rdtscp         %6.2f ns\n", since(a, n));
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n / 10; i++) {
		clock_gettime(CLOCK_REALTIME, &t);
		sink += (uint64_t)t.tv_nsec;
	}
	printf("clock_gettime  %6.2f ns\n", since(a, n / 10));
	return sink == 42; /* uses the reads */
}
C
gcc -O2 -o "$dir/rd" "$dir/rd.c"
"$dir/rd"
