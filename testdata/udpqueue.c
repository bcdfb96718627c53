// udpqueue: a UDP socket with datagrams waiting in its queue. argv[1] is
// "4" or "6", argv[2] a file whose appearance tells it to read. It binds a
// receiver and two senders on loopback (one bound, one connected to the
// receiver), prints "ports R S C", queues 24 datagrams of various sizes
// from the senders, prints "queued", waits for the file and then prints
// every datagram it reads: "dgram SEQ LEN from PORT" (content checked;
// FAIL if wrong), then "udp done N".
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include "testprog.h"

static int family;
static socklen_t alen;

static int sock(struct sockaddr_storage *peer) {
	struct sockaddr_storage ss = {0};
	if (family == AF_INET6) {
		struct sockaddr_in6 *a = (void *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
	} else {
		struct sockaddr_in *a = (void *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	}
	int fd = socket(family, SOCK_DGRAM, 0);
	socklen_t len = alen;
	if (fd < 0 || bind(fd, (void *)&ss, alen) < 0 || getsockname(fd, (void *)&ss, &len) < 0) {
		say("FAIL socket: %s\n", strerror(errno));
		_exit(1);
	}
	if (peer)
		*peer = ss;
	return fd;
}

static int port(struct sockaddr_storage *ss) {
	return ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)ss)->sin6_port : ((struct sockaddr_in *)ss)->sin_port);
}

static unsigned char pat(int seq, int i) { return (unsigned char)(seq * 31 + i); }

int main(int argc, char **argv) {
	family = argc > 1 && argv[1][0] == '6' ? AF_INET6 : AF_INET;
	alen = family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	struct sockaddr_storage ra, sa, ca;
	int r = sock(&ra), s = sock(&sa), c = sock(&ca);
	if (connect(c, (void *)&ra, alen) < 0) {
		say("FAIL connect: %s\n", strerror(errno));
		return 1;
	}
	say("ports %d %d %d\n", port(&ra), port(&sa), port(&ca));
	unsigned char buf[65536];
	for (int seq = 0; seq < 24; seq++) {
		int n = 1 + (seq * 997) % 3000;
		buf[0] = seq;
		for (int i = 1; i < n; i++)
			buf[i] = pat(seq, i);
		ssize_t w = seq % 2 ? send(c, buf, n, 0) : sendto(s, buf, n, 0, (void *)&ra, alen);
		if (w != n) {
			say("FAIL send %d: %s\n", seq, strerror(errno));
			return 1;
		}
	}
	say("queued\n");
	while (access(argv[2], F_OK) != 0)
		nap(10);
	int count = 0;
	for (;;) {
		struct sockaddr_storage from;
		socklen_t fl = sizeof from;
		ssize_t n = recvfrom(r, buf, sizeof buf, MSG_DONTWAIT, (void *)&from, &fl);
		if (n < 0)
			break;
		int seq = buf[0];
		for (int i = 1; i < n; i++)
			if (buf[i] != pat(seq, i)) {
				say("FAIL dgram %d byte %d\n", seq, i);
				return 1;
			}
		say("dgram %d %zd from %d\n", seq, n, port(&from));
		count++;
	}
	say("udp done %d\n", count);
	return 0;
}
