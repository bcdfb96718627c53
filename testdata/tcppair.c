// tcppair: a parent and its child talk over one loopback TCP connection
// (argv[1] "4" or "6"). Each sends TOTAL bytes of a pattern fast and reads
// the other's slowly, checking every byte, so both directions hold data in
// the send and receive queues at any moment. Reports progress, "FAIL" on a
// wrong byte or error, and "pair ok" when both are done.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "testprog.h"

#define TOTAL (3 << 20)

static unsigned char pat(long i, int who) { return (unsigned char)((i * 7 + who * 13 + i / 251) & 0xff); }

static int run(int fd, int me) {
	long sent = 0, got = 0, next = 100000;
	unsigned char buf[4096];
	const char *name = me ? "child" : "parent";
	while (sent < TOTAL || got < TOTAL) {
		struct pollfd p = {fd, POLLIN | (sent < TOTAL ? POLLOUT : 0), 0};
		if (poll(&p, 1, 1000) < 0 && errno != EINTR) {
			say("FAIL %s poll: %s\n", name, strerror(errno));
			return 1;
		}
		if (p.revents & POLLOUT) {
			int n = 0;
			for (; n < (int)sizeof buf && sent + n < TOTAL; n++)
				buf[n] = pat(sent + n, me);
			ssize_t w = write(fd, buf, n);
			if (w < 0 && errno != EINTR && errno != EAGAIN) {
				say("FAIL %s write: %s\n", name, strerror(errno));
				return 1;
			}
			if (w > 0)
				sent += w;
		}
		if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t r = read(fd, buf, 2048); // slow reader: 2 KiB every 2 ms at most
			if (r <= 0) {
				say("FAIL %s read %zd after %ld bytes: %s\n", name, r, got, strerror(errno));
				return 1;
			}
			for (ssize_t k = 0; k < r; k++)
				if (buf[k] != pat(got + k, !me)) {
					say("FAIL %s byte %ld is %d, want %d\n", name, got + k, buf[k], pat(got + k, !me));
					return 1;
				}
			got += r;
			if (got >= next) {
				say("%s got %ld\n", name, got);
				next += 100000;
			}
			nap(2);
		}
	}
	say("%s done\n", name);
	return 0;
}

int main(int argc, char **argv) {
	int six = argc > 1 && argv[1][0] == '6';
	int family = six ? AF_INET6 : AF_INET;
	struct sockaddr_storage ss = {0};
	socklen_t len = six ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	if (six) {
		struct sockaddr_in6 *a = (void *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
	} else {
		struct sockaddr_in *a = (void *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	int l = socket(family, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (void *)&ss, len) < 0 || listen(l, 1) < 0 || getsockname(l, (void *)&ss, &len) < 0) {
		say("FAIL listen: %s\n", strerror(errno));
		return 1;
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(l);
		int c = socket(family, SOCK_STREAM, 0);
		if (connect(c, (void *)&ss, len) < 0) {
			say("FAIL connect: %s\n", strerror(errno));
			return 1;
		}
		return run(c, 1);
	}
	int c = accept(l, NULL, NULL);
	close(l);
	if (c < 0) {
		say("FAIL accept: %s\n", strerror(errno));
		return 1;
	}
	int bad = run(c, 0);
	int st;
	waitpid(pid, &st, 0);
	if (bad || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		say("FAIL child status %#x\n", st);
		return 1;
	}
	say("pair ok\n");
	return 0;
}
