// netlink: a NETLINK_ROUTE socket bound to its port id, in the link group,
// with options set. On SIGUSR1 it checks that all of it is still so and that
// the kernel still answers it: "netlink ok PORT" or "FAIL ...".
//
//   netlink          as above
//   netlink queued   also leaves a kernel reply unread on the socket
#define _GNU_SOURCE
#include <errno.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "testprog.h"

static volatile sig_atomic_t usr1;
static void on_usr1(int s) { (void)s; usr1 = 1; }

static int s;
static unsigned port;

static int getlink(void) {
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = {.h = {.nlmsg_len = sizeof req, .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST, .nlmsg_seq = 7},
	         .i = {.ifi_family = AF_UNSPEC, .ifi_index = 1}};
	return send(s, &req, sizeof req, 0) == sizeof req ? 0 : -1;
}

static const char *check(void) {
	struct sockaddr_nl a;
	socklen_t l = sizeof a;
	if (getsockname(s, (struct sockaddr *)&a, &l) != 0 || a.nl_pid != port)
		return "port id";
	unsigned groups[4] = {0};
	l = sizeof groups;
	if (getsockopt(s, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, groups, &l) != 0 || !(groups[0] & (1u << (RTNLGRP_LINK - 1))))
		return "group membership";
	int v = 0;
	l = sizeof v;
	if (getsockopt(s, SOL_NETLINK, NETLINK_EXT_ACK, &v, &l) != 0 || v != 1)
		return "NETLINK_EXT_ACK";
	if (getlink() != 0)
		return "send";
	char buf[8192];
	int n = recv(s, buf, sizeof buf, 0);
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	if (n < (int)sizeof *h || h->nlmsg_type != RTM_NEWLINK || h->nlmsg_seq != 7)
		return "reply";
	return NULL;
}

int main(int argc, char **argv) {
	signal(SIGUSR1, on_usr1);
	s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	struct sockaddr_nl a = {.nl_family = AF_NETLINK};
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0)
		return say("FAIL socket: %d\n", errno), 1;
	socklen_t l = sizeof a;
	getsockname(s, (struct sockaddr *)&a, &l);
	port = a.nl_pid;
	int g = RTNLGRP_LINK, one = 1;
	if (setsockopt(s, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof g) != 0 ||
	    setsockopt(s, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof one) != 0)
		return say("FAIL setsockopt: %d\n", errno), 1;
	if (argc > 1 && strcmp(argv[1], "queued") == 0 && getlink() != 0)
		return say("FAIL send: %d\n", errno), 1;
	say("ready port %u\n", port);
	for (long n = 0;; n++) {
		if (usr1) {
			usr1 = 0;
			const char *bad = check();
			if (bad)
				say("FAIL %s (errno %d)\n", bad, errno);
			else
				say("netlink ok %u\n", port);
		}
		say("alive %ld\n", n);
		nap(20);
	}
}
