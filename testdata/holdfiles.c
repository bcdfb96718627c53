// holdfiles: holds each PATH open O_RDWR at offset 1 and reports on
// SIGUSR1 "hold ok C..." (the first byte of each file, read at offset 0)
// or "hold FAIL <what>" if a descriptor moved to another file or offset.
// A first argument map:PATH maps PATH's first page private instead,
// smap:PATH shared (read-only).
//
//   holdfiles [map:PATH|smap:PATH] PATH...
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testprog.h"

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) {
	(void)sig;
	usr1 = 1;
}

int main(int argc, char **argv) {
	if (argc > 1 && (strncmp(argv[1], "map:", 4) == 0 || strncmp(argv[1], "smap:", 5) == 0)) {
		int shared = argv[1][0] == 's';
		const char *path = argv[1] + 4 + shared;
		int fd = open(path, O_RDONLY);
		if (fd < 0 || mmap(NULL, 4096, PROT_READ, shared ? MAP_SHARED : MAP_PRIVATE, fd, 0) == MAP_FAILED || close(fd) != 0) {
			say("setup FAIL map %s: %s\n", path, strerror(errno));
			return 1;
		}
		argv++, argc--;
	}
	int n = argc - 1, fds[16];
	ino_t inos[16];
	dev_t devs[16];
	if (n < 1 || n > 16) {
		say("usage: holdfiles PATH...\n");
		return 2;
	}
	for (int i = 0; i < n; i++) {
		struct stat st;
		if ((fds[i] = open(argv[i + 1], O_RDWR)) < 0 || lseek(fds[i], 1, SEEK_SET) != 1 || fstat(fds[i], &st) != 0) {
			say("setup FAIL %s: %s\n", argv[i + 1], strerror(errno));
			return 1;
		}
		inos[i] = st.st_ino;
		devs[i] = st.st_dev;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	say("ready\n");
	for (;;) {
		nap(10);
		if (!usr1)
			continue;
		usr1 = 0;
		char first[17] = {0};
		int ok = 1;
		for (int i = 0; i < n && ok; i++) {
			struct stat st;
			if (fstat(fds[i], &st) != 0 || st.st_ino != inos[i] || st.st_dev != devs[i]) {
				say("hold FAIL %s is another file\n", argv[i + 1]);
				ok = 0;
			} else if (lseek(fds[i], 0, SEEK_CUR) != 1) {
				say("hold FAIL %s at offset %ld\n", argv[i + 1], (long)lseek(fds[i], 0, SEEK_CUR));
				ok = 0;
			} else if (pread(fds[i], &first[i], 1, 0) != 1) {
				say("hold FAIL %s read: %s\n", argv[i + 1], strerror(errno));
				ok = 0;
			}
		}
		if (ok)
			say("hold ok %s\n", first);
	}
}
