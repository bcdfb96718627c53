// memory: puts a distinct pattern in every kind of memory chpox must restore,
// then idles. On SIGUSR1 it checks every area and prints "verify ok" or
// "verify FAIL <area> ...", then exercises malloc and sbrk and prints
// "malloc ok" (or "malloc FAIL ...").
//
//   memory DIR      (DIR holds the files behind the file mappings)
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

#define PAGE 4096
#define SPARSE_SIZE (1UL << 30)

static void die(const char *what) {
	say("setup FAIL %s: %m\n", what);
	exit(1);
}

// Byte i of an area filled with seed s. Depends on the page number too, so a
// page restored at the wrong place is caught.
static uint8_t pat(size_t i, unsigned s) { return (uint8_t)(i * 31 + s * 7 + (i >> 12) * 13 + 1); }

static void fill(void *p, size_t n, unsigned s) {
	uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		b[i] = pat(i, s);
}

// check returns the first bad offset, or -1.
static long check(const void *p, size_t n, unsigned s) {
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != pat(i, s))
			return (long)i;
	return -1;
}

// .data: initialised at compile time, then overwritten with the pattern.
static uint8_t data_area[3 * PAGE + 123] = {1, 2, 3};
// .bss
static uint8_t bss_area[5 * PAGE + 7];

static uint8_t *stack_area;       // points into main's frame
static uint8_t *small[64];        // brk heap via malloc
static uint8_t *large;            // malloc'd large enough for glibc to mmap it
static uint8_t *sbrk_area;        // raw sbrk
static uint8_t *sparse;           // 1 GiB, a few pages touched
static uint8_t *none_area;        // PROT_NONE with content
static uint8_t *ro_area;          // read-only anonymous with content
static uint8_t *priv_map;         // MAP_PRIVATE file, some pages written
static uint8_t *shared_map;       // MAP_SHARED file
static uint8_t *shanon;           // MAP_SHARED|MAP_ANONYMOUS
static int priv_fd, shared_fd;
static stack_t alt;
static volatile sig_atomic_t usr1, on_alt;

#define LARGE_SIZE (4 << 20)
#define SBRK_SIZE (64 * 1024 + 100)
#define NONE_SIZE (3 * PAGE)
#define RO_SIZE (2 * PAGE)
#define PRIV_PAGES 4
#define SHARED_SIZE (2 * PAGE)
#define SHANON_SIZE (16 * PAGE)
#define STACK_SIZE 20000

static const size_t sparse_pages[] = {0, 1, 77, 4096, 100000, SPARSE_SIZE / PAGE - 1};

static void on_usr1(int sig) {
	(void)sig;
	char here;
	uintptr_t a = (uintptr_t)&here, lo = (uintptr_t)alt.ss_sp;
	on_alt = a >= lo && a < lo + alt.ss_size;
	usr1 = 1;
}

static uint8_t *map(size_t n, int prot, int flags, int fd) {
	void *p = mmap(NULL, n, prot, flags, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	return p;
}

static int make_file(const char *dir, const char *name, size_t n, unsigned seed) {
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		die(path);
	uint8_t *buf = malloc(n);
	fill(buf, n, seed);
	if (write(fd, buf, n) != (ssize_t)n)
		die("write file");
	free(buf);
	return fd;
}

// perms returns the permission string of the mapping holding p, from /proc/self/maps.
static const char *perms(const void *p) {
	static char out[8];
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	strcpy(out, "?");
	while (f && fgets(line, sizeof line, f)) {
		unsigned long lo, hi;
		char pr[8];
		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, pr) == 3 && (uintptr_t)p >= lo && (uintptr_t)p < hi) {
			strcpy(out, pr);
			break;
		}
	}
	if (f)
		fclose(f);
	return out;
}

#define FAIL(...)                        \
	do {                             \
		say("verify FAIL " __VA_ARGS__); \
		return 0;                \
	} while (0)
#define AREA(name, p, n, s)                                              \
	do {                                                             \
		long bad = check(p, n, s);                               \
		if (bad >= 0)                                            \
			FAIL("%s at %ld: %u != %u\n", name, bad, ((uint8_t *)(p))[bad], pat(bad, s)); \
	} while (0)

// verify checks every area; signalled says a SIGUSR1 handler has run since the last check.
static int verify(int signalled) {
	AREA("data", data_area, sizeof data_area, 1);
	AREA("bss", bss_area, sizeof bss_area, 2);
	AREA("stack", stack_area, STACK_SIZE, 3);
	for (int i = 0; i < 64; i++)
		AREA("malloc-small", small[i], 100 + i * 37, 100 + i);
	AREA("malloc-large", large, LARGE_SIZE, 4);
	AREA("sbrk", sbrk_area, SBRK_SIZE, 5);
	for (size_t i = 0; i < sizeof sparse_pages / sizeof *sparse_pages; i++)
		AREA("sparse", sparse + sparse_pages[i] * PAGE, PAGE, 6 + i);
	// Untouched pages of the sparse area must still read as zero.
	for (size_t pg = 2; pg < SPARSE_SIZE / PAGE; pg += 7919)
		if (pg != 77 && pg != 4096 && pg != 100000 && sparse[pg * PAGE + 5] != 0)
			FAIL("sparse-zero page %zu\n", pg);

	if (strcmp(perms(none_area), "---p") != 0)
		FAIL("prot-none perms %s\n", perms(none_area));
	if (mprotect(none_area, NONE_SIZE, PROT_READ) != 0)
		FAIL("prot-none mprotect\n");
	long bad = check(none_area, NONE_SIZE, 12);
	mprotect(none_area, NONE_SIZE, PROT_NONE);
	if (bad >= 0)
		FAIL("prot-none at %ld\n", bad);

	if (strcmp(perms(ro_area), "r--p") != 0)
		FAIL("read-only perms %s\n", perms(ro_area));
	AREA("read-only", ro_area, RO_SIZE, 13);

	// Private file mapping: even pages as in the file (pattern 14 over the
	// whole file), odd pages written by us.
	{
		uint8_t file[PRIV_PAGES * PAGE], disk[PAGE];
		fill(file, sizeof file, 14);
		for (int i = 0; i < PRIV_PAGES; i++) {
			if (i % 2 == 0 && memcmp(priv_map + i * PAGE, file + i * PAGE, PAGE) != 0)
				FAIL("private-file clean page %d\n", i);
			if (i % 2 == 1)
				AREA("private-file written page", priv_map + i * PAGE, PAGE, 20 + i);
		}
		// Our writes must not have reached the file.
		if (pread(priv_fd, disk, PAGE, PAGE) != PAGE || memcmp(disk, file + PAGE, PAGE) != 0)
			FAIL("private-file leaked to disk\n");
		if (strcmp(perms(priv_map), "rw-p") != 0)
			FAIL("private-file perms %s\n", perms(priv_map));
	}

	// Shared file mapping: content is pattern 15, and it must really be the
	// file: a write through the mapping shows up in pread and back.
	AREA("shared-file", shared_map, SHARED_SIZE, 15);
	{
		uint8_t b;
		shared_map[100] ^= 0xff;
		int ok = pread(shared_fd, &b, 1, 100) == 1 && b == shared_map[100];
		shared_map[100] ^= 0xff;
		if (!ok)
			FAIL("shared-file not shared with the file\n");
		if (strcmp(perms(shared_map), "rw-s") != 0)
			FAIL("shared-file perms %s\n", perms(shared_map));
	}

	AREA("shared-anon", shanon, SHANON_SIZE, 16);
	if (strcmp(perms(shanon), "rw-s") != 0)
		FAIL("shared-anon perms %s\n", perms(shanon));

	stack_t ss;
	if (sigaltstack(NULL, &ss) != 0 || ss.ss_sp != alt.ss_sp || ss.ss_size != alt.ss_size || ss.ss_flags != 0)
		FAIL("sigaltstack sp=%p size=%zu flags=%d\n", ss.ss_sp, ss.ss_size, ss.ss_flags);
	if (signalled && !on_alt)
		FAIL("handler not on the alternate stack\n");

	sigset_t cur;
	sigprocmask(SIG_SETMASK, NULL, &cur);
	if (!sigismember(&cur, SIGUSR2) || sigismember(&cur, SIGUSR1))
		FAIL("blocked mask\n");
	return 1;
}

// exercise mallocs and frees many sizes and grows sbrk, then checks everything again.
static int exercise(void) {
	enum { N = 300 };
	static uint8_t *p[N];
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < N; i++) {
			size_t n = 1 + ((size_t)i * i * 977 + round * 131) % (i % 10 == 0 ? 300000 : 3000);
			p[i] = malloc(n);
			if (!p[i])
				return say("malloc FAIL malloc %zu\n", n), 0;
			fill(p[i], n, i + round);
			if (i % 3 == 0) {
				free(p[i]);
				p[i] = NULL;
			}
		}
		for (int i = 0; i < N; i++)
			free(p[i]);
	}
	uint8_t *more = sbrk(3 * PAGE);
	if (more == (void *)-1)
		return say("malloc FAIL sbrk\n"), 0;
	fill(more, 3 * PAGE, 30);
	if (check(more, 3 * PAGE, 30) >= 0)
		return say("malloc FAIL sbrk content\n"), 0;
	return verify(1);
}

int main(int argc, char **argv) {
	if (argc < 2) {
		say("usage: memory DIR\n");
		return 2;
	}
	uint8_t stack_buf[STACK_SIZE];
	stack_area = stack_buf;

	fill(data_area, sizeof data_area, 1);
	fill(bss_area, sizeof bss_area, 2);
	fill(stack_buf, STACK_SIZE, 3);
	for (int i = 0; i < 64; i++) {
		small[i] = malloc(100 + i * 37);
		fill(small[i], 100 + i * 37, 100 + i);
	}
	large = malloc(LARGE_SIZE);
	fill(large, LARGE_SIZE, 4);
	sbrk_area = sbrk(SBRK_SIZE);
	if (sbrk_area == (void *)-1)
		die("sbrk");
	fill(sbrk_area, SBRK_SIZE, 5);

	sparse = map(SPARSE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1);
	for (size_t i = 0; i < sizeof sparse_pages / sizeof *sparse_pages; i++)
		fill(sparse + sparse_pages[i] * PAGE, PAGE, 6 + i);

	none_area = map(NONE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	fill(none_area, NONE_SIZE, 12);
	if (mprotect(none_area, NONE_SIZE, PROT_NONE) != 0)
		die("mprotect none");

	ro_area = map(RO_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	fill(ro_area, RO_SIZE, 13);
	if (mprotect(ro_area, RO_SIZE, PROT_READ) != 0)
		die("mprotect ro");

	priv_fd = make_file(argv[1], "private.dat", PRIV_PAGES * PAGE, 14);
	priv_map = map(PRIV_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE, priv_fd);
	for (int i = 1; i < PRIV_PAGES; i += 2)
		fill(priv_map + i * PAGE, PAGE, 20 + i);

	shared_fd = make_file(argv[1], "shared.dat", SHARED_SIZE, 0);
	shared_map = map(SHARED_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, shared_fd);
	fill(shared_map, SHARED_SIZE, 15);

	shanon = map(SHANON_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1);
	fill(shanon, SHANON_SIZE, 16);

	alt.ss_size = 64 * 1024;
	alt.ss_sp = malloc(alt.ss_size);
	alt.ss_flags = 0;
	if (sigaltstack(&alt, NULL) != 0)
		die("sigaltstack");

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigprocmask(SIG_BLOCK, &block, NULL);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR1, &sa, NULL);

	if (!verify(0))
		return 1;
	say("ready\n");
	for (;;) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
		if (!usr1)
			continue;
		usr1 = 0;
		if (!verify(1))
			continue;
		say("verify ok\n");
		if (exercise())
			say("malloc ok\n");
	}
}
