// unixsock: holds UNIX domain sockets in the states chpox must restore and
// checks them on SIGUSR1, printing "ok NAME" per state, "FAIL NAME: why"
// for a state that is lost, and then "checks done N" (N states ok).
//
//   unixsock DIR           every state below, in one process
//   unixsock dgram PATH    a datagram socket connected to PATH (a server
//                          outside the tree); SIGUSR1 sends "ping N"
//   unixsock stream PATH   a stream socket connected to PATH
//   unixsock inflight      a socketpair with an fd in flight (SCM_RIGHTS)
//
// It prints "ready" once set up and "alive N" every 20ms.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "testprog.h"

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) {
	(void)sig;
	usr1 = 1;
}

static int oks;
static int failed;

static void fail(const char *name, const char *why) {
	say("FAIL %s: %s (errno %d)\n", name, why, errno);
	failed = 1;
}

#define CHECK(name, cond, why)            \
	do {                                  \
		if (!(cond)) {                    \
			fail(name, why);              \
			return;                       \
		}                                 \
	} while (0)

static void die(const char *what) {
	say("setup failed: %s (errno %d)\n", what, errno);
	exit(1);
}

static socklen_t mkaddr(struct sockaddr_un *a, const char *name, int abstract) {
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	if (abstract) {
		strcpy(a->sun_path + 1, name);
		return offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name);
	}
	strcpy(a->sun_path, name);
	return sizeof *a;
}

static int sock(int type) {
	int s = socket(AF_UNIX, type, 0);
	if (s < 0)
		die("socket");
	return s;
}

static void bindto(int s, const char *name, int abstract) {
	struct sockaddr_un a;
	socklen_t n = mkaddr(&a, name, abstract);
	if (bind(s, (struct sockaddr *)&a, n) != 0)
		die(name);
}

static void connectto(int s, const char *name, int abstract) {
	struct sockaddr_un a;
	socklen_t n = mkaddr(&a, name, abstract);
	if (connect(s, (struct sockaddr *)&a, n) != 0)
		die(name);
}

static void put(int s, const char *msg) {
	if (send(s, msg, strlen(msg), MSG_NOSIGNAL) != (ssize_t)strlen(msg))
		die("send");
}

// got reads one message (or what a stream holds) without blocking and
// compares it with want.
static int got(int s, const char *want) {
	char buf[256];
	ssize_t n = recv(s, buf, sizeof buf - 1, MSG_DONTWAIT);
	if (n < 0)
		return 0;
	buf[n] = 0;
	return strcmp(buf, want) == 0;
}

static int empty(int s) {
	char c;
	return recv(s, &c, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN;
}

// name of a socket: path, "@abstract" or "" for none.
static const char *nameof(int s, int peer) {
	static char out[120];
	struct sockaddr_un a;
	socklen_t n = sizeof a;
	memset(&a, 0, sizeof a);
	if ((peer ? getpeername(s, (struct sockaddr *)&a, &n) : getsockname(s, (struct sockaddr *)&a, &n)) != 0)
		return "?";
	if (n <= offsetof(struct sockaddr_un, sun_path))
		return "";
	if (a.sun_path[0] == 0) {
		out[0] = '@';
		memcpy(out + 1, a.sun_path + 1, n - offsetof(struct sockaddr_un, sun_path) - 1);
		out[n - offsetof(struct sockaddr_un, sun_path)] = 0;
		return out;
	}
	strcpy(out, a.sun_path);
	return out;
}

static int opt(int s, int o) {
	int v = -12345;
	socklen_t n = sizeof v;
	getsockopt(s, SOL_SOCKET, o, &v, &n);
	return v;
}

static char dir[80], lpath[120], gpath[120], spath[120], abs_listen[64], abs_sender[64];
static int pa, pb, da, db, qa, qb, lst, c1, s1, c2, c3, g, gs, gabs, ganon, dc, ablst, unb, xw, xr, zr, zw, pc;

static void setup(void) {
	int sv[2];
	snprintf(lpath, sizeof lpath, "%s/listen.sock", dir);
	snprintf(gpath, sizeof gpath, "%s/gone.sock", dir);
	snprintf(spath, sizeof spath, "%s/sender.sock", dir);
	snprintf(abs_listen, sizeof abs_listen, "chpox-test-listen-%d", getpid());
	snprintf(abs_sender, sizeof abs_sender, "chpox-test-sender-%d", getpid());

	// socketpairs with unread data both ways, message boundaries kept.
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair");
	pa = sv[0], pb = sv[1];
	put(pa, "hello-b");
	put(pb, "hello-a");
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv))
		die("socketpair");
	da = sv[0], db = sv[1];
	put(da, "d1"), put(da, "dd2"), put(da, "ddd3"), put(db, "x");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv))
		die("socketpair");
	qa = sv[0], qb = sv[1];
	put(qa, "q1"), put(qa, "qq2"), put(qb, "y");

	// options
	int v = 65536;
	setsockopt(pa, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
	v = 32768;
	setsockopt(pa, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
	v = 1;
	setsockopt(pa, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v);
	setsockopt(pa, SOL_SOCKET, SO_REUSEADDR, &v, sizeof v);
	struct linger l = {1, 5};
	setsockopt(pa, SOL_SOCKET, SO_LINGER, &l, sizeof l);
	struct timeval tv = {1, 500000};
	setsockopt(pa, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	tv.tv_sec = 2, tv.tv_usec = 500000;
	setsockopt(pa, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	fcntl(pa, F_SETFL, fcntl(pa, F_GETFL) | O_NONBLOCK);
	v = 3;
	setsockopt(pb, SOL_SOCKET, SO_PEEK_OFF, &v, sizeof v);

	// a path listener (mode 0640, backlog 3) with an accepted connection
	// holding data both ways and two connections waiting.
	lst = sock(SOCK_STREAM);
	bindto(lst, lpath, 0);
	chmod(lpath, 0640);
	if (listen(lst, 3))
		die("listen");
	c1 = sock(SOCK_STREAM);
	connectto(c1, lpath, 0);
	if ((s1 = accept(lst, NULL, NULL)) < 0)
		die("accept");
	put(c1, "c1->s1");
	put(s1, "s1->c1");
	c2 = sock(SOCK_STREAM);
	connectto(c2, lpath, 0);
	c3 = sock(SOCK_STREAM);
	connectto(c3, lpath, 0);

	// an unconnected datagram socket bound to a path that is then
	// removed, holding messages from three senders: a path, an abstract
	// name, an unnamed socket; and one datagram socket connected to it.
	g = sock(SOCK_DGRAM);
	bindto(g, gpath, 0);
	gs = sock(SOCK_DGRAM);
	bindto(gs, spath, 0);
	gabs = sock(SOCK_DGRAM);
	bindto(gabs, abs_sender, 1);
	ganon = sock(SOCK_DGRAM);
	struct sockaddr_un a;
	socklen_t n = mkaddr(&a, gpath, 0);
	if (sendto(gs, "from-path", 9, 0, (struct sockaddr *)&a, n) != 9 ||
	    sendto(gabs, "from-abstract", 13, 0, (struct sockaddr *)&a, n) != 13 ||
	    sendto(ganon, "from-unnamed", 12, 0, (struct sockaddr *)&a, n) != 12)
		die("sendto");
	dc = sock(SOCK_DGRAM);
	connectto(dc, gpath, 0);
	unlink(gpath);

	// an abstract listener, an unbound socket with options.
	ablst = sock(SOCK_SEQPACKET);
	bindto(ablst, abs_listen, 1);
	if (listen(ablst, 5))
		die("listen");
	unb = sock(SOCK_STREAM);
	v = 1;
	setsockopt(unb, SOL_SOCKET, SO_PASSCRED, &v, sizeof v);
	setsockopt(unb, SOL_SOCKET, SO_PASSSEC, &v, sizeof v);

	// shutdown: x shut for writing after "last"; z shut for reading.
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair");
	xw = sv[0], xr = sv[1];
	put(xw, "last");
	shutdown(xw, SHUT_WR);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair");
	zr = sv[0], zw = sv[1];
	shutdown(zr, SHUT_RD);

	// a stream whose peer was closed after writing "bye".
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
		die("socketpair");
	pc = sv[0];
	put(sv[1], "bye");
	close(sv[1]);
}

static void ok(const char *name) {
	say("ok %s\n", name);
	oks++;
}

static void check_pairs(void) {
	// pb: the process's peek offset 3 is kept.
	char buf[64];
	CHECK("stream-pair", opt(pb, SO_PEEK_OFF) == 3, "SO_PEEK_OFF of pb");
	ssize_t n = recv(pb, buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
	CHECK("stream-pair", n == 4 && memcmp(buf, "lo-b", 4) == 0, "peek from offset 3");
	int off = -1;
	setsockopt(pb, SOL_SOCKET, SO_PEEK_OFF, &off, sizeof off);
	CHECK("stream-pair", got(pb, "hello-b") && empty(pb), "pb reads hello-b");
	CHECK("stream-pair", got(pa, "hello-a") && empty(pa), "pa reads hello-a");
	put(pa, "again");
	CHECK("stream-pair", got(pb, "again"), "still connected");
	ok("stream-pair");

	CHECK("dgram-pair", got(db, "d1") && got(db, "dd2") && got(db, "ddd3") && empty(db), "db reads d1 dd2 ddd3");
	CHECK("dgram-pair", got(da, "x") && empty(da), "da reads x");
	ok("dgram-pair");
	CHECK("seqpacket-pair", got(qb, "q1") && got(qb, "qq2") && empty(qb), "qb reads q1 qq2");
	CHECK("seqpacket-pair", got(qa, "y") && empty(qa), "qa reads y");
	ok("seqpacket-pair");
}

static void check_options(void) {
	struct linger l;
	socklen_t n = sizeof l;
	struct timeval tv;
	socklen_t tn = sizeof tv;
	CHECK("options", opt(pa, SO_SNDBUF) == 131072 && opt(pa, SO_RCVBUF) == 65536, "buffer sizes");
	CHECK("options", opt(pa, SO_KEEPALIVE) == 1 && opt(pa, SO_REUSEADDR) == 1, "keepalive, reuseaddr");
	CHECK("options", getsockopt(pa, SOL_SOCKET, SO_LINGER, &l, &n) == 0 && l.l_onoff == 1 && l.l_linger == 5, "linger");
	CHECK("options", getsockopt(pa, SOL_SOCKET, SO_RCVTIMEO, &tv, &tn) == 0 && tv.tv_sec == 1 && tv.tv_usec == 500000, "rcvtimeo");
	CHECK("options", getsockopt(pa, SOL_SOCKET, SO_SNDTIMEO, &tv, &tn) == 0 && tv.tv_sec == 2 && tv.tv_usec == 500000, "sndtimeo");
	CHECK("options", (fcntl(pa, F_GETFL) & O_NONBLOCK) && !(fcntl(pb, F_GETFL) & O_NONBLOCK), "O_NONBLOCK");
	CHECK("options", opt(unb, SO_PASSCRED) == 1 && opt(unb, SO_PASSSEC) == 1 && opt(pa, SO_PASSCRED) == 0, "passcred, passsec");
	CHECK("options", strcmp(nameof(unb, 0), "") == 0 && opt(unb, SO_TYPE) == SOCK_STREAM, "unbound stream socket");
	ok("options");
}

static void check_listener(void) {
	struct stat st;
	CHECK("listener", stat(lpath, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 07777) == 0640, "socket file, mode 0640");
	CHECK("listener", strcmp(nameof(lst, 0), lpath) == 0 && opt(lst, SO_ACCEPTCONN) == 1, "bound and listening");
	CHECK("listener", strcmp(nameof(s1, 0), lpath) == 0 && strcmp(nameof(c1, 1), lpath) == 0, "accepted connection's names");
	CHECK("listener", got(s1, "c1->s1") && got(c1, "s1->c1"), "accepted connection's data");
	// The waiting connections come in their order.
	put(c2, "c2"), put(c3, "c3");
	int a2 = accept(lst, NULL, NULL), a3 = accept(lst, NULL, NULL);
	CHECK("listener", a2 >= 0 && a3 >= 0 && got(a2, "c2") && got(a3, "c3"), "waiting connections accepted in order");
	close(a2), close(a3);
	// Backlog 3: four more connections wait, the fifth finds it full.
	int more[5], k;
	for (k = 0; k < 5; k++) {
		more[k] = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
		struct sockaddr_un a;
		socklen_t n = mkaddr(&a, lpath, 0);
		if (connect(more[k], (struct sockaddr *)&a, n) != 0)
			break;
	}
	for (int i = 0; i <= k && i < 5; i++)
		close(more[i]);
	for (int i = 0; i < k; i++)
		close(accept(lst, NULL, NULL));
	CHECK("listener", k == 4, "backlog 3");
	ok("listener");
	CHECK("abstract", strcmp(nameof(ablst, 0), "") != 0 && nameof(ablst, 0)[0] == '@' && strcmp(nameof(ablst, 0) + 1, abs_listen) == 0, "abstract name");
	CHECK("abstract", opt(ablst, SO_ACCEPTCONN) == 1 && opt(ablst, SO_TYPE) == SOCK_SEQPACKET, "listening seqpacket");
	ok("abstract");
}

static int from(int s, const char *want, const char *sender) {
	char buf[64];
	struct sockaddr_un a;
	socklen_t n = sizeof a;
	memset(&a, 0, sizeof a);
	ssize_t k = recvfrom(s, buf, sizeof buf - 1, MSG_DONTWAIT, (struct sockaddr *)&a, &n);
	if (k < 0)
		return 0;
	buf[k] = 0;
	char name[120] = "";
	if (n > offsetof(struct sockaddr_un, sun_path)) {
		if (a.sun_path[0] == 0)
			snprintf(name, sizeof name, "@%s", a.sun_path + 1);
		else
			snprintf(name, sizeof name, "%s", a.sun_path);
	}
	if (strcmp(buf, want) || strcmp(name, sender))
		say("got %s from '%s'\n", buf, name);
	return strcmp(buf, want) == 0 && strcmp(name, sender) == 0;
}

static void check_dgram(void) {
	struct stat st;
	char absname[80];
	snprintf(absname, sizeof absname, "@%s", abs_sender);
	CHECK("deleted-path", stat(gpath, &st) != 0 && errno == ENOENT, "the removed path stays removed");
	CHECK("deleted-path", strcmp(nameof(g, 0), gpath) == 0, "bound name kept");
	CHECK("senders", from(g, "from-path", spath) && from(g, "from-abstract", absname) && from(g, "from-unnamed", ""), "messages with their senders");
	CHECK("senders", empty(g), "nothing more");
	CHECK("deleted-path", strcmp(nameof(dc, 1), gpath) == 0, "connected socket's peer name");
	put(dc, "via-connect");
	CHECK("deleted-path", from(g, "via-connect", ""), "connected datagram socket reaches it");
	ok("deleted-path");
	ok("senders");
}

static void check_shutdown(void) {
	CHECK("shutdown", got(xr, "last"), "data before the shutdown");
	char c;
	CHECK("shutdown", recv(xr, &c, 1, MSG_DONTWAIT) == 0, "end of file after SHUT_WR");
	CHECK("shutdown", send(xw, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE, "SHUT_WR side cannot write");
	CHECK("shutdown", recv(zr, &c, 1, MSG_DONTWAIT) == 0, "SHUT_RD side reads end of file");
	CHECK("shutdown", send(zw, "x", 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno == EPIPE, "peer of SHUT_RD cannot write");
	put(zr, "z");
	CHECK("shutdown", got(zw, "z"), "SHUT_RD side still writes");
	ok("shutdown");
	CHECK("peer-closed", got(pc, "bye") && recv(pc, &c, 1, MSG_DONTWAIT) == 0, "data, then end of file");
	ok("peer-closed");
}

static void loop(void (*check)(void)) {
	for (long n = 0;; n++) {
		say("alive %ld\n", n);
		nap(20);
		if (usr1) {
			usr1 = 0;
			check();
		}
	}
}

static void check_all(void) {
	oks = 0;
	check_pairs();
	check_options();
	check_listener();
	check_dgram();
	check_shutdown();
	say("checks done %d%s\n", oks, failed ? " with failures" : "");
}

static const char *target;
static int cs;
static int pings;

static void ping(void) {
	char msg[32];
	snprintf(msg, sizeof msg, "ping %d", ++pings);
	if (send(cs, msg, strlen(msg), MSG_NOSIGNAL) < 0)
		fail("ping", "send");
	else
		say("sent %s\n", msg);
}

int main(int argc, char **argv) {
	signal(SIGUSR1, on_usr1);
	if (argc == 3 && (strcmp(argv[1], "dgram") == 0 || strcmp(argv[1], "stream") == 0)) {
		target = argv[2];
		cs = sock(strcmp(argv[1], "dgram") == 0 ? SOCK_DGRAM : SOCK_STREAM);
		connectto(cs, target, 0);
		say("ready\n");
		loop(ping);
	}
	if (argc == 2 && strcmp(argv[1], "inflight") == 0) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			die("socketpair");
		char c = 'f';
		struct iovec iov = {&c, 1};
		char ctl[CMSG_SPACE(sizeof(int))];
		memset(ctl, 0, sizeof ctl);
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl};
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET, cm->cmsg_type = SCM_RIGHTS, cm->cmsg_len = CMSG_LEN(sizeof(int));
		int one = 1;
		memcpy(CMSG_DATA(cm), &one, sizeof one);
		if (sendmsg(sv[0], &m, 0) != 1)
			die("sendmsg");
		say("ready\n");
		loop(check_all);
	}
	if (argc != 2) {
		say("usage: unixsock DIR | dgram PATH | stream PATH | inflight\n");
		return 2;
	}
	snprintf(dir, sizeof dir, "%s", argv[1]);
	setup();
	say("ready\n");
	loop(check_all);
}
