// lazymem: memory for restore --lazy to fill while the program runs.
//
// lazymem MIB [HEARTBEAT [idle]]: maps MIB MiB of anonymous memory and writes a
// pattern of its offset into every 1 MiB block except every 8th (a hole
// the image does not hold, which must read zero), plus a 64 MiB sparse area
// with four pages written; mallocs a 16 MiB heap block with a pattern too.
// Three threads read random words of the big area all the time and check
// them. The main thread loops: a full check of everything (sum of all
// words, each word against its expected value), a fork whose child does
// the same check and exits 0 or 1, then "pass N ok SUM" or a line with FAIL.
// Before the first pass it prints "ready". With HEARTBEAT (a file path),
// a fourth thread appends a byte there every 0.5 ms: the benchmark times
// the restored process's first instructions by the file growing.
//
// With idle (the benchmark's target), there are no reader threads and the
// main thread checks only on SIGUSR2, printing "pass N ok SUM" (no fork).
//
// With LAZYMEM_FAMILY=1 in the environment it forks once after filling
// its memory, and the child once more: the child ("kid") and grandchild
// ("grandkid"), sharing every page copy-on-write until they write, run the
// same loop and print "kid pass N ok SUM", "grandkid pass N ok SUM".
//
// SIGUSR1 makes it discard (MADV_DONTNEED) block 3 of the big area, which
// must read zero from then on ("discarded" is printed), and drop the first
// MiB of an 8 MiB area that no pass reads, move (mremap) the area to a
// reserved address, check it there (zero, then the pattern) and print
// "moved ok" or a FAIL line. Before, the kernel reads 64 KiB of that area
// (write(2) to a memfd): "kernel read ok".
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB (1ul << 20)
#define SPARSE (64 * MIB)

static uint64_t *big, *sparse, *heap, *mv, *mvTo;
static const size_t nmv = 8 * MIB;
static size_t nbig;                  // bytes
static const size_t nheap = 16 * MIB;
static volatile int discarded;       // block 3 was dropped
static volatile sig_atomic_t discard;
static volatile int bad;

static uint64_t pat(uint64_t i, uint64_t seed) { return (i + seed) * 0x9e3779b97f4a7c15ull ^ seed; }

static int hole(size_t block) { return block % 8 == 7 || (block == 3 && discarded); }

static uint64_t want_big(size_t i) { return hole(i * 8 / MIB) ? 0 : pat(i, 1); }

static uint64_t want_sparse(size_t i) { return i % (SPARSE / 8 / 4) == 0 ? pat(i, 2) : 0; }

static void *reader(void *arg) {
	uint64_t x = (uintptr_t)arg * 7919 + 1;
	for (;;) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		size_t i = (x >> 11) % (nbig / 8);
		size_t block = i * 8 / MIB;
		uint64_t v = big[i];
		// Block 3 may be dropped under our feet: skip it.
		if (block != 3 && v != want_big(i)) {
			printf("thread FAIL at %zu: %#llx\n", i * 8, (unsigned long long)v);
			fflush(stdout);
			bad = 1;
		}
		if ((x & 0xff) == 0)
			usleep(100);
	}
	return 0;
}

// check returns the sum of all words, or sets bad.
static uint64_t check(const char *who) {
	uint64_t sum = 0;
	for (size_t i = 0; i < nbig / 8; i++) {
		uint64_t v = big[i];
		if (v != want_big(i)) {
			printf("%s FAIL big at %zu: %#llx want %#llx\n", who, i * 8, (unsigned long long)v, (unsigned long long)want_big(i));
			bad = 1;
			fflush(stdout); // a fork child _exits
			return 0;
		}
		sum += v;
	}
	for (size_t i = 0; i < SPARSE / 8; i++) {
		if (sparse[i] != want_sparse(i)) {
			printf("%s FAIL sparse at %zu: %#llx\n", who, i * 8, (unsigned long long)sparse[i]);
			bad = 1;
			fflush(stdout); // a fork child _exits
			return 0;
		}
		sum += sparse[i];
	}
	for (size_t i = 0; i < nheap / 8; i++) {
		if (heap[i] != pat(i, 3)) {
			printf("%s FAIL heap at %zu\n", who, i * 8);
			bad = 1;
			fflush(stdout); // a fork child _exits
			return 0;
		}
		sum += heap[i];
	}
	return sum;
}

static void *beater(void *arg) {
	int fd = (int)(long)arg;
	for (;;) {
		if (write(fd, "b", 1) != 1)
			return 0;
		usleep(500);
	}
}

static void on_usr1(int s) { (void)s; discard = 1; }

static volatile sig_atomic_t checkNow;
static void on_usr2(int s) { (void)s; checkNow = 1; }

int main(int argc, char **argv) {
	nbig = (size_t)atol(argc > 1 ? argv[1] : "256") * MIB;
	const char *beatPath = argc > 2 ? argv[2] : 0;
	big = mmap(0, nbig, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	sparse = mmap(0, SPARSE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	heap = malloc(nheap);
	mv = mmap(0, nmv, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mvTo = mmap(0, nmv, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (big == MAP_FAILED || sparse == MAP_FAILED || !heap || mv == MAP_FAILED || mvTo == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < nmv / 8; i++)
		mv[i] = pat(i, 4);
	for (size_t i = 0; i < nbig / 8; i++)
		if (!hole(i * 8 / MIB))
			big[i] = pat(i, 1);
	for (size_t i = 0; i < SPARSE / 8; i += SPARSE / 8 / 4)
		sparse[i] = pat(i, 2);
	for (size_t i = 0; i < nheap / 8; i++)
		heap[i] = pat(i, 3);
	signal(SIGUSR1, on_usr1);
	signal(SIGUSR2, on_usr2);
	const char *who = "";
	if (getenv("LAZYMEM_FAMILY") && fork() == 0) {
		who = "kid ";
		if (fork() == 0)
			who = "grandkid ";
	}
	int idle = argc > 3 && strcmp(argv[3], "idle") == 0;
	pthread_t t;
	for (long k = 0; k < 3 && !idle; k++)
		pthread_create(&t, 0, reader, (void *)k);
	if (beatPath && !*who) {
		int fd = open(beatPath, 01 | 02000 | 0100, 0644); // O_WRONLY|O_APPEND|O_CREAT
		pthread_create(&t, 0, beater, (void *)(long)fd);
	}
	printf("ready\n");
	fflush(stdout);
	for (long pass = 1; idle; pass++) {
		while (!checkNow)
			usleep(10000);
		checkNow = 0;
		uint64_t sum = check("main");
		printf(bad ? "pass %ld FAIL\n" : "pass %ld ok %llx\n", pass, (unsigned long long)sum);
		fflush(stdout);
	}
	for (long pass = 1;; pass++) {
		if (discard) {
			discard = 0;
			discarded = 1;
			madvise((char *)big + 3 * MIB, MIB, MADV_DONTNEED);
			printf("discarded\n");
			// The kernel reads part of it first (write(2) from memory
			// no one touched yet): a lazy page must come in for the
			// kernel too, not fail the call with EFAULT.
			int mfd = memfd_create("lazymem", 0);
			static uint64_t back[8192];
			ssize_t w = write(mfd, (char *)mv + 2 * MIB, sizeof back);
			if (w != (ssize_t)sizeof back || pread(mfd, back, sizeof back, 0) != (ssize_t)sizeof back) {
				printf("kernel read FAIL: write returned %zd\n", w);
			} else {
				size_t k = 0;
				while (k < 8192 && back[k] == pat(2 * MIB / 8 + k, 4))
					k++;
				printf(k == 8192 ? "kernel read ok\n" : "kernel read FAIL at %zu\n", k * 8);
			}
			close(mfd);
			// Its first MiB is dropped before it moves: zero from then on.
			madvise(mv, MIB, MADV_DONTNEED);
			if (mremap(mv, nmv, nmv, MREMAP_MAYMOVE | MREMAP_FIXED, mvTo) != mvTo) {
				printf("mremap FAIL\n");
			} else {
				size_t i = 0;
				while (i < nmv / 8 && mvTo[i] == (i < MIB / 8 ? 0 : pat(i, 4)))
					i++;
				if (i == nmv / 8)
					printf("moved ok\n");
				else
					printf("moved FAIL at %zu: %#llx\n", i * 8, (unsigned long long)mvTo[i]);
			}
			fflush(stdout);
		}
		uint64_t sum = check("main");
		pid_t c = fork();
		if (c == 0) {
			check("child");
			_exit(bad ? 1 : 0);
		}
		int st = -1;
		waitpid(c, &st, 0);
		if (bad || st != 0)
			printf("%spass %ld FAIL (child status %d)\n", who, pass, st);
		else
			printf("%spass %ld ok %llx\n", who, pass, (unsigned long long)sum);
		fflush(stdout);
		usleep(20000);
	}
}
