// attrs: sets process and per-thread attributes, then reports them every
// 20 ms, each thread its own line, as the kernel gives them back:
//
//   A <thread> nice=N pol=P flags=F prio=R dl=RUNTIME/DEADLINE/PERIOD aff=MASK io=IOPRIO slack=NS
//     pdeath=SIG tsc=PR_GET_TSC mce=PR_MCE_KILL_GET
//   G <thread> gs=HEX (the GS base, set per thread: 0x700000000000 + thread * 0x1000)
//   P oom=N subreaper=B thp=N membarrier=MASK loginuid=N umask=OOOO
//
// Thread 0 is main (what the process was started with, e.g. `nice -n 7`),
// thread 1 SCHED_BATCH nice 3 with reset-on-fork and a 3 ms time slice,
// CPU 1 only, idle I/O class, timer slack 123456 ns, parent-death signal
// SIGWINCH, rdtsc faulting, early machine-check kill; thread 2 nice 4,
// then SCHED_FIFO 5, best-effort I/O level 2, late machine-check kill;
// thread 3 SCHED_DEADLINE 2 ms every 100 ms, deadline 50 ms. Each line
// goes out with one write(2).
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/membarrier.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <asm/prctl.h>
#include <sys/syscall.h>

#include "testprog.h"

struct sattr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t prio;
	uint64_t runtime, deadline, period;
	uint32_t umin, umax;
};

static pthread_barrier_t ready;

static void fail(const char *what) {
	say("attrs FAIL %s\n", what);
	exit(1);
}

static long readnum(const char *path) {
	char b[64] = {0};
	int fd = open(path, O_RDONLY);
	if (fd < 0 || read(fd, b, sizeof b - 1) < 0)
		return -1;
	close(fd);
	return strtol(b, NULL, 10);
}

static void umask_of(char *out) {
	char b[4096] = {0};
	int fd = open("/proc/self/status", O_RDONLY);
	if (fd < 0 || read(fd, b, sizeof b - 1) < 0)
		fail("status");
	close(fd);
	char *u = strstr(b, "Umask:\t");
	if (!u)
		fail("umask");
	memcpy(out, u + 7, 4);
	out[4] = 0;
}

static void report(int id) {
	struct sattr a = {0};
	if (syscall(SYS_sched_getattr, 0, &a, sizeof a, 0))
		fail("sched_getattr");
	cpu_set_t set;
	if (sched_getaffinity(0, sizeof set, &set))
		fail("sched_getaffinity");
	unsigned long mask = 0;
	for (int c = 0; c < 64; c++)
		if (CPU_ISSET(c, &set))
			mask |= 1UL << c;
	int pd = 0;
	prctl(PR_GET_PDEATHSIG, &pd);
	int nice = getpriority(PRIO_PROCESS, gettid()); // the thread's own, real-time or not
	int tsc = 0;
	prctl(PR_GET_TSC, &tsc);
	say("A %d nice=%d pol=%u flags=%lu prio=%u dl=%lu/%lu/%lu aff=%lx io=%ld slack=%ld pdeath=%d tsc=%d mce=%d\n", id, nice,
	    a.policy, (unsigned long)a.flags, a.prio, (unsigned long)a.runtime, (unsigned long)a.deadline, (unsigned long)a.period,
	    mask, syscall(SYS_ioprio_get, 1, 0), (long)prctl(PR_GET_TIMERSLACK), pd, tsc, prctl(PR_MCE_KILL_GET, 0, 0, 0, 0));
	// The GS base, which nothing here uses otherwise: set once, its own per thread.
	static __thread int gs_set;
	if (!gs_set && syscall(SYS_arch_prctl, ARCH_SET_GS, 0x700000000000UL + id * 0x1000UL))
		fail("arch_prctl set gs");
	gs_set = 1;
	unsigned long gs = 0;
	if (syscall(SYS_arch_prctl, ARCH_GET_GS, &gs))
		fail("arch_prctl get gs");
	say("G %d gs=%lx\n", id, gs);
}

static void *thread1(void *arg) {
	struct sattr a = {.size = sizeof a, .policy = SCHED_BATCH, .flags = 1 /* RESET_ON_FORK */, .nice = 3,
			  .runtime = 3000000 /* a custom time slice, kernel 6.12 */};
	if (syscall(SYS_sched_setattr, 0, &a, 0))
		fail("sched_setattr batch");
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(1, &set);
	if (sched_setaffinity(0, sizeof set, &set))
		fail("sched_setaffinity");
	if (syscall(SYS_ioprio_set, 1, 0, 3 << 13)) // IOPRIO_CLASS_IDLE
		fail("ioprio_set idle");
	prctl(PR_SET_TIMERSLACK, 123456);
	prctl(PR_SET_PDEATHSIG, SIGWINCH); // ignored by default: harmless when it comes
	if (prctl(PR_SET_TSC, PR_TSC_SIGSEGV) || prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0))
		fail("prctl tsc, mce");
	pthread_barrier_wait(&ready);
	for (;;) {
		report(1);
		nap(20);
	}
	return arg;
}

static void *thread2(void *arg) {
	if (setpriority(PRIO_PROCESS, gettid(), 4))
		fail("setpriority");
	struct sched_param sp = {.sched_priority = 5};
	if (sched_setscheduler(0, SCHED_FIFO, &sp))
		fail("sched_setscheduler fifo");
	if (syscall(SYS_ioprio_set, 1, 0, 2 << 13 | 2)) // best effort, level 2
		fail("ioprio_set be");
	if (prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_LATE, 0, 0))
		fail("prctl mce late");
	pthread_barrier_wait(&ready);
	for (;;) {
		report(2);
		nap(20);
	}
	return arg;
}

static void *thread3(void *arg) {
	struct sattr a = {.size = sizeof a, .policy = 6 /* SCHED_DEADLINE */, .runtime = 2000000, .deadline = 50000000, .period = 100000000};
	if (syscall(SYS_sched_setattr, 0, &a, 0))
		fail("sched_setattr deadline");
	pthread_barrier_wait(&ready);
	for (;;) {
		report(3);
		nap(20);
	}
	return arg;
}

int main(void) {
	int fd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (fd < 0 || write(fd, "345", 3) != 3)
		fail("oom_score_adj");
	close(fd);
	fd = open("/proc/self/loginuid", O_WRONLY);
	if (fd < 0 || write(fd, "1234", 4) != 4)
		fail("loginuid");
	close(fd);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) || prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0))
		fail("prctl");
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0))
		fail("membarrier");
	umask(0037);
	pthread_barrier_init(&ready, NULL, 4);
	pthread_t t;
	pthread_create(&t, NULL, thread1, NULL);
	pthread_create(&t, NULL, thread2, NULL);
	pthread_create(&t, NULL, thread3, NULL);
	pthread_barrier_wait(&ready);
	for (;;) {
		report(0);
		int sub = 0;
		prctl(PR_GET_CHILD_SUBREAPER, &sub);
		char um[8];
		umask_of(um);
		say("P oom=%ld subreaper=%d thp=%d membarrier=%ld loginuid=%ld umask=%s\n", readnum("/proc/self/oom_score_adj"), sub,
		    prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0), syscall(SYS_membarrier, 1 << 9, 0, 0), readnum("/proc/self/loginuid"), um);
		nap(20);
	}
}
