// signalfd: a signalfd shared by a parent and its child.
//
// Both block SIGUSR1 and SIGRTMIN+1, which the parent's signalfd
// (SFD_NONBLOCK|SFD_CLOEXEC) reads; the child inherits the very
// description by fork. Each polls the fd every 20ms and prints
// "ROLE sig N value V" for each signal read (V is the sigqueue value), and
// "ROLE alive N" every 100ms. The first line is "pids PARENT CHILD". A
// signal read with a mask it should not have, or a read error other than
// EAGAIN, prints a FAIL line.
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "testprog.h"

int main(void) {
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGRTMIN + 1);
	if (sigprocmask(SIG_BLOCK, &mask, NULL) != 0)
		return 1;
	int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) {
		say("FAIL signalfd: %s\n", strerror(errno));
		return 1;
	}
	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0)
		return 1;
	const char *role = child == 0 ? "child" : "parent";
	if (child != 0)
		say("pids %d %d\n", parent, child);
	for (long n = 0;; n++) {
		struct signalfd_siginfo si;
		ssize_t r;
		while ((r = read(sfd, &si, sizeof si)) == sizeof si) {
			if (si.ssi_signo != SIGUSR1 && si.ssi_signo != (unsigned)SIGRTMIN + 1)
				say("FAIL %s read signal %u\n", role, si.ssi_signo);
			say("%s sig %u value %d\n", role, si.ssi_signo, si.ssi_int);
		}
		if (r >= 0 || errno != EAGAIN)
			say("FAIL %s read: %zd %s\n", role, r, strerror(errno));
		if (n % 5 == 0)
			say("%s alive %ld\n", role, n / 5);
		nap(20);
	}
}
