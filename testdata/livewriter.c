// livewriter: writes random pages of an N MiB buffer (argv[1]) without
// end, argv[2] pages per loop iteration, then sleeps argv[3] microseconds.
// Page p holds {gen, p, ..., gen ^ p*K}; last[p] (other pages) the gen it
// got last; G counts iterations. One page per iteration is written by the
// kernel (read(2) from a pipe), the rest by the CPU. It measures the
// longest gap between two iterations (a freeze shows as one).
// With argv[4] = Z > 0, every Z-th iteration a random page is dropped
// (MADV_DONTNEED: it must read as zeros, last[p] = ZAP) and, every other
// time, read at once (the zero page is mapped, nothing written).
// With argv[5] = FILE, it also maps FILE (created, 64 pages) privately and,
// each time it drops a page, writes one of its pages or drops one (which
// then reads as the file again).
// SIGUSR1: check every page, print "live ok G MAXGAP_US" or "live FAIL ...".
// SIGUSR2: forget the longest gap so far, print "reset".
// Before "live ok", a line "gap ended at SECONDS.MICROS" gives the wall
// clock (CLOCK_REALTIME) at the end of the longest gap, to find in a
// chpox -v log what caused it.
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

#define PAGE 4096
#define K 0x9e3779b97f4a7c15ull
#define ZAP (~0ull)

static volatile sig_atomic_t check, reset;
static void on_usr1(int s) { (void)s; check = 1; }
static void on_usr2(int s) { (void)s; reset = 1; }

int main(int argc, char **argv) {
	size_t n = (size_t)atol(argc > 1 ? argv[1] : "256") << 20;
	int per = argc > 2 ? atoi(argv[2]) : 64;
	int sleep_us = argc > 3 ? atoi(argv[3]) : 1000;
	int zap = argc > 4 ? atoi(argv[4]) : 0;
	volatile uint64_t sink;
	const char *fpath = argc > 5 ? argv[5] : NULL;
	enum { FPAGES = 64 };
	uint64_t *fmem = NULL, flast[FPAGES];
	if (fpath) {
		int fd = open(fpath, O_RDWR | O_CREAT | O_TRUNC, 0600);
		if (fd < 0)
			return 4;
		for (uint64_t p = 0; p < FPAGES; p++) {
			uint64_t pg[PAGE / 8] = {0xf11e0000 + p};
			if (write(fd, pg, PAGE) != PAGE)
				return 4;
			flast[p] = ZAP;
		}
		fmem = mmap(0, FPAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
		close(fd);
		if (fmem == MAP_FAILED)
			return 4;
	}
	size_t pages = n / PAGE;
	uint64_t *mem = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *last = mmap(0, pages * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int pfd[2];
	if (mem == MAP_FAILED || last == MAP_FAILED || pipe(pfd) < 0)
		return 1;
	for (size_t p = 0; p < pages; p++) {
		uint64_t *w = mem + p * (PAGE / 8);
		w[0] = 0, w[1] = p, w[PAGE / 8 - 1] = p * K;
		last[p] = 0;
	}
	(void)sink;
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	uint64_t G = 0;
	int64_t maxgap = 0, prev = now_us();
	struct timespec gap_end = {0};
	say("ready\n");
	for (;;) {
		G++;
		for (int i = 0; i < per; i++) {
			size_t p = next() % pages;
			uint64_t *w = mem + p * (PAGE / 8);
			if (i == 0) {
				uint64_t rec[2] = {G, p};
				if (write(pfd[1], rec, sizeof rec) != sizeof rec || read(pfd[0], w, sizeof rec) != sizeof rec)
					return 2;
			} else {
				w[0] = G, w[1] = p;
			}
			w[PAGE / 8 - 1] = G ^ (p * K);
			last[p] = G;
		}
		if (zap > 0 && G % zap == 0) {
			size_t p = next() % pages;
			uint64_t *w = mem + p * (PAGE / 8);
			if (madvise(w, PAGE, MADV_DONTNEED) < 0)
				return 3;
			last[p] = ZAP;
			if (G % (2 * zap) == 0)
				sink = w[0];
			if (fmem) {
				size_t f = next() % FPAGES;
				uint64_t *fw = fmem + f * (PAGE / 8);
				if (G % (3 * zap) == 0) {
					if (madvise(fw, PAGE, MADV_DONTNEED) < 0)
						return 3;
					flast[f] = ZAP;
				} else {
					fw[0] = G;
					flast[f] = G;
				}
			}
		}
		if (sleep_us > 0) {
			struct timespec ts = {0, sleep_us * 1000L};
			nanosleep(&ts, NULL);
		}
		int64_t t = now_us();
		if (t - prev > maxgap) {
			maxgap = t - prev;
			clock_gettime(CLOCK_REALTIME, &gap_end);
		}
		prev = t;
		if (reset) {
			reset = 0, maxgap = 0, prev = now_us();
			say("reset\n");
		}
		if (check) {
			check = 0;
			size_t bad = pages;
			for (size_t p = 0; p < pages && bad == pages; p++) {
				uint64_t *w = mem + p * (PAGE / 8);
				if (last[p] == ZAP) {
					if (w[0] != 0 || w[1] != 0 || w[PAGE / 8 - 1] != 0)
						bad = p;
				} else if (w[0] != last[p] || w[1] != p || w[PAGE / 8 - 1] != (w[0] ^ (p * K)) || w[0] > G)
					bad = p;
			}
			for (size_t f = 0; fmem && f < FPAGES && bad == pages; f++)
				if (fmem[f * (PAGE / 8)] != (flast[f] == ZAP ? 0xf11e0000 + f : flast[f]))
					bad = pages + 1 + f;
			say("gap ended at %ld.%06ld\n", (long)gap_end.tv_sec, gap_end.tv_nsec / 1000);
			if (bad == pages)
				say("live ok %lu %ld\n", (unsigned long)G, (long)maxgap);
			else
				say("live FAIL page %zu gen %lu last %lu G %lu\n", bad, (unsigned long)mem[bad * (PAGE / 8)],
				    (unsigned long)last[bad], (unsigned long)G);
			prev = now_us();
		}
	}
}
