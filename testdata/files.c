// files: holds open files in states chpox must restore, and checks them on
// SIGUSR1, printing "files ok" or "files FAIL <what>".
//
//   files DIR
//
//   DIR/a.txt  O_RDWR, content "0123456789", offset 4
//   DIR/b.log  O_WRONLY|O_APPEND, content "line1\n"
//   DIR/c.tmp  O_RDWR, content "deleted-content", unlinked, offset 8
//   /dev/null  O_WRONLY
//
// The check reads "456789" from a and "content" from c (and seeks back, so
// it can run again), writes "line2\n" to b (O_APPEND puts it at the end even
// if someone else made the file longer) and writes to /dev/null.
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) {
	(void)sig;
	usr1 = 1;
}

static int a, b, c, null;

static int open_in(const char *dir, const char *name, int flags) {
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, flags, 0644);
	if (fd < 0) {
		say("setup FAIL open %s: %m\n", path);
		_exit(1);
	}
	return fd;
}

#define FAIL(...)                           \
	do {                                \
		say("files FAIL " __VA_ARGS__); \
		return 0;                   \
	} while (0)

static int check_read(int fd, const char *name, off_t off, const char *want) {
	char buf[64] = {0};
	off_t pos = lseek(fd, 0, SEEK_CUR);
	if (pos != off)
		FAIL("%s offset %ld, want %ld\n", name, (long)pos, (long)off);
	ssize_t n = read(fd, buf, sizeof buf - 1);
	if (n != (ssize_t)strlen(want) || memcmp(buf, want, n) != 0)
		FAIL("%s read %zd bytes %.20s, want %s\n", name, n, buf, want);
	if (lseek(fd, off, SEEK_SET) != off)
		FAIL("%s seek back\n", name);
	int fl = fcntl(fd, F_GETFL);
	if ((fl & O_ACCMODE) != O_RDWR)
		FAIL("%s flags %#o, want O_RDWR\n", name, fl);
	return 1;
}

static int check(void) {
	struct stat st;
	if (!check_read(a, "a", 4, "456789"))
		return 0;
	if (!check_read(c, "c", 8, "content"))
		return 0;
	if (fstat(c, &st) != 0 || st.st_nlink != 0)
		FAIL("c has %ld links, want 0 (deleted)\n", (long)st.st_nlink);

	int fl = fcntl(b, F_GETFL);
	if (!(fl & O_APPEND) || (fl & O_ACCMODE) != O_WRONLY)
		FAIL("b flags %#o, want O_WRONLY|O_APPEND\n", fl);
	if (write(b, "line2\n", 6) != 6)
		FAIL("b write: %m\n");

	if (fstat(null, &st) != 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3))
		FAIL("null is not /dev/null\n");
	fl = fcntl(null, F_GETFL);
	if ((fl & O_ACCMODE) != O_WRONLY)
		FAIL("null flags %#o, want O_WRONLY\n", fl);
	if (write(null, "x", 1) != 1)
		FAIL("null write: %m\n");
	return 1;
}

int main(int argc, char **argv) {
	if (argc < 2) {
		say("usage: files DIR\n");
		return 2;
	}
	a = open_in(argv[1], "a.txt", O_RDWR | O_CREAT | O_TRUNC);
	if (write(a, "0123456789", 10) != 10 || lseek(a, 4, SEEK_SET) != 4)
		return 1;
	b = open_in(argv[1], "b.log", O_WRONLY | O_CREAT | O_APPEND);
	if (write(b, "line1\n", 6) != 6)
		return 1;
	c = open_in(argv[1], "c.tmp", O_RDWR | O_CREAT);
	if (write(c, "deleted-content", 15) != 15 || lseek(c, 8, SEEK_SET) != 8)
		return 1;
	char path[4096];
	snprintf(path, sizeof path, "%s/c.tmp", argv[1]);
	if (unlink(path) != 0)
		return 1;
	null = open("/dev/null", O_WRONLY);
	if (null < 0)
		return 1;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);

	say("ready\n");
	for (;;) {
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
		if (usr1) {
			usr1 = 0;
			if (check())
				say("files ok\n");
		}
	}
}
