// faultjob: a two-threaded program that proves its own state all the time,
// for the fault tests that kill chpox at random instants. Any change it can
// see makes it print "FAIL ..." and exit 1:
//
//   - registers: rbx rdx rsi r8 r9 r10 r12-r15 hold known values across a
//     busy loop (interrupted anywhere) and across raw nanosleep and read
//     system calls (interrupted inside: -ERESTART_RESTARTBLOCK and
//     -ERESTARTSYS, which must be restarted); the carry flag across nops;
//   - signal masks: each thread its own, checked every round;
//   - pending signals: a SIGUSR1 queued at start stays pending (blocked);
//   - code: a checksum of its own text; memory: a checksum of a buffer.
//
// The main thread writes a byte every round into a pipe that the second
// thread reads (a blocking read); it prints "tick N" every 20 rounds.
// SIGUSR2 (a `chpox run` trigger) has an SA_RESTART handler that counts.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

extern char __executable_start[], etext[];

static int pipefd[2];
static uint32_t buf[16384];
static uint64_t bufsum, textsum;
static volatile sig_atomic_t usr2;

static void fail(const char *what, long a, long b) {
	say("FAIL %s: %ld %ld\n", what, a, b);
	_exit(1);
}

static uint64_t sum(const void *p, size_t n) {
	const unsigned char *c = p;
	uint64_t s = 0;
	for (size_t i = 0; i < n; i++)
		s = s * 131 + c[i];
	return s;
}

#define M1 0x1111111111111111L
#define M2 0x2222222222222222L

// busy runs n rounds of a loop that keeps ten registers at known values
// and the carry flag set over two nops; it returns 0, or the first bad
// register's number.
static long busy(long n) {
	long bad;
	__asm__ volatile(
		"mov %[m1], %%rbx\n\tmov %[m1], %%rdx\n\tmov %[m1], %%r8\n\tmov %[m1], %%r9\n\t"
		"mov %[m1], %%r10\n\tmov %[m1], %%r12\n\tmov %[m1], %%r13\n\tmov %[m1], %%r14\n\t"
		"mov %[m1], %%r15\n\t"
		"1:\n\t"
		"stc\n\tnop\n\tnop\n\tjnc 8f\n\t"
		"clc\n\tnop\n\tnop\n\tjc 8f\n\t"
		"dec %%rsi\n\tjnz 1b\n\t"
		"xor %%eax, %%eax\n\t"
		"cmp %[m1], %%rbx\n\tjne 9f\n\tcmp %[m1], %%rdx\n\tjne 9f\n\t"
		"cmp %[m1], %%r8\n\tjne 9f\n\tcmp %[m1], %%r9\n\tjne 9f\n\t"
		"cmp %[m1], %%r10\n\tjne 9f\n\tcmp %[m1], %%r12\n\tjne 9f\n\t"
		"cmp %[m1], %%r13\n\tjne 9f\n\tcmp %[m1], %%r14\n\tjne 9f\n\t"
		"cmp %[m1], %%r15\n\tjne 9f\n\t"
		"jmp 7f\n"
		"8:\n\tmov $100, %%eax\n\tjmp 7f\n"
		"9:\n\tmov $200, %%eax\n"
		"7:\n\t"
		: "=&a"(bad), "+S"(n)
		: [m1] "r"(M1)
		: "rbx", "rdx", "r8", "r9", "r10", "r12", "r13", "r14", "r15", "cc", "memory");
	return bad;
}

// rawcall makes system call nr(a1, a2, a3) with the same ten registers
// at known values and checks them afterwards; *ret gets the call's result.
static long rawcall(long nr, long a1, long a2, long a3, long *ret) {
	long bad = 0, r;
	__asm__ volatile(
		"mov %[m2], %%rbx\n\tmov %[m2], %%r8\n\tmov %[m2], %%r9\n\t"
		"mov %[m2], %%r12\n\tmov %[m2], %%r13\n\tmov %[m2], %%r14\n\tmov %[m2], %%r15\n\t"
		"syscall\n\t"
		"cmp %[m2], %%rbx\n\tjne 9f\n\tcmp %[m2], %%r8\n\tjne 9f\n\t"
		"cmp %[m2], %%r9\n\tjne 9f\n\tcmp %[m2], %%r12\n\tjne 9f\n\t"
		"cmp %[m2], %%r13\n\tjne 9f\n\tcmp %[m2], %%r14\n\tjne 9f\n\t"
		"cmp %[m2], %%r15\n\tjne 9f\n\t"
		"jmp 7f\n"
		"9:\n\tmovl $1, %[bad]\n"
		"7:\n\t"
		: "=a"(r), [bad] "+m"(bad), "+D"(a1), "+S"(a2), "+d"(a3)
		: "0"(nr), [m2] "r"(M2)
		: "rbx", "rcx", "r8", "r9", "r11", "r12", "r13", "r14", "r15", "cc", "memory");
	*ret = r;
	return bad;
}

static void check_mask(int blocked, int unblocked) {
	sigset_t cur;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	if (!sigismember(&cur, blocked) || sigismember(&cur, unblocked))
		fail("signal mask", blocked, unblocked);
}

static void *reader(void *arg) {
	(void)arg;
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGWINCH);
	pthread_sigmask(SIG_SETMASK, &s, NULL);
	for (unsigned char want = 0;; want++) {
		unsigned char c = 0;
		long r;
		// A blocking read, restarted after an interruption (-ERESTARTSYS).
		if (rawcall(0 /* read */, pipefd[0], (long)&c, 1, &r))
			fail("registers across read", 0, 0);
		if (r != 1 || c != want)
			fail("read", r, c);
		check_mask(SIGWINCH, SIGUSR1);
		long bad = busy(20000);
		if (bad)
			fail("registers or flags in busy loop (reader)", bad, 0);
	}
	return NULL;
}

static void on_usr2(int sig) {
	(void)sig;
	usr2++;
}

int main(void) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr2;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR2, &sa, NULL);
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	sigaddset(&s, SIGWINCH);
	pthread_sigmask(SIG_SETMASK, &s, NULL);
	raise(SIGUSR1); // stays pending: blocked in both threads
	for (size_t i = 0; i < sizeof buf / sizeof buf[0]; i++)
		buf[i] = i * 2654435761u;
	bufsum = sum(buf, sizeof buf);
	textsum = sum(__executable_start, etext - __executable_start);
	if (pipe(pipefd) != 0)
		fail("pipe", 0, 0);
	pthread_t t;
	if (pthread_create(&t, NULL, reader, NULL) != 0)
		fail("pthread_create", 0, 0);
	// The reader's own mask must not be the main thread's.
	sigdelset(&s, SIGWINCH);
	pthread_sigmask(SIG_SETMASK, &s, NULL);
	say("ready\n");
	for (long n = 0;; n++) {
		unsigned char c = n;
		if (write(pipefd[1], &c, 1) != 1)
			fail("write", n, 0);
		struct timespec ts = {0, 2 * 1000 * 1000};
		long r;
		// nanosleep: -ERESTART_RESTARTBLOCK when interrupted; returns 0
		// (or -EINTR after the SIGUSR2 handler ran).
		if (rawcall(35 /* nanosleep */, (long)&ts, 0, 0, &r))
			fail("registers across nanosleep", 0, 0);
		if (r != 0 && r != -4)
			fail("nanosleep", r, 0);
		long bad = busy(20000);
		if (bad)
			fail("registers or flags in busy loop (main)", bad, 0);
		check_mask(SIGUSR1, SIGWINCH);
		sigset_t p;
		sigpending(&p);
		if (!sigismember(&p, SIGUSR1))
			fail("pending SIGUSR1 lost", n, 0);
		if (n % 20 == 0) {
			if (sum(buf, sizeof buf) != bufsum)
				fail("memory checksum", n, 0);
			if (sum(__executable_start, etext - __executable_start) != textsum)
				fail("code checksum", n, 0);
			say("tick %ld usr2 %d\n", n, (int)usr2);
		}
	}
}
