// restarts: threads caught inside system calls that the kernel restarts
// after a stop (the caller never sees EINTR without a signal handler):
//
//   main    read(2) on a pipe nobody writes to (ERESTARTSYS)
//   thread  clock_nanosleep, relative, 300 ms (ERESTART_RESTARTBLOCK)
//   thread  futex wait on a word nobody wakes, 60 s timeout (ERESTART_RESTARTBLOCK)
//
// A call that returns prints "restarts FAIL <call> <errno>"; a fourth
// thread prints "tick N" every 20 ms.
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>

#include "testprog.h"

static uint32_t word;

static void *sleeper(void *arg) {
	for (;;) {
		struct timespec ts = {0, 300 * 1000000L};
		int r = clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
		if (r != 0)
			say("restarts FAIL clock_nanosleep %d\n", r);
	}
	return arg;
}

static void *waiter(void *arg) {
	for (;;) {
		struct timespec ts = {60, 0};
		long r = syscall(SYS_futex, &word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
		if (r != 0 && errno != EAGAIN && errno != ETIMEDOUT)
			say("restarts FAIL futex %d\n", errno);
	}
	return arg;
}

static void *ticker(void *arg) {
	for (long i = 0;; i++) {
		say("tick %ld\n", i);
		nap(20);
	}
	return arg;
}

int main(void) {
	int p[2];
	if (pipe(p) != 0)
		return 1;
	pthread_t t;
	pthread_create(&t, NULL, sleeper, NULL);
	pthread_create(&t, NULL, waiter, NULL);
	pthread_create(&t, NULL, ticker, NULL);
	for (;;) {
		char c;
		ssize_t n = read(p[0], &c, 1);
		say("restarts FAIL read %zd %d\n", n, n < 0 ? errno : 0);
		nap(20);
	}
}
