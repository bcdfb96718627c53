// runjob: a job for `chpox run`.
//
//   runjob [LIMIT [EXITCODE]]     count to LIMIT, then exit EXITCODE
//   runjob tree                   also fork a child that execs "runjob child"
//   runjob untraced               the same child, made with CLONE_UNTRACED: a
//                                 tracer's PTRACE_O_TRACEFORK does not follow it
//
// Prints "root count N" (or "child count N") every 10ms with write(2).
// SIGUSR1 and SIGUSR2 handlers print "GOT TRIGGER N": under `chpox run`
// with either as the trigger, that line must never appear. SIGTERM prints
// "got SIGTERM" and exits 77.
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

static void on_trigger(int sig) { say("GOT TRIGGER %d\n", sig); }

static void on_term(int sig) {
	(void)sig;
	say("got SIGTERM\n");
	_exit(77);
}

int main(int argc, char **argv) {
	const char *role = "root";
	long limit = -1;
	int code = 0;
	if (argc > 1 && strcmp(argv[1], "child") == 0) {
		role = "child";
	} else if (argc > 1 && (strcmp(argv[1], "tree") == 0 || strcmp(argv[1], "untraced") == 0)) {
		pid_t pid = strcmp(argv[1], "tree") == 0 ? fork() : (pid_t)syscall(SYS_clone, CLONE_UNTRACED | SIGCHLD, 0, 0, 0, 0);
		if (pid < 0)
			return 1;
		if (pid == 0) {
			execl("/proc/self/exe", argv[0], "child", (char *)NULL);
			_exit(97);
		}
		say("child pid %d\n", pid);
	} else if (argc > 1) {
		limit = atol(argv[1]);
		code = argc > 2 ? atoi(argv[2]) : 0;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_trigger;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);

	for (long n = 0;; n++) {
		say("%s count %ld\n", role, n);
		if (n == limit)
			return code;
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
