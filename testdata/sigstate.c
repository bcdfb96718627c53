// sigstate: signal actions of every kind, reported as the kernel gives
// them back (raw rt_sigaction: handler, flags, restorer, mask), so a test
// sees each come back exactly after a restore.
//
// Every 50 ms it prints "sigs" followed by one entry per signal whose
// action is not plain SIG_DFL, and SIGCHLD always (its SA_NOCLDSTOP and
// SA_NOCLDWAIT act at SIG_DFL too). A signal at SIG_DFL with other flags
// (SIGWINCH here) is printed as "dfl" only: at SIG_DFL the kernel never
// uses them, and chpox records such an action as plain SIG_DFL.
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testprog.h"

struct kact { // struct kernel_sigaction on x86_64
	uintptr_t handler;
	unsigned long flags;
	uintptr_t restorer;
	uint64_t mask;
};

static void on_a(int sig) { (void)sig; }
static void on_b(int sig, siginfo_t *si, void *uc) { (void)sig, (void)si, (void)uc; }

static void set(int sig, void *h, int flags, int blocked1, int blocked2) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = h;
	sa.sa_flags = flags;
	if (blocked1)
		sigaddset(&sa.sa_mask, blocked1);
	if (blocked2)
		sigaddset(&sa.sa_mask, blocked2);
	if (sigaction(sig, &sa, NULL) != 0)
		_exit(98);
}

static const char *name(uintptr_t h) {
	if (h == (uintptr_t)SIG_DFL)
		return "dfl";
	if (h == (uintptr_t)SIG_IGN)
		return "ign";
	if (h == (uintptr_t)on_a)
		return "a";
	if (h == (uintptr_t)on_b)
		return "b";
	return "other";
}

int main(void) {
	set(SIGUSR1, on_a, SA_RESTART, SIGUSR2, SIGTERM);
	set(SIGUSR2, on_b, SA_SIGINFO | SA_NODEFER | SA_RESETHAND | SA_ONSTACK, 0, 0);
	set(SIGPIPE, SIG_IGN, 0, 0, 0);
	set(SIGHUP, SIG_IGN, SA_RESTART, SIGQUIT, 0);
	set(SIGCHLD, SIG_DFL, SA_NOCLDSTOP | SA_NOCLDWAIT, 0, 0);
	set(SIGRTMIN + 3, on_a, 0, SIGINT, SIGRTMAX);
	set(SIGWINCH, SIG_DFL, SA_RESTART, SIGINT, 0);
	for (;;) {
		char line[4096];
		int n = snprintf(line, sizeof line, "sigs");
		for (int sig = 1; sig <= 64; sig++) {
			struct kact k;
			if (syscall(SYS_rt_sigaction, sig, NULL, &k, 8) != 0)
				_exit(97);
			if (k.handler == (uintptr_t)SIG_DFL && sig != SIGCHLD) {
				if (sig == SIGWINCH)
					n += snprintf(line + n, sizeof line - n, " %d=dfl", sig);
				continue;
			}
			n += snprintf(line + n, sizeof line - n, " %d=%s/%lx/%lx/%llx", sig, name(k.handler), k.flags,
			              (unsigned long)k.restorer, (unsigned long long)k.mask);
		}
		say("%s\n", line);
		nap(50);
	}
}
