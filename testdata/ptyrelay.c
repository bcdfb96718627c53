// ptyrelay: a minimal `script`: runs a command on the slave of a new
// pseudo-terminal pair (as session leader, the slave its controlling
// terminal) and relays its own stdin to the master and the master to its
// stdout, its own terminal in raw mode. It holds the pair inside the tree,
// as a terminal multiplexer, expect or an ssh-like relay does.
//
//   ptyrelay CMD [ARG...]
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

static struct termios saved;
static int raw;

static void restore_tty(void) {
	if (raw)
		tcsetattr(0, TCSANOW, &saved);
}

int main(int argc, char **argv) {
	if (argc < 2) {
		fprintf(stderr, "usage: ptyrelay CMD [ARG...]\n");
		return 2;
	}
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0) {
		perror("ptmx");
		return 1;
	}
	struct winsize ws;
	if (ioctl(0, TIOCGWINSZ, &ws) == 0)
		ioctl(m, TIOCSWINSZ, &ws);
	pid_t child = fork();
	if (child == 0) {
		setsid();
		int s = open(ptsname(m), O_RDWR); // a session leader's first tty: its controlling terminal
		if (s < 0) {
			perror("open slave");
			_exit(1);
		}
		ioctl(s, TIOCSCTTY, 0);
		dup2(s, 0), dup2(s, 1), dup2(s, 2);
		close(s), close(m);
		execvp(argv[1], argv + 1);
		perror("exec");
		_exit(127);
	}
	if (tcgetattr(0, &saved) == 0) {
		struct termios r = saved;
		cfmakeraw(&r);
		tcsetattr(0, TCSANOW, &r);
		raw = 1;
		atexit(restore_tty);
	}
	char buf[4096];
	for (;;) {
		struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = m, .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[0].revents & POLLIN) {
			ssize_t n = read(0, buf, sizeof buf);
			if (n <= 0)
				break;
			write(m, buf, n);
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n = read(m, buf, sizeof buf);
			if (n <= 0)
				break; // EIO: the slave side is closed
			write(1, buf, n);
		}
	}
	int st;
	waitpid(child, &st, 0);
	return 0;
}
