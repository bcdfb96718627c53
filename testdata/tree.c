// tree: a small process tree for checkpoint tests.
//
//   parent (leads its own session, hence its group)
//   ├── c1 ── gc        (c1 forks the grandchild gc)
//   ├── c2              (leads its own process group: setpgid(0,0))
//   └── c3              (exits 42 at once; stays a zombie until SIGUSR1)
//
// Everything is written with write(2) to stdout, one description shared by
// all (opened by whoever started the parent, not O_APPEND): lines from
// several processes land one after the other only while the offset is
// really shared.
//
// Lines: "pids PARENT C1 C2 C3", "gc PID" (from c1), then every 20ms
// "alive ROLE N" from parent, c1, c2 and gc.
//
// SIGUSR1 to any live process: it checks getppid(), getpgid(0) and
// getsid(0) against what they were when it started and prints
// "tree ok ROLE" or "tree FAIL ...". The parent also reaps c3 (the first
// time) with WNOHANG and prints "reaped 42" if it exited with 42.
//
// SIGUSR2 to the parent: it kills c2 with SIGTERM, waits for it (blocking)
// and prints "waited c2 signal 15".
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

static volatile sig_atomic_t usr1, usr2;
static const char *role = "parent";
static pid_t want_ppid, want_pgid, want_sid;
static pid_t c1, c2, c3;

static void on_usr1(int sig) {
	(void)sig;
	usr1 = 1;
}

static void on_usr2(int sig) {
	(void)sig;
	usr2 = 1;
}

static void remember(void) {
	want_ppid = getppid();
	want_pgid = getpgid(0);
	want_sid = getsid(0);
}

static void check(void) {
	pid_t ppid = getppid(), pgid = getpgid(0), sid = getsid(0);
	if (ppid != want_ppid || pgid != want_pgid || sid != want_sid) {
		say("tree FAIL %s pid %d: ppid %d pgid %d sid %d, want %d %d %d\n", role, getpid(),
		    ppid, pgid, sid, want_ppid, want_pgid, want_sid);
		return;
	}
	say("tree ok %s\n", role);
}

static void loop(void) {
	static int reaped;
	for (long n = 0;; n++) {
		say("alive %s %ld\n", role, n);
		nap(20);
		if (usr1) {
			usr1 = 0;
			if (strcmp(role, "parent") == 0 && !reaped) {
				int st = 0;
				pid_t got = waitpid(c3, &st, WNOHANG);
				if (got == 0)
					say("tree FAIL c3 (pid %d) is not a zombie: it still runs\n", c3);
				else if (got < 0)
					say("tree FAIL waitpid c3 (pid %d): %s\n", c3, strerror(errno));
				else if (!WIFEXITED(st) || WEXITSTATUS(st) != 42)
					say("tree FAIL c3 ended with wait status %#x, want exit 42\n", st);
				else
					say("reaped %d\n", WEXITSTATUS(st));
				reaped = 1;
			}
			check();
		}
		if (usr2 && strcmp(role, "parent") == 0) {
			usr2 = 0;
			int st = 0;
			if (kill(c2, SIGTERM) != 0)
				say("tree FAIL kill c2 (pid %d): %s\n", c2, strerror(errno));
			else if (waitpid(c2, &st, 0) != c2)
				say("tree FAIL waitpid c2 (pid %d): %s\n", c2, strerror(errno));
			else if (!WIFSIGNALED(st))
				say("tree FAIL c2 ended with wait status %#x, want a signal\n", st);
			else
				say("waited c2 signal %d\n", WTERMSIG(st));
		}
	}
}

int main(void) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);

	if (setsid() < 0) {
		say("tree FAIL setsid: %s\n", strerror(errno));
		return 1;
	}
	remember();

	c1 = fork();
	if (c1 < 0)
		return 1;
	if (c1 == 0) {
		role = "c1";
		remember();
		pid_t gc = fork();
		if (gc < 0)
			_exit(1);
		if (gc == 0) {
			role = "gc";
			remember();
			loop();
		}
		say("gc %d\n", gc);
		loop();
	}
	c2 = fork();
	if (c2 < 0)
		return 1;
	if (c2 == 0) {
		role = "c2";
		setpgid(0, 0);
		remember();
		if (want_pgid != getpid())
			say("tree FAIL c2 pgid %d after setpgid(0,0)\n", want_pgid);
		loop();
	}
	setpgid(c2, c2); // either call may come first
	c3 = fork();
	if (c3 < 0)
		return 1;
	if (c3 == 0)
		_exit(42);
	say("pids %d %d %d %d\n", getpid(), c1, c2, c3);
	loop();
}
