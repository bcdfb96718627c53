// files sets up state for procinfo: cwd, umask, name and exactly these fds, then
// closes its stdout (the test reads to EOF to know it is ready) and waits.
//
//   0, 1, 2  /dev/null
//   10       argv[2], O_RDWR, offset 1234
//   11       argv[3], O_WRONLY|O_APPEND|O_CLOEXEC
//   12       argv[4], created with 10000 pattern bytes, then unlinked; offset 5
//   13       /dev/null, O_RDWR
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

static void must(int ok, const char *what) {
	if (!ok) {
		perror(what);
		exit(1);
	}
}

static void move(int fd, int to, int flags) {
	must(dup3(fd, to, flags) == to, "dup3");
	must(close(fd) == 0, "close");
}

int main(int argc, char **argv) {
	if (argc != 5)
		return 2;
	/* whatever the test runner leaked to us is not ours to list */
	must(close_range(3, ~0U, 0) == 0, "close_range");
	must(chdir(argv[1]) == 0, "chdir");
	umask(027);
	must(prctl(PR_SET_NAME, "chpox-files") == 0, "prctl");

	int fd = open(argv[2], O_RDWR);
	must(fd >= 0, "open regular");
	must(lseek(fd, 1234, SEEK_SET) == 1234, "lseek");
	move(fd, 10, 0);

	fd = open(argv[3], O_WRONLY | O_APPEND);
	must(fd >= 0, "open append");
	move(fd, 11, O_CLOEXEC);

	fd = open(argv[4], O_RDWR | O_CREAT | O_TRUNC, 0640);
	must(fd >= 0, "open deleted");
	unsigned char buf[10000];
	for (int i = 0; i < (int)sizeof buf; i++)
		buf[i] = (unsigned char)(i * 31 + 7);
	must(write(fd, buf, sizeof buf) == sizeof buf, "write");
	must(unlink(argv[4]) == 0, "unlink");
	must(lseek(fd, 5, SEEK_SET) == 5, "lseek");
	move(fd, 12, 0);

	fd = open("/dev/null", O_RDWR);
	must(fd >= 0, "open /dev/null");
	move(fd, 13, 0);
	/* stdout last: its EOF tells the test that everything is in place */
	int order[] = {0, 2, 1};
	for (int i = 0; i < 3; i++)
		must(dup2(13, order[i]) == order[i], "dup2");

	for (;;)
		pause();
}
