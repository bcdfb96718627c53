// thstate: per-thread state that restore must give every thread again,
// reported by each thread every 20 ms, each line with one write(2):
//
//   T <thread> name=NAME robust=HEAD/LEN rseq=STATE
//
// Thread 0 is main, threads 1 and 2 are named with pthread_setname_np.
// robust is the thread's robust futex list head and length
// (get_robust_list, set by glibc for every thread). rseq is "on" while
// the thread's rseq area (glibc's, at the thread pointer + __rseq_offset)
// is registered with the kernel, and "lost" from the first report that
// found it not registered on: the probe registers it again, so the
// report must remember what it saw.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/syscall.h>

#include "testprog.h"

static pthread_barrier_t ready;

static void fail(const char *what) {
	say("thstate FAIL %s\n", what);
	exit(1);
}

// rseq_registered: the kernel refuses (EBUSY, EINVAL or EPERM) to register
// a thread's rseq area while one is registered; with none, the call
// succeeds (and the area is registered from then on).
static int rseq_registered(void) {
	if (__rseq_size == 0)
		fail("glibc did not register rseq");
	void *area = (char *)__builtin_thread_pointer() + __rseq_offset;
	long r = syscall(SYS_rseq, area, __rseq_size < 32 ? 32 : __rseq_size, 0, RSEQ_SIG);
	return r != 0;
}

static void report(int id) {
	static __thread int lost;
	char name[16] = {0};
	if (prctl(PR_GET_NAME, name))
		fail("PR_GET_NAME");
	void *head = NULL;
	size_t len = 0;
	if (syscall(SYS_get_robust_list, 0, &head, &len))
		fail("get_robust_list");
	if (!rseq_registered())
		lost = 1;
	say("T %d name=%s robust=%lx/%zu rseq=%s\n", id, name, (unsigned long)(uintptr_t)head, len, lost ? "lost" : "on");
}

static void *worker(void *arg) {
	int id = (int)(intptr_t)arg;
	pthread_barrier_wait(&ready);
	for (;;) {
		report(id);
		nap(20);
	}
	return arg;
}

int main(void) {
	if (prctl(PR_SET_NAME, "thstate-main"))
		fail("PR_SET_NAME");
	pthread_barrier_init(&ready, NULL, 3);
	pthread_t t;
	const char *names[] = {"", "worker-one", "worker-two"};
	for (int i = 1; i <= 2; i++) {
		if (pthread_create(&t, NULL, worker, (void *)(intptr_t)i))
			fail("pthread_create");
		if (pthread_setname_np(t, names[i]))
			fail("pthread_setname_np");
	}
	pthread_barrier_wait(&ready);
	for (;;) {
		report(0);
		nap(20);
	}
}
