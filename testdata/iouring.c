// iouring: holds an io_uring, as node does with UV_USE_IO_URING=1.
//
//   iouring sqpoll   with IORING_SETUP_SQPOLL: the kernel runs a thread of
//                    the process (iou-sqp-PID) that polls the ring and
//                    never returns to user space
//   iouring plain    a ring without it
//
// Then "ready", and "alive N" every 10ms so a test sees it survive a
// refused dump.
#define _GNU_SOURCE
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "testprog.h"

int main(int argc, char **argv) {
	struct io_uring_params p;
	memset(&p, 0, sizeof p);
	if (argc > 1 && strcmp(argv[1], "sqpoll") == 0) {
		p.flags = IORING_SETUP_SQPOLL;
		p.sq_thread_idle = 60000; // ms: the thread stays
	}
	int fd = syscall(SYS_io_uring_setup, 8, &p);
	if (fd < 0) {
		say("FAIL io_uring_setup\n");
		return 1;
	}
	say("ready\n");
	for (long n = 1;; n++) {
		say("alive %ld\n", n);
		nap(10);
	}
}
