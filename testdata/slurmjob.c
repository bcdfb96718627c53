// slurmjob: a long computation that a checkpoint must not change.
//
//   slurmjob STEPS
//
// Each step mixes the step number into a 64 KiB table (its state lives in
// memory only) and sleeps 10 ms; every 50 steps it prints "step N", at the
// end "result HEX", a digest of the whole table. A run that was
// checkpointed, killed and restored must print what an uninterrupted run
// prints.
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t table[8192];

static uint64_t mix(uint64_t x) {
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

int main(int argc, char **argv) {
	long steps = argc > 1 ? atol(argv[1]) : 400;
	setvbuf(stdout, NULL, _IONBF, 0);
	for (long i = 0; i < 8192; i++)
		table[i] = mix(i + 1);
	struct timespec ts = {0, 10 * 1000 * 1000};
	for (long s = 1; s <= steps; s++) {
		for (long i = 0; i < 8192; i++)
			table[i] = mix(table[i] ^ table[(i + s) % 8192] ^ (uint64_t)s);
		while (nanosleep(&ts, &ts) != 0)
			;
		ts.tv_nsec = 10 * 1000 * 1000;
		if (s % 50 == 0)
			printf("step %ld\n", s);
	}
	uint64_t d = 0;
	for (long i = 0; i < 8192; i++)
		d = mix(d ^ table[i]);
	printf("result %016llx\n", (unsigned long long)d);
	return 0;
}
