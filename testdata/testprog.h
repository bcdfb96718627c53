// testprog.h: helpers the C test programs share. Output goes through
// write(2) so that nothing sits in a stdio buffer across a checkpoint, and
// a failed write ends the program (exit 99) instead of going unnoticed.
#ifndef TESTPROG_H
#define TESTPROG_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static inline void say(const char *fmt, ...) {
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n > (int)sizeof buf - 1)
		n = sizeof buf - 1;
	if (write(1, buf, n) != n)
		_exit(99);
}

// nap sleeps ms milliseconds (an interrupted sleep ends early).
static inline void nap(int ms) {
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

// xorshift64: the random page choices of the memory writers.
static uint64_t rng_state = 88172645463325252ull;
static inline uint64_t next(void) {
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

// now_us is CLOCK_MONOTONIC in microseconds: loops measure their own gaps.
static inline int64_t now_us(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000ll + ts.tv_nsec / 1000;
}

#endif
