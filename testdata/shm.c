// shm: memory shared between a parent and its child.
//
//   shm DIR
//
// The parent maps 8 MiB MAP_SHARED|MAP_ANONYMOUS and fills it with a
// pattern, and maps DIR/shm.dat (64 KiB) MAP_SHARED; then it forks. The
// child increments a counter in the anonymous area every 5ms; the parent
// increments one in the file mapping every 5ms. Each prints "ROLE N SEEN"
// every 20ms (N its own counter, SEEN the other's), with ROLE parent or
// child; the first line is "pids PARENT CHILD".
//
// SIGUSR1 to either: it checks the whole pattern, then that the other's
// counter moves within a second, and prints "shm ok ROLE" or a FAIL line.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

#define ANON (8 << 20)
#define FILESZ (64 << 10)

static volatile sig_atomic_t usr1;

static void on_usr1(int sig) {
	(void)sig;
	usr1 = 1;
}

static uint64_t pat(uint64_t i) { return i * 0x9E3779B97F4A7C15ull + 17; }

int main(int argc, char **argv) {
	if (argc < 2) {
		say("usage: shm DIR\n");
		return 2;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/shm.dat", argv[1]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, FILESZ) != 0) {
		say("FAIL %s: %s\n", path, strerror(errno));
		return 1;
	}
	volatile uint64_t *anon = mmap(NULL, ANON, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	volatile uint64_t *file = mmap(NULL, FILESZ, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (anon == MAP_FAILED || file == MAP_FAILED) {
		say("FAIL mmap: %s\n", strerror(errno));
		return 1;
	}
	close(fd);
	// Word 0 of anon is the child's counter, word 0 of file the parent's.
	for (uint64_t i = 1; i < ANON / 8; i++)
		anon[i] = pat(i);
	for (uint64_t i = 1; i < FILESZ / 8; i++)
		file[i] = pat(i) ^ 1;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);

	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0)
		return 1;
	const char *role = child == 0 ? "child" : "parent";
	volatile uint64_t *mine = child == 0 ? &anon[0] : &file[0];
	volatile uint64_t *other = child == 0 ? &file[0] : &anon[0];
	if (child != 0)
		say("pids %d %d\n", parent, child);
	for (long n = 0;; n++) {
		for (int k = 0; k < 4; k++) {
			++*mine;
			nap(5);
		}
		say("%s %lu %lu\n", role, (unsigned long)*mine, (unsigned long)*other);
		if (!usr1)
			continue;
		usr1 = 0;
		int ok = 1;
		for (uint64_t i = 1; i < ANON / 8 && ok; i++)
			if (anon[i] != pat(i)) {
				say("%s FAIL anon word %lu is %#lx, want %#lx\n", role, (unsigned long)i,
				    (unsigned long)anon[i], (unsigned long)pat(i));
				ok = 0;
			}
		for (uint64_t i = 1; i < FILESZ / 8 && ok; i++)
			if (file[i] != (pat(i) ^ 1)) {
				say("%s FAIL file word %lu is %#lx\n", role, (unsigned long)i, (unsigned long)file[i]);
				ok = 0;
			}
		if (!ok)
			continue;
		uint64_t before = *other;
		int moved = 0;
		for (int k = 0; k < 200 && !moved; k++) {
			++*mine;
			nap(5);
			moved = *other != before;
		}
		if (moved)
			say("shm ok %s %lu %lu\n", role, (unsigned long)before, (unsigned long)*other);
		else
			say("%s FAIL the other's counter stays at %lu: memory not shared\n", role, (unsigned long)before);
	}
}
