// pending: signals pending at the checkpoint must still be pending after
// restore, with their sender's info. A worker thread blocks SIGUSR2 and
// main sends it there with tgkill (thread-private, si_code SI_TKILL); the
// whole process blocks SIGUSR1 and main sends it with kill (process-wide).
// After about 1.5 s both are unblocked and the handlers report them:
// "usr2 in worker code -6" and "usr1 code 0". Prints "ready" once both are
// pending.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testprog.h"

static volatile pid_t worker_tid;
static pthread_t main_thread;

static void on_sig(int sig, siginfo_t *si, void *uc) {
	(void)uc;
	if (sig == SIGUSR2)
		say("usr2 in %s code %d\n", pthread_equal(pthread_self(), main_thread) ? "main" : "worker", si->si_code);
	else
		say("usr1 code %d\n", si->si_code);
}

static void *worker(void *arg) {
	(void)arg;
	worker_tid = (pid_t)syscall(SYS_gettid);
	for (int i = 0; i < 150; i++) // about 1.5 s with SIGUSR2 blocked here
		nap(10);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
	for (;;)
		nap(10);
	return NULL;
}

int main(void) {
	struct sigaction sa = {.sa_sigaction = on_sig, .sa_flags = SA_SIGINFO | SA_RESTART};
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &s, NULL); // inherited by the worker
	main_thread = pthread_self();
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	while (!worker_tid)
		nap(1);
	syscall(SYS_tgkill, getpid(), worker_tid, SIGUSR2);
	kill(getpid(), SIGUSR1);
	say("ready\n");
	for (int i = 0; i < 150; i++)
		nap(10);
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL); // SIGUSR2 stays blocked in main
	for (;;)
		nap(10);
}
