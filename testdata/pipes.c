// pipes: pipes and a shared file between the processes of a tree.
//
//   pipes DIR
//
//   parent ── reader   pipe A: the parent wrote 10 KiB of a known pattern
//          │           into it before forking; the reader reads nothing
//          │           until SIGUSR1.
//          ├── w1      pipe B: w1 and w2 hold the same write end and each
//          └── w2      write "w1 N" / "w2 N" every 10ms; the parent reads
//                      only on SIGUSR1.
//
// DIR/shared.txt is opened (O_RDWR, not O_APPEND) by the parent before the
// forks; the parent and w1 share its one open file description.
//
// Lines on stdout (shared by all, write(2) only):
//   "pids PARENT READER W1 W2" once everything runs
//   "alive ROLE N" every 20ms from parent and reader
// SIGUSR1 to the reader: it reads what pipe A holds without blocking and
//   prints "reader pattern ok 10240" if that is exactly the pattern; it
//   then reads blocking and prints "reader got ping" when "ping\n" comes.
// SIGUSR1 to the parent: it writes "ping\n" into pipe A, drains pipe B
//   without blocking and prints "pipeB ok w1 N w2 M" if each writer's
//   numbers go on with no gap or duplicate since the previous drain (N and
//   M are how many messages of each it has seen in all); then it writes a
//   16-byte record into shared.txt, prints "parent offset P" (lseek after
//   the write) and sends SIGUSR2 to w1, which prints "w1 offset X" (lseek
//   before its own 16-byte record), then "w1 after Y".
// Any check that fails prints a line with FAIL.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "testprog.h"

#define PATTERN 10240

static volatile sig_atomic_t usr1, usr2;

static void on_usr1(int sig) {
	(void)sig;
	usr1 = 1;
}

static void on_usr2(int sig) {
	(void)sig;
	usr2 = 1;
}

static unsigned char pat(int i) { return (unsigned char)(i * 7 + i / 251 + 3); }

static int writeall(int fd, const void *buf, size_t n) {
	const char *p = buf;
	while (n > 0) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= k;
	}
	return 0;
}

static void reader(int rd) {
	for (long n = 0;; n++) {
		say("alive reader %ld\n", n);
		nap(20);
		if (!usr1)
			continue;
		usr1 = 0;
		static unsigned char buf[PATTERN + 4096];
		fcntl(rd, F_SETFL, fcntl(rd, F_GETFL) | O_NONBLOCK);
		int got = 0;
		for (;;) {
			ssize_t k = read(rd, buf + got, sizeof buf - got);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				break;
			got += k;
		}
		if (got != PATTERN) {
			say("reader FAIL pipe A held %d bytes, want %d\n", got, PATTERN);
			continue;
		}
		for (int i = 0; i < PATTERN; i++)
			if (buf[i] != pat(i)) {
				say("reader FAIL pipe A byte %d is %#x, want %#x\n", i, buf[i], pat(i));
				goto next;
			}
		say("reader pattern ok %d\n", got);
		fcntl(rd, F_SETFL, fcntl(rd, F_GETFL) & ~O_NONBLOCK);
		char ping[5];
		got = 0;
		while (got < 5) {
			ssize_t k = read(rd, ping + got, 5 - got);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				say("reader FAIL read ping: %zd (%s)\n", k, strerror(errno));
				goto next;
			}
			got += k;
		}
		if (memcmp(ping, "ping\n", 5) != 0)
			say("reader FAIL got %.5s, want ping\n", ping);
		else
			say("reader got ping\n");
	next:;
	}
}

static void writer(int id, int wr, int shared) {
	for (long n = 0;; n++) {
		char msg[32];
		int len = snprintf(msg, sizeof msg, "w%d %ld\n", id, n);
		if (writeall(wr, msg, len) != 0)
			_exit(98);
		nap(10);
		if (usr2 && shared >= 0) {
			usr2 = 0;
			off_t x = lseek(shared, 0, SEEK_CUR);
			if (writeall(shared, "w1 record......\n", 16) != 0)
				say("w1 FAIL write shared: %s\n", strerror(errno));
			off_t y = lseek(shared, 0, SEEK_CUR);
			say("w1 offset %ld\n", (long)x);
			say("w1 after %ld\n", (long)y);
		}
	}
}

int main(int argc, char **argv) {
	if (argc < 2) {
		say("usage: pipes DIR\n");
		return 2;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/shared.txt", argv[1]);
	int shared = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (shared < 0) {
		say("FAIL open %s: %s\n", path, strerror(errno));
		return 1;
	}
	if (writeall(shared, "start\n", 6) != 0)
		return 1;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);

	int a[2], b[2];
	if (pipe(a) != 0 || pipe(b) != 0)
		return 1;
	static unsigned char data[PATTERN];
	for (int i = 0; i < PATTERN; i++)
		data[i] = pat(i);
	if (writeall(a[1], data, PATTERN) != 0)
		return 1;

	pid_t r = fork();
	if (r < 0)
		return 1;
	if (r == 0) {
		close(a[1]);
		close(b[0]);
		close(b[1]);
		close(shared);
		reader(a[0]);
	}
	close(a[0]);
	pid_t w[2];
	for (int i = 0; i < 2; i++) {
		w[i] = fork();
		if (w[i] < 0)
			return 1;
		if (w[i] == 0) {
			close(a[1]);
			close(b[0]);
			if (i == 0) {
				if (writeall(shared, "w1 start\n", 9) != 0)
					_exit(1);
			} else {
				close(shared);
			}
			writer(i + 1, b[1], i == 0 ? shared : -1);
		}
	}
	close(b[1]);
	fcntl(b[0], F_SETFL, O_NONBLOCK);
	say("pids %d %d %d %d\n", getpid(), r, w[0], w[1]);

	long next[3] = {0, 0, 0}; // next number expected from w1, w2
	char pend[64];            // a partial message left from the last drain
	int npend = 0;
	for (long n = 0;; n++) {
		say("alive parent %ld\n", n);
		nap(20);
		if (!usr1)
			continue;
		usr1 = 0;
		if (writeall(a[1], "ping\n", 5) != 0)
			say("parent FAIL write ping: %s\n", strerror(errno));
		static char buf[65536 + 64];
		memcpy(buf, pend, npend);
		int got = npend;
		for (;;) {
			ssize_t k = read(b[0], buf + got, sizeof buf - 1 - got);
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				break;
			got += k;
		}
		buf[got] = 0;
		int ok = 1;
		char *p = buf;
		for (char *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
			int id;
			long num;
			*nl = 0;
			if (sscanf(p, "w%d %ld", &id, &num) != 2 || id < 1 || id > 2) {
				say("parent FAIL pipe B message %.40s\n", p);
				ok = 0;
				break;
			}
			if (num != next[id]) {
				say("parent FAIL pipe B: w%d %ld after w%d %ld\n", id, num, id, next[id] - 1);
				ok = 0;
				break;
			}
			next[id]++;
		}
		npend = strlen(p);
		if (npend >= (int)sizeof pend)
			npend = 0;
		memmove(pend, p, npend);
		if (ok)
			say("pipeB ok w1 %ld w2 %ld\n", next[1], next[2]);

		if (writeall(shared, "parent record..\n", 16) != 0)
			say("parent FAIL write shared: %s\n", strerror(errno));
		say("parent offset %ld\n", (long)lseek(shared, 0, SEEK_CUR));
		kill(w[0], SIGUSR2);
	}
}
