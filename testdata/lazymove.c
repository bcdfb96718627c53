// lazymove: memory that moves (mremap) again and again while restore
// --lazy fills it.
//
// lazymove MIB: maps MIB MiB of anonymous memory, writes a pattern of its
// offset into every word, and reserves a second range of the same size
// (PROT_NONE). Piece i (1 MiB) lives at offset i of one range or the
// other. It prints "ready", then loops: 16 rounds that each move every
// piece to the other range (and reserve the spot it left), then a check of
// every word at the piece's current place, "pass N ok" or a FAIL line.
//
// The moves race the background pass of a lazy restore: a piece moved
// while chpox copies into its old place must still get the image's pages
// at its new place, never zero pages.
//
// It also holds an 8 MiB area with a pattern that fork children do not
// get (MADV_DONTFORK). SIGUSR1 makes it fork once; the child ("kid") runs
// the same loop and prints "kid pass N ok", and the parent checks the
// area at each pass. A child forked during a lazy restore has no such
// area, and no event ever says so.
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "testprog.h"

#define MIB (1ul << 20)

static uint64_t pat(uint64_t i) { return (i + 5) * 0x9e3779b97f4a7c15ull ^ 5; }

static volatile sig_atomic_t forkNow;
static void on_usr1(int s) { (void)s; forkNow = 1; }

#define NKEPT (8 * MIB / 8)

int main(int argc, char **argv) {
	size_t n = (size_t)atol(argc > 1 ? argv[1] : "128");
	char *side[2];
	side[0] = mmap(0, n * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	side[1] = mmap(0, n * MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *at = calloc(n, 1); // which side piece i is on
	if (side[0] == MAP_FAILED || side[1] == MAP_FAILED || !at)
		return 1;
	uint64_t *kept = mmap(0, NKEPT * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (kept == MAP_FAILED || madvise(kept, NKEPT * 8, MADV_DONTFORK) != 0)
		return 1;
	uint64_t *w = (uint64_t *)side[0];
	for (size_t i = 0; i < n * MIB / 8; i++)
		w[i] = pat(i);
	for (size_t i = 0; i < NKEPT; i++)
		kept[i] = pat(i) ^ 1;
	signal(SIGUSR1, on_usr1);
	const char *who = "";
	say("ready\n");
	for (long pass = 1;; pass++) {
		if (forkNow && !*who) {
			forkNow = 0;
			if (fork() == 0)
				who = "kid ";
		}
		for (size_t i = 0; i < NKEPT && !*who; i++)
			if (kept[i] != (pat(i) ^ 1)) {
				say("pass %ld FAIL kept at %zu\n", pass, i * 8);
				return 1;
			}
		for (int round = 0; round < 16; round++) {
			for (size_t i = 0; i < n; i++) {
				char *from = side[at[i]] + i * MIB, *to = side[!at[i]] + i * MIB;
				if (mremap(from, MIB, MIB, MREMAP_MAYMOVE | MREMAP_FIXED, to) != to) {
					say("%smremap FAIL piece %zu\n", who, i);
					return 1;
				}
				if (mmap(from, MIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != from) {
					say("%sreserve FAIL piece %zu\n", who, i);
					return 1;
				}
				at[i] = !at[i];
			}
		}
		for (size_t i = 0; i < n; i++) {
			uint64_t *p = (uint64_t *)(side[at[i]] + i * MIB);
			for (size_t j = 0; j < MIB / 8; j++) {
				uint64_t want = pat(i * MIB / 8 + j);
				if (p[j] != want) {
					say("%spass %ld FAIL piece %zu at %zu: %#llx want %#llx\n", who, pass, i, j * 8,
					    (unsigned long long)p[j], (unsigned long long)want);
					return 1;
				}
			}
		}
		say("%spass %ld ok\n", who, pass);
		nap(10);
	}
}
