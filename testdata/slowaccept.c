// slowaccept: a TCP server on 127.0.0.1 that accepts only every 300 ms, so
// that connections wait in its accept queue. Each accepted connection gets
// "hello N"; on SIGUSR1 every connection gets "ping".
//
// It prints "listening PORT", then "accepted N" after each round.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "testprog.h"

static volatile sig_atomic_t usr1;
static void on_usr1(int s) { (void)s; usr1 = 1; }

int main(void) {
	signal(SIGUSR1, on_usr1);
	signal(SIGPIPE, SIG_IGN);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof a;
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 16) || getsockname(l, (struct sockaddr *)&a, &len))
		return say("FAIL listen %d\n", errno), 1;
	say("listening %d\n", ntohs(a.sin_port));
	int conns[64], n = 0;
	for (;;) {
		nap(300);
		int c;
		while (n < 64 && (c = accept4(l, NULL, NULL, 0)) >= 0) {
			char msg[32];
			int k = snprintf(msg, sizeof msg, "hello %d\n", n);
			if (write(c, msg, k) != k)
				say("FAIL write hello %d\n", errno);
			conns[n++] = c;
		}
		say("accepted %d\n", n);
		if (usr1) {
			usr1 = 0;
			for (int i = 0; i < n; i++)
				if (write(conns[i], "ping\n", 5) != 5)
					say("FAIL ping %d: %d\n", i, errno);
			say("pinged %d\n", n);
		}
	}
}
