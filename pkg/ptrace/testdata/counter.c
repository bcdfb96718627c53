// counter prints 0, 1, 2, ... one number a line every 10 ms, with SIGUSR1
// blocked so the test can tell the signal mask it reads is the child's.
#include <signal.h>
#include <stdio.h>
#include <time.h>

int main(void) {
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	setvbuf(stdout, NULL, _IONBF, 0);
	for (unsigned long i = 0;; i++) {
		printf("%lu\n", i);
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
