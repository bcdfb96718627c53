// orphan: waits in one system call and checks that it comes back right,
// for the tests that kill the tracer in the middle of an injection.
//
//   orphan read    read(0) of one byte (interrupted: -ERESTARTSYS)
//   orphan sleep   nanosleep 2 s (interrupted: -ERESTART_RESTARTBLOCK); long
//                  enough for a tracer to start on a loaded machine
//
// The call is made with rbx and r12-r15 at known values; afterwards they,
// the call's result and the blocked mask (SIGUSR1) must be unchanged. It
// prints "ok" and exits 0, or prints "FAIL ..." and exits 1.
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define M 0x5a5a5a5a5a5a5a5aL

static long rawcall(long nr, long a1, long a2, long a3, long *ret) {
	long bad = 0, r;
	__asm__ volatile(
		"mov %[m], %%rbx\n\tmov %[m], %%r12\n\tmov %[m], %%r13\n\t"
		"mov %[m], %%r14\n\tmov %[m], %%r15\n\t"
		"syscall\n\t"
		"cmp %[m], %%rbx\n\tjne 9f\n\tcmp %[m], %%r12\n\tjne 9f\n\t"
		"cmp %[m], %%r13\n\tjne 9f\n\tcmp %[m], %%r14\n\tjne 9f\n\t"
		"cmp %[m], %%r15\n\tjne 9f\n\t"
		"jmp 7f\n"
		"9:\n\tmovl $1, %[bad]\n"
		"7:\n\t"
		: "=a"(r), [bad] "+m"(bad), "+D"(a1), "+S"(a2), "+d"(a3)
		: "0"(nr), [m] "r"(M)
		: "rbx", "rcx", "r11", "r12", "r13", "r14", "r15", "cc", "memory");
	*ret = r;
	return bad;
}

int main(int argc, char **argv) {
	sigset_t s, cur;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigprocmask(SIG_SETMASK, &s, NULL);
	int sleep = argc > 1 && strcmp(argv[1], "sleep") == 0;
	struct timespec t0, t1, ts = {2, 0};
	clock_gettime(CLOCK_MONOTONIC, &t0);
	printf("waiting\n");
	fflush(stdout);
	char c = 0;
	long r, bad = sleep ? rawcall(35, (long)&ts, 0, 0, &r) : rawcall(0, 0, (long)&c, 1, &r);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	if (bad)
		printf("FAIL registers\n");
	else if (sleep ? r != 0 : (r != 1 || c != 'x'))
		printf("FAIL result %ld %d\n", r, c);
	else if (!sigismember(&cur, SIGUSR1) || sigismember(&cur, SIGUSR2))
		printf("FAIL mask\n");
	else if (sleep && ms < 2000)
		printf("FAIL slept %ld ms\n", ms);
	else {
		printf("ok\n");
		return 0;
	}
	return 1;
}
