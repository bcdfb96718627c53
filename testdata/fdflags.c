// fdflags: holds files opened by path with file status flags that the
// kernel keeps on the open file description, and fds that share one
// description but differ in close-on-exec, and reports each every 20 ms
// as fcntl gives it back, one line (one write(2)) per fd:
//
//   F <fd> fl=<F_GETFL, octal> cloexec=<0|1>
//
//   fdflags DIR
//
//   3  DIR/a  O_RDWR|O_NONBLOCK
//   4  /dev/null  O_RDONLY|O_NONBLOCK
//   5  DIR/s  O_WRONLY|O_SYNC
//   6  DIR/d  O_WRONLY|O_DSYNC
//   7  DIR/n  O_RDONLY|O_NOATIME
//   8  DIR/o  O_RDWR|O_DIRECT
//   9  DIR    O_RDONLY|O_DIRECTORY|O_CLOEXEC
//   10 fd 3's description, close-on-exec (F_DUPFD_CLOEXEC)
//   11 fd 9's description, not close-on-exec (dup3 without O_CLOEXEC)
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "testprog.h"

static void fail(const char *what) {
	say("fdflags FAIL %s\n", what);
	exit(1);
}

static void open_at(int want, const char *dir, const char *name, int flags) {
	char path[4096];
	snprintf(path, sizeof path, "%s%s%s", dir, name[0] ? "/" : "", name);
	int fd = open(path, flags, 0644);
	if (fd != want)
		fail(path);
}

int main(int argc, char **argv) {
	if (argc < 2)
		fail("usage: fdflags DIR");
	const char *d = argv[1];
	open_at(3, d, "a", O_RDWR | O_CREAT | O_NONBLOCK);
	open_at(4, "/dev/null", "", O_RDONLY | O_NONBLOCK);
	open_at(5, d, "s", O_WRONLY | O_CREAT | O_SYNC);
	open_at(6, d, "d", O_WRONLY | O_CREAT | O_DSYNC);
	open_at(7, d, "a", O_RDONLY | O_NOATIME);
	open_at(8, d, "o", O_RDWR | O_CREAT | O_DIRECT);
	open_at(9, d, "", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fcntl(3, F_DUPFD_CLOEXEC, 10) != 10 || dup3(9, 11, 0) != 11)
		fail("dup");
	for (;;) {
		for (int fd = 3; fd <= 11; fd++) {
			int fl = fcntl(fd, F_GETFL), fdf = fcntl(fd, F_GETFD);
			if (fl < 0 || fdf < 0)
				fail("fcntl");
			say("F %d fl=%o cloexec=%d\n", fd, fl, !!(fdf & FD_CLOEXEC));
		}
		nap(20);
	}
}
