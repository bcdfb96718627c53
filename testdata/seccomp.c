// seccomp: runs under seccomp filters and reports what they do, every 20 ms,
// each thread its own line:
//
//   S <thread> ppid=R uid=R mode=M filters=N
//
// R is the call's result or -errno. Thread 0 (main) and 1 share filter F1
// (getppid fails with EPERM; installed with seccomp(2) and
// SECCOMP_FILTER_FLAG_LOG); thread 2 adds F2 with prctl(PR_SET_SECCOMP):
// getuid fails with EACCES, getpgid kills the process. SIGUSR1: the main
// thread tries to add an allow-all filter with SECCOMP_FILTER_FLAG_TSYNC,
// which the kernel refuses naming the first thread whose filters are not
// the main thread's: "tsync=TID" (thread 2, while 0 and 1 share theirs).
// SIGUSR2: thread 2 calls getpgid and the process dies of SIGSYS.
//
//   seccomp             as above; "tids MAIN T1 T2" first
//   seccomp strict      a child in strict mode waits in read(2); the parent ticks;
//                       SIGUSR1: the parent writes 'w' to the child, which says
//                       "strict child alive N" (write(2) only); SIGUSR2: 'k', the
//                       child calls getpid and strict mode kills it: the parent
//                       says "strict child killed by 9"
//   seccomp strictthread  the same with a second thread in strict mode instead
//                       of a child (its death leaves the process running)
//   seccomp denymmap    a filter kills the process on mmap; ticks
//   seccomp nosigmask   a filter fails rt_sigprocmask with EPERM; ticks
//   seccomp notif       a filter hands getpgid to a user-space listener; ticks
//   seccomp dropped     root installs a filter, then becomes uid 1000 (no
//                       no_new_privs); ticks
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "testprog.h"

#define ARCH_CHECK                                                              \
	BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)), \
	    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xc000003e, 1, 0),                \
	    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),                  \
	    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr))
#define ON(nr, action) BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1), BPF_STMT(BPF_RET | BPF_K, action)
#define ALLOW BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)

static struct sock_filter f1[] = {ARCH_CHECK, ON(SYS_getppid, SECCOMP_RET_ERRNO | EPERM), ALLOW};
static struct sock_filter f2[] = {ARCH_CHECK, ON(SYS_getuid, SECCOMP_RET_ERRNO | EACCES),
				  ON(SYS_getpgid, SECCOMP_RET_KILL_PROCESS), ALLOW};
static struct sock_filter allow[] = {ALLOW};
static struct sock_filter nommap[] = {ARCH_CHECK, ON(SYS_mmap, SECCOMP_RET_KILL_PROCESS), ALLOW};
static struct sock_filter nosigmask[] = {ARCH_CHECK, ON(SYS_rt_sigprocmask, SECCOMP_RET_ERRNO | EPERM), ALLOW};
static struct sock_filter notif[] = {ARCH_CHECK, ON(SYS_getpgid, SECCOMP_RET_USER_NOTIF), ALLOW};
#define PROG(f) (&(struct sock_fprog){sizeof(f) / sizeof(f[0]), f})

static volatile sig_atomic_t usr1, usr2;
static pthread_barrier_t ready;

static void fail(const char *what) {
	say("seccomp FAIL %s: %s\n", what, strerror(errno));
	exit(1);
}

static long res(long r) { return r < 0 ? -errno : r; }

static void status(int *mode, int *filters) {
	char b[4096] = {0};
	int fd = open("/proc/thread-self/status", O_RDONLY);
	if (fd < 0 || read(fd, b, sizeof b - 1) < 0)
		fail("status");
	close(fd);
	char *m = strstr(b, "\nSeccomp:\t"), *f = strstr(b, "\nSeccomp_filters:\t");
	*mode = m ? atoi(m + 10) : -1;
	*filters = f ? atoi(f + 18) : -1;
}

static void report(int id) {
	int mode, filters;
	status(&mode, &filters);
	say("S %d ppid=%ld uid=%ld mode=%d filters=%d\n", id, res(syscall(SYS_getppid)), res(syscall(SYS_getuid)), mode, filters);
}

static void *thread(void *arg) {
	long id = (long)arg;
	if (id == 2 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PROG(f2)))
		fail("prctl(PR_SET_SECCOMP)");
	pthread_barrier_wait(&ready);
	for (;;) {
		if (id == 2 && usr2)
			syscall(SYS_getpgid, 0); // kills the process
		report(id);
		nap(20);
	}
	return NULL;
}

static int strict_pipe[2];

// strict_thread enters strict mode and answers each byte on strict_pipe:
// 'k' makes a forbidden call, which kills the thread.
static void *strict_thread(void *arg) {
	char c;
	(void)arg;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT))
		fail("strict");
	say("strict child ready\n");
	for (long n = 0;; n++) {
		if (read(strict_pipe[0], &c, 1) <= 0)
			syscall(SYS_exit, 3);
		if (c == 'k')
			syscall(SYS_getpid); // strict mode kills the thread
		say("strict child alive %ld\n", n);
	}
	return NULL;
}

static void on_usr(int sig) {
	if (sig == SIGUSR1)
		usr1 = 1;
	else
		usr2 = 1;
}

static void tick(void) {
	for (long n = 0;; n++) {
		say("tick %ld\n", n);
		nap(20);
	}
}

static void install(struct sock_fprog *p) {
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, p))
		fail("seccomp");
}

int main(int argc, char **argv) {
	const char *mode = argc > 1 ? argv[1] : "";
	if (!strcmp(mode, "strict") || !strcmp(mode, "strictthread")) {
		if (pipe(strict_pipe))
			fail("pipe");
		signal(SIGUSR1, on_usr); // before "ready": the test signals then
		signal(SIGUSR2, on_usr);
		pid_t child = -1;
		if (mode[6]) {
			pthread_t t;
			pthread_create(&t, NULL, strict_thread, NULL);
		} else if ((child = fork()) == 0)
			strict_thread(NULL);
		int *p = strict_pipe;
		for (long n = 0;; n++) {
			if (usr1 || usr2) {
				char c = usr2 ? 'k' : 'w';
				usr1 = usr2 = 0;
				if (write(p[1], &c, 1) != 1)
					fail("write pipe");
			}
			int st;
			if (child > 0 && waitpid(child, &st, WNOHANG) == child) {
				if (WIFSIGNALED(st))
					say("strict child killed by %d\n", WTERMSIG(st));
				else
					say("strict child exited %d\n", WEXITSTATUS(st));
			}
			say("tick %ld\n", n);
			nap(20);
		}
	}
	if (!strcmp(mode, "denymmap")) {
		install(PROG(nommap));
		tick();
	}
	if (!strcmp(mode, "nosigmask")) {
		install(PROG(nosigmask));
		tick();
	}
	if (!strcmp(mode, "notif")) {
		install(PROG(notif));
		tick();
	}
	if (!strcmp(mode, "dropped")) {
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, PROG(allow)))
			fail("seccomp as root");
		if (setresgid(1000, 1000, 1000) || setresuid(1000, 1000, 1000))
			fail("setresuid");
		tick();
	}
	signal(SIGUSR1, on_usr);
	signal(SIGUSR2, on_usr);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		fail("no_new_privs");
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_LOG, PROG(f1)))
		fail("seccomp f1");
	pthread_barrier_init(&ready, NULL, 3);
	pthread_t t[3];
	pthread_create(&t[1], NULL, thread, (void *)1L);
	pthread_create(&t[2], NULL, thread, (void *)2L);
	pthread_barrier_wait(&ready);
	for (;;) {
		if (usr1) {
			usr1 = 0;
			say("T tsync=%ld\n", res(syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, PROG(allow))));
		}
		report(0);
		nap(20);
	}
}
