// dirtier: holds N MiB (argv[1]) of written pages and, on SIGUSR1, writes
// argv[2] per mille of them (random pages), then says "dirtied G". Its
// loop reads one random page every millisecond, without writing, and
// measures the longest gap between two iterations (a freeze shows as one);
// SIGUSR2 prints "gap US" and starts a new measurement. Between two
// SIGUSR1 it writes nothing: what a checkpoint finds written is exactly
// what it was told to write.
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#include "testprog.h"

#define PAGE 4096

static volatile sig_atomic_t dirty, report;
static void on_usr1(int s) { (void)s; dirty = 1; }
static void on_usr2(int s) { (void)s; report = 1; }

int main(int argc, char **argv) {
	size_t pages = ((size_t)atol(argc > 1 ? argv[1] : "256") << 20) / PAGE;
	long permille = argc > 2 ? atol(argv[2]) : 10;
	volatile uint64_t *mem = mmap(0, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return 1;
	for (size_t p = 0; p < pages; p++)
		mem[p * (PAGE / 8)] = p;
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	uint64_t G = 0, sink = 0;
	int64_t maxgap = 0, prev = now_us();
	say("ready\n");
	for (;;) {
		sink += mem[next() % pages * (PAGE / 8)];
		nap(1);
		int64_t t = now_us();
		if (t - prev > maxgap)
			maxgap = t - prev;
		prev = t;
		if (dirty) {
			dirty = 0;
			G++;
			for (size_t i = 0; i < pages * permille / 1000; i++)
				mem[next() % pages * (PAGE / 8) + 1] = G;
			say("dirtied %llu\n", (unsigned long long)G);
			prev = now_us();
		}
		if (report) {
			report = 0;
			say("gap %lld\n", (long long)maxgap);
			maxgap = 0;
			prev = now_us();
		}
	}
	(void)sink;
}
