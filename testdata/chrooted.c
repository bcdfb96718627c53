// chrooted: runs in a chroot and proves on SIGUSR1 that it still does,
// printing "chroot ok" or "chroot FAIL <what>".
//
//   chrooted NEWROOT
//
// NEWROOT must hold sub/ and inside.txt ("inside"). The program chroots
// there, works in /sub, holds /inside.txt open at offset 2, and checks
// that / is NEWROOT (same inode), that /inside.txt opens by its path in
// the chroot, and that the working directory is /sub.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testprog.h"

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) {
	(void)sig;
	usr1 = 1;
}

#define FAIL(...)                            \
	do {                                 \
		say("chroot FAIL " __VA_ARGS__); \
		return 0;                    \
	} while (0)

static ino_t root_ino;
static int held;

static int check(void) {
	struct stat st;
	char buf[256] = {0};
	if (stat("/", &st) != 0 || st.st_ino != root_ino)
		FAIL("/ is another directory\n");
	if (getcwd(buf, sizeof buf) == NULL || strcmp(buf, "/sub") != 0)
		FAIL("cwd %s, want /sub\n", buf);
	int fd = open("/inside.txt", O_RDONLY);
	if (fd < 0)
		FAIL("open /inside.txt: %s\n", strerror(errno));
	memset(buf, 0, sizeof buf);
	if (read(fd, buf, sizeof buf) != 6 || strcmp(buf, "inside") != 0)
		FAIL("/inside.txt reads %s\n", buf);
	close(fd);
	memset(buf, 0, sizeof buf);
	if (pread(held, buf, 4, 2) != 4 || strcmp(buf, "side") != 0 || lseek(held, 0, SEEK_CUR) != 2)
		FAIL("held fd reads %s at offset %ld\n", buf, (long)lseek(held, 0, SEEK_CUR));
	if (access("/bin/sh", F_OK) == 0)
		FAIL("/bin/sh exists: not in the chroot\n");
	return 1;
}

int main(int argc, char **argv) {
	if (argc < 2) {
		say("usage: chrooted NEWROOT\n");
		return 2;
	}
	struct stat st;
	if (chroot(argv[1]) != 0 || chdir("/sub") != 0 || stat("/", &st) != 0) {
		say("setup FAIL chroot %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	root_ino = st.st_ino;
	if ((held = open("/inside.txt", O_RDONLY)) < 0 || lseek(held, 2, SEEK_SET) != 2) {
		say("setup FAIL open: %s\n", strerror(errno));
		return 1;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	say("ready\n");
	for (;;) {
		nap(10);
		if (usr1) {
			usr1 = 0;
			if (check())
				say("chroot ok\n");
		}
	}
}
