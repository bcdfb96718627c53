// eventfds: holds eventfds whose state restore must give back, and prints
// "ready" then ticks every 20 ms; the test reads their state in
// /proc/PID/fdinfo, never the counters themselves (a read changes them).
//
//   3  counter 5, EFD_NONBLOCK
//   4  counter 3, EFD_SEMAPHORE
//   5  counter 2^32 + 7 (beyond eventfd2's 32-bit initial value), EFD_CLOEXEC
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>

#include "testprog.h"

int main(void) {
	uint64_t big = (1ull << 32) + 7;
	if (eventfd(5, EFD_NONBLOCK) != 3 || eventfd(3, EFD_SEMAPHORE) != 4 || eventfd(0, EFD_CLOEXEC) != 5 || write(5, &big, 8) != 8) {
		say("eventfds FAIL setup\n");
		exit(1);
	}
	say("ready\n");
	for (long i = 0;; i++) {
		say("tick %ld\n", i);
		nap(20);
	}
}
