// counter: prints "count N" every 10ms.
//
//   counter [LIMIT [EXITCODE]]
//
// With LIMIT it exits after printing "count LIMIT", with EXITCODE (default 0).
// SIGUSR1 makes it print "usr1 at N". Everything goes through write(2), so a
// line is either in the log or not, with no stdio buffer in between.
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile long count;

static void say(const char *fmt, long n) {
	char buf[64];
	int len = snprintf(buf, sizeof buf, fmt, n);
	if (write(1, buf, len) != len)
		_exit(99);
}

static void on_usr1(int sig) {
	(void)sig;
	say("usr1 at %ld\n", count); // snprintf is not async-signal-safe in theory; fine for %ld here
}

int main(int argc, char **argv) {
	long limit = argc > 1 ? atol(argv[1]) : -1;
	int code = argc > 2 ? atoi(argv[2]) : 0;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) != 0)
		return 98;

	say("ready\n", 0);
	for (;;) {
		say("count %ld\n", count);
		if (count == limit)
			return code;
		count++;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL); // an early wake-up only makes one line come sooner
	}
}
