// sleeper: spends its life inside blocking system calls, so a checkpoint
// catches it in the middle of one.
//
//   sleeper          nanosleep 300ms, print "tick N", forever. An EINTR is
//                    handled like a correct program does: sleep the rest.
//   sleeper pause    block SIGUSR1, then loop in sigsuspend with an empty
//                    mask; each SIGUSR1 prints "woke N mask ok" if SIGUSR1 is
//                    blocked again once sigsuspend returned, else
//                    "woke N mask FAIL".
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

static volatile sig_atomic_t got;
static void on_usr1(int sig) {
	(void)sig;
	got++;
}

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "pause") == 0) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_usr1;
		sigemptyset(&sa.sa_mask);
		sigaction(SIGUSR1, &sa, NULL);
		sigset_t block, empty, cur;
		sigemptyset(&block);
		sigaddset(&block, SIGUSR1);
		sigprocmask(SIG_BLOCK, &block, NULL);
		sigemptyset(&empty);
		say("ready\n");
		for (long n = 1;; n++) {
			sigsuspend(&empty); // always returns -1/EINTR after a handler ran
			sigprocmask(SIG_SETMASK, NULL, &cur);
			say("woke %ld mask %s\n", n, sigismember(&cur, SIGUSR1) ? "ok" : "FAIL");
		}
	}

	say("ready\n");
	for (long n = 1;; n++) {
		struct timespec ts = {0, 300 * 1000 * 1000}, rem;
		while (nanosleep(&ts, &rem) != 0) {
			if (errno != EINTR) {
				say("nanosleep FAIL %s\n", strerror(errno));
				return 1;
			}
			ts = rem;
		}
		say("tick %ld\n", n);
	}
}
