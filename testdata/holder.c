// holder: holds one thing chpox cannot checkpoint yet, and keeps printing
// "alive N" every 10ms so a test sees it survive a refused dump.
//
//   holder packet   an AF_PACKET socket (needs root)
//   holder thread   a second thread (it sleeps)
//   holder child    a child process (it sleeps; it dies with the holder)
//   holder shmchild a child process sharing MAP_SHARED|MAP_ANONYMOUS memory
//                   with the holder (dumping the child alone must be refused)
//   holder vfork    waits 3 s for a vfork child (in an uninterruptible wait
//                   that ptrace cannot stop), then goes on
//   holder hugetlb-map  a hugetlb memfd mapped MAP_SHARED|MAP_NORESERVE
//                   (no huge page is ever touched, so none need be free)
//   holder hugetlb-fd   a hugetlb memfd held as an fd only
//   holder perfring a perf event's ring buffer mapped, its fd closed
//   holder secretmem-map, secretmem-fd  a memfd_secret mapped, or held as an fd
//
// It prints "ready" (for child also "child PID") once set up.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <linux/perf_event.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

static void *idle(void *arg) {
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv) {
	const char *what = argc > 1 ? argv[1] : "";
	if (strcmp(what, "packet") == 0) {
		if (socket(AF_PACKET, SOCK_DGRAM, 0) < 0)
			return 1;
	} else if (strcmp(what, "thread") == 0) {
		pthread_t t;
		if (pthread_create(&t, NULL, idle, NULL) != 0)
			return 1;
	} else if (strcmp(what, "child") == 0 || strcmp(what, "shmchild") == 0) {
		if (strcmp(what, "shmchild") == 0 && mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
			return 1;
		pid_t parent = getpid();
		pid_t pid = fork();
		if (pid < 0)
			return 1;
		if (pid == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			if (getppid() != parent)
				_exit(0);
			idle(NULL);
		}
		say("child %d\n", pid);
	} else if (strncmp(what, "hugetlb-", 8) == 0) {
		int fd = memfd_create("huge", MFD_HUGETLB);
		if (fd < 0 || ftruncate(fd, 2 << 20) != 0)
			return 1;
		if (strcmp(what, "hugetlb-map") == 0) {
			if (mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0) == MAP_FAILED)
				return 1;
			close(fd);
		}
	} else if (strncmp(what, "secretmem-", 10) == 0) {
		int fd = syscall(447 /* memfd_secret */, 0);
		if (fd < 0 || ftruncate(fd, 4096) != 0)
			return 1;
		if (strcmp(what, "secretmem-map") == 0) {
			char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
			if (p == MAP_FAILED)
				return 1;
			p[0] = 1;
			close(fd);
		}
	} else if (strcmp(what, "perfring") == 0) {
		struct perf_event_attr pa;
		memset(&pa, 0, sizeof pa);
		pa.size = sizeof pa;
		pa.type = PERF_TYPE_SOFTWARE;
		pa.config = PERF_COUNT_SW_DUMMY;
		pa.disabled = 1;
		int fd = syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0);
		if (fd < 0 || mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED)
			return 1;
		close(fd);
	} else if (strcmp(what, "vfork") == 0) {
		say("ready\n");
		// The parent waits in wait_for_vfork_done until the child exits.
		if (vfork() == 0) {
			struct timespec ts = {3, 0};
			syscall(SYS_nanosleep, &ts, NULL);
			_exit(0);
		}
	} else {
		say("usage: holder packet|thread|child|vfork|hugetlb-map|hugetlb-fd|perfring|secretmem-map|secretmem-fd|shmchild\n");
		return 2;
	}
	if (strcmp(what, "vfork") != 0)
		say("ready\n");
	for (long n = 0;; n++) {
		say("alive %ld\n", n);
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
