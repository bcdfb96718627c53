// events: event descriptors and descriptor details that must come back
// exactly after a restore. Every mode prints "ready ..." once set up and
// "alive N" every 20ms; SIGUSR1 makes it check its state and print
// "MODE ok" or "FAIL ...". Every mode also checks close-on-exec of the fds
// it opened, some with it and some without.
//
//   events inotify DIR   watches DIR (IN_CREATE) and DIR/f (IN_MODIFY|IN_ONESHOT)
//                        with wds 2 and 4 (1 and 3 were removed), blocking
//                        instance; on SIGUSR1 creates DIR/new and writes DIR/f
//                        and expects the events with those wds, and no other.
//   events inotify-queued DIR   as inotify, but leaves an event unread
//   events pidfd         pidfds of a paused child (a), of itself (PIDFD_NONBLOCK),
//                        of a child reaped at once (r), of a zombie child (z); on SIGUSR1: self and a
//                        not readable, r and z readable, z reaped by waitid(P_PIDFD) with
//                        its status 5, pidfd_send_signal(a, SIGTERM)
//                        and waitid(P_PIDFD, a) reports the child killed by it.
//   events epoll         one epoll set, shared with a child, watching eventfds:
//                        EPOLLET (data 1), EPOLLONESHOT already fired (2),
//                        EPOLLEXCLUSIVE (3), one whose fd was dup'd and closed
//                        (4), one whose fd was dup2'd over by another eventfd
//                        (5), an epoll set at a higher fd (8), a pipe only the child
//                        holds (9), a closed fd just above all open ones (10);
//                        on SIGUSR1 each event arrives as the kernel had
//                        it, and the child adds a watch (7) that the parent's
//                        epoll_wait reports: one set, not two.
//   events sigio         a pipe with F_SETOWN(self), F_SETSIG(SIGRTMIN+2),
//                        O_ASYNC, and one whose owner is a second thread
//                        (F_OWNER_TID), and one owned by the process group it
//                        leads; on SIGUSR1 writes to them and expects
//                        SIGRTMIN+2 with si_fd, the second in that thread.
//   events proc          /proc/self/status open and a dirfd on /proc/CHILD;
//                        on SIGUSR1 both read the restored processes.
//   events fanotify DIR  DIR is a tmpfs of its own: a group (FAN_CLASS_NOTIF)
//                        with an inode mark on DIR/f (FAN_MODIFY), a mount mark
//                        on DIR (FAN_CLOSE_WRITE), a filesystem mark (FAN_ACCESS)
//                        and an ignore mark on DIR/g (FAN_CLOSE_WRITE, surviving
//                        modification); on SIGUSR1 writes f and g, reads h and
//                        expects exactly those events.
//   events aio | fanotify-queued DIR | pidfd-outside | epoll-later | owner-outside |
//          proc-outside   hold what dump must refuse.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "testprog.h"

#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif

static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int s) { (void)s; usr1 = 1; }
static void on_usr2(int s) { (void)s; usr2 = 1; }

static char fail[200];
#define CHECK(c, ...) do { if (!(c) && !fail[0]) snprintf(fail, sizeof fail, __VA_ARGS__); } while (0)

// close-on-exec expectations
static int cfd[32], cwant[32], ncfd;
static void expect_cloexec(int fd, int want) { cfd[ncfd] = fd; cwant[ncfd++] = want; }
static void check_cloexec(void) {
	for (int i = 0; i < ncfd; i++) {
		int fl = fcntl(cfd[i], F_GETFD);
		CHECK(fl >= 0 && !!(fl & FD_CLOEXEC) == cwant[i], "fd %d close-on-exec %d, want %d", cfd[i], fl, cwant[i]);
	}
}

static int pidfd_open(pid_t pid, unsigned flags) { return syscall(SYS_pidfd_open, pid, flags); }

// ---- inotify
static int in_fd;
static int in_wd_dir, in_wd_f;
static char dir[200], fpath[256];

static void setup_inotify(const char *d, int queued) {
	snprintf(dir, sizeof dir, "%s", d);
	snprintf(fpath, sizeof fpath, "%s/f", d);
	close(open(fpath, O_CREAT | O_WRONLY, 0644));
	in_fd = inotify_init1(0); // blocking, no close-on-exec
	expect_cloexec(in_fd, 0);
	int gone = inotify_add_watch(in_fd, fpath, IN_ATTRIB);
	inotify_rm_watch(in_fd, gone);
	in_wd_dir = inotify_add_watch(in_fd, dir, IN_CREATE);
	gone = inotify_add_watch(in_fd, fpath, IN_ATTRIB);
	inotify_rm_watch(in_fd, gone);
	in_wd_f = inotify_add_watch(in_fd, fpath, IN_MODIFY | IN_ONESHOT);
	// read away the IN_IGNORED events of the removed watches
	int fl = fcntl(in_fd, F_GETFL);
	fcntl(in_fd, F_SETFL, fl | O_NONBLOCK);
	char buf[4096];
	while (read(in_fd, buf, sizeof buf) > 0) {}
	fcntl(in_fd, F_SETFL, fl);
	if (queued) {
		char p[300];
		snprintf(p, sizeof p, "%s/queued", dir);
		close(open(p, O_CREAT | O_WRONLY, 0644));
	}
	say("ready wds %d %d\n", in_wd_dir, in_wd_f);
}

static void check_inotify(void) {
	int fl = fcntl(in_fd, F_GETFL);
	CHECK(!(fl & O_NONBLOCK), "inotify became non-blocking");
	char p[300], buf[4096];
	snprintf(p, sizeof p, "%s/new%d", dir, rand());
	close(open(p, O_CREAT | O_WRONLY, 0644));
	int w = open(fpath, O_WRONLY);
	write(w, "x", 1);
	write(w, "y", 1); // IN_ONESHOT: one IN_MODIFY only
	close(w);
	usleep(10000);
	fcntl(in_fd, F_SETFL, fl | O_NONBLOCK);
	int got_create = 0, got_modify = 0, other = 0;
	for (;;) {
		int n = read(in_fd, buf, sizeof buf);
		if (n <= 0)
			break;
		for (char *q = buf; q < buf + n;) {
			struct inotify_event *e = (struct inotify_event *)q;
			if (e->wd == in_wd_dir && (e->mask & IN_CREATE) && e->len && strstr(p, e->name))
				got_create++;
			else if (e->wd == in_wd_f && (e->mask & IN_MODIFY))
				got_modify++;
			else if (e->wd == in_wd_f && (e->mask & IN_IGNORED))
				; // the oneshot watch ends
			else
				{ other++; CHECK(0, "unexpected inotify event wd %d mask %#x", e->wd, e->mask); }
			q += sizeof *e + e->len;
		}
	}
	fcntl(in_fd, F_SETFL, fl);
	CHECK(got_create == 1, "IN_CREATE with wd %d seen %d times", in_wd_dir, got_create);
	CHECK(got_modify == 1, "IN_MODIFY with wd %d seen %d times", in_wd_f, got_modify);
	// The oneshot watch is gone now; add it again for the next round.
	in_wd_f = inotify_add_watch(in_fd, fpath, IN_MODIFY | IN_ONESHOT);
	if (!fail[0])
		say("inotify ok %d\n", in_wd_dir);
}

// ---- pidfd
static int pf_child, pf_self, pf_reaped, pf_zombie;
static pid_t zombie;
static pid_t child;

static void setup_pidfd(void) {
	child = fork();
	if (child == 0) {
		for (;;)
			pause();
	}
	pf_child = pidfd_open(child, 0);
	pf_self = pidfd_open(getpid(), PIDFD_NONBLOCK);
	pid_t r = fork();
	if (r == 0)
		_exit(3);
	pf_reaped = pidfd_open(r, 0);
	waitpid(r, NULL, 0);
	zombie = fork();
	if (zombie == 0)
		_exit(5);
	pf_zombie = pidfd_open(zombie, 0);
	siginfo_t zi;
	waitid(P_PID, zombie, &zi, WEXITED | WNOWAIT); // a zombie now, not reaped
	// pidfds are always close-on-exec; one copy without it
	int nc = fcntl(pf_child, F_DUPFD, 20);
	close(pf_child);
	pf_child = nc;
	expect_cloexec(pf_child, 0);
	expect_cloexec(pf_self, 1);
	say("ready pidfd child %d zombie %d\n", child, zombie);
}

static int readable(int fd) {
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

static void check_pidfd(void) {
	CHECK(!readable(pf_self), "pidfd of itself readable");
	CHECK(!readable(pf_child), "pidfd of the live child readable");
	CHECK(readable(pf_reaped), "pidfd of the reaped child not readable");
	CHECK(fcntl(pf_self, F_GETFL) & O_NONBLOCK, "PIDFD_NONBLOCK lost");
	CHECK(readable(pf_zombie), "pidfd of the zombie not readable");
	siginfo_t zi = {0};
	CHECK(waitid(P_PIDFD, pf_zombie, &zi, WEXITED) == 0 && zi.si_pid == zombie && zi.si_code == CLD_EXITED && zi.si_status == 5,
	      "waitid(P_PIDFD) on the zombie: errno %d pid %d code %d status %d", errno, zi.si_pid, zi.si_code, zi.si_status);
	CHECK(syscall(SYS_pidfd_send_signal, pf_reaped, 0, NULL, 0) == -1 && errno == ESRCH, "signal to the reaped pidfd: errno %d", errno);
	CHECK(syscall(SYS_pidfd_send_signal, pf_child, SIGTERM, NULL, 0) == 0, "pidfd_send_signal: errno %d", errno);
	siginfo_t si = {0};
	CHECK(waitid(P_PIDFD, pf_child, &si, WEXITED) == 0, "waitid(P_PIDFD): errno %d", errno);
	CHECK(si.si_pid == child && si.si_code == CLD_KILLED && si.si_status == SIGTERM, "waitid: pid %d code %d status %d", si.si_pid, si.si_code, si.si_status);
	if (!fail[0])
		say("pidfd ok %d\n", child);
}

// ---- epoll
static int ep, e1, e2, e3, e4, e5, e6, k5, n4, inner, e8, pp[2], d9, n9;
static int epchild_pipe[2];

static void add(int fd, uint32_t ev, uint64_t data) {
	struct epoll_event e = {.events = ev, .data.u64 = data};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) != 0)
		say("FAIL epoll_ctl add %d: %d\n", fd, errno), exit(1);
}
static void poke(int fd) { uint64_t one = 1; write(fd, &one, 8); }
static void drain(int fd) { uint64_t v; read(fd, &v, 8); }

// waitfor returns the data of the one event epoll reports in ms, or -1 for
// none; more than one is a failure.
static long waitfor(int ms) {
	struct epoll_event ev[8];
	int n = epoll_wait(ep, ev, 8, ms);
	if (n <= 0)
		return -1;
	CHECK(n == 1, "%d events at once (first %lu, second %lu)", n, (unsigned long)ev[0].data.u64, (unsigned long)ev[1].data.u64);
	return ev[0].data.u64;
}

static void epoll_child(void) {
	signal(SIGUSR2, on_usr2);
	for (;;) {
		if (usr2) {
			usr2 = 0;
			int e7 = eventfd(0, EFD_NONBLOCK);
			add(e7, EPOLLIN, 7);
			poke(e7);
			write(epchild_pipe[1], "a", 1);
		}
		nap(10);
	}
}

static void setup_epoll(void) {
	ep = epoll_create1(0);
	expect_cloexec(ep, 0);
	e1 = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	e2 = eventfd(0, EFD_NONBLOCK);
	e3 = eventfd(0, EFD_NONBLOCK);
	e4 = eventfd(0, EFD_NONBLOCK);
	e5 = eventfd(0, EFD_NONBLOCK);
	e6 = eventfd(0, EFD_NONBLOCK);
	expect_cloexec(e1, 1);
	expect_cloexec(e2, 0);
	add(e1, EPOLLIN | EPOLLET, 1);
	add(e2, EPOLLIN | EPOLLONESHOT, 2);
	poke(e2);
	if (waitfor(100) != 2)
		say("FAIL oneshot did not fire before the dump\n"), exit(1);
	drain(e2);
	add(e3, EPOLLIN | EPOLLEXCLUSIVE, 3);
	add(e4, EPOLLIN, 4);
	n4 = e4;
	e4 = dup(e4); // the watch stays on the file, under fd n4, now closed
	close(n4);
	add(e5, EPOLLIN, 5);
	k5 = e5;
	e5 = dup(e5);
	dup3(e6, k5, O_CLOEXEC); // fd k5 is e6 now; the watch is on e5's file
	expect_cloexec(k5, 1);
	// an epoll set watched by ep, at a higher fd number than ep
	inner = epoll_create1(EPOLL_CLOEXEC);
	e8 = eventfd(0, EFD_NONBLOCK);
	struct epoll_event ie = {.events = EPOLLIN, .data.u64 = 80};
	epoll_ctl(inner, EPOLL_CTL_ADD, e8, &ie);
	add(inner, EPOLLIN, 8);
	expect_cloexec(inner, 1);
	pipe(epchild_pipe);
	// a pipe read end that, once forked, only the child holds
	pipe(pp);
	add(pp[0], EPOLLIN | EPOLLONESHOT, 9);
	child = fork();
	if (child == 0)
		epoll_child();
	close(pp[0]);
	// a watch whose closed fd is one above the highest open one
	int filler = eventfd(0, 0);
	int e9 = eventfd(0, EFD_NONBLOCK);
	add(e9, EPOLLIN, 10);
	close(filler);
	d9 = dup(e9);
	close(e9);
	n9 = e9;
	say("ready epoll child %d closed %d reused %d\n", child, n4, k5);
}

static void check_epoll(void) {
	CHECK(waitfor(0) == -1, "an event before any write");
	poke(e1);
	CHECK(waitfor(100) == 1, "EPOLLET: no event for a write");
	CHECK(waitfor(0) == -1, "EPOLLET: a second event without a write");
	drain(e1);
	poke(e2);
	CHECK(waitfor(20) == -1, "EPOLLONESHOT fired again without EPOLL_CTL_MOD");
	struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 2};
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, e2, &ev) == 0, "EPOLL_CTL_MOD of the oneshot watch: errno %d", errno);
	CHECK(waitfor(100) == 2, "oneshot watch re-armed: no event");
	drain(e2);
	ev.events = EPOLLIN;
	CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, e3, &ev) == -1 && errno == EINVAL, "EPOLLEXCLUSIVE lost (MOD gave %d)", errno);
	poke(e3);
	CHECK(waitfor(100) == 3, "EPOLLEXCLUSIVE watch: no event");
	drain(e3);
	poke(e4);
	CHECK(waitfor(100) == 4, "the watch of the closed fd %d: no event", n4);
	drain(e4);
	CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, n4, NULL) == -1 && (errno == EBADF || errno == ENOENT), "DEL of closed fd %d: errno %d", n4, errno);
	poke(k5); // e6 now: not watched
	CHECK(waitfor(20) == -1, "an event for fd %d, which is another file now", k5);
	drain(k5);
	poke(e5);
	CHECK(waitfor(100) == 5, "the watch of the reused fd %d: no event", k5);
	drain(e5);
	CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, k5, NULL) == -1 && errno == ENOENT, "DEL of reused fd %d: errno %d", k5, errno);
	poke(e8);
	CHECK(waitfor(100) == 8, "the epoll set inside the set: no event");
	struct epoll_event iev;
	CHECK(epoll_wait(inner, &iev, 1, 0) == 1 && iev.data.u64 == 80, "the inner set: no event");
	drain(e8);
	poke(d9);
	CHECK(waitfor(100) == 10, "the watch of the closed highest fd %d: no event", n9);
	drain(d9);
	write(pp[1], "z", 1);
	CHECK(waitfor(100) == 9, "the pipe only the child holds: no event");
	kill(child, SIGUSR2);
	char c;
	read(epchild_pipe[0], &c, 1);
	CHECK(waitfor(1000) == 7, "the child's watch does not show in the parent's set");
	if (!fail[0])
		say("epoll ok\n");
}

// ---- sigio
static int sp[2], tp[2], gp[2];
static volatile sig_atomic_t got_fd = -1, got_code, got_tid, tgot_fd = -1, ggot_fd = -1;
static volatile pid_t worker_tid;
static void on_io(int s, siginfo_t *si, void *u) {
	(void)s;
	(void)u;
	if (si->si_fd == gp[0]) {
		ggot_fd = si->si_fd;
		return;
	}
	if (si->si_fd == tp[0]) {
		got_tid = gettid();
		tgot_fd = si->si_fd;
		return;
	}
	got_fd = si->si_fd;
	got_code = si->si_code;
}

static void *worker(void *a) {
	(void)a;
	worker_tid = gettid();
	for (;;)
		pause();
	return NULL;
}

static void setup_sigio(void) {
	pipe2(sp, O_CLOEXEC);
	expect_cloexec(sp[0], 1);
	struct sigaction sa = {.sa_sigaction = on_io, .sa_flags = SA_SIGINFO | SA_RESTART};
	sigaction(SIGRTMIN + 2, &sa, NULL);
	fcntl(sp[0], F_SETOWN, getpid());
	fcntl(sp[0], F_SETSIG, SIGRTMIN + 2);
	fcntl(sp[0], F_SETFL, O_ASYNC | O_NONBLOCK);
	// a second pipe whose SIGIO goes to one thread (F_OWNER_TID)
	pthread_t th;
	pthread_create(&th, NULL, worker, NULL);
	while (!worker_tid)
		nap(1);
	pipe(tp);
	struct f_owner_ex ox = {.type = F_OWNER_TID, .pid = worker_tid};
	fcntl(tp[0], F_SETOWN_EX, &ox);
	fcntl(tp[0], F_SETSIG, SIGRTMIN + 2);
	fcntl(tp[0], F_SETFL, O_ASYNC | O_NONBLOCK);
	// a third whose owner is the process group it leads (F_OWNER_PGRP)
	setpgid(0, 0);
	pipe(gp);
	fcntl(gp[0], F_SETOWN, -getpid());
	fcntl(gp[0], F_SETSIG, SIGRTMIN + 2);
	fcntl(gp[0], F_SETFL, O_ASYNC | O_NONBLOCK);
	say("ready sigio\n");
}

static void check_sigio(void) {
	CHECK(fcntl(sp[0], F_GETOWN) == getpid(), "F_GETOWN %d", fcntl(sp[0], F_GETOWN));
	CHECK(fcntl(sp[0], F_GETSIG) == SIGRTMIN + 2, "F_GETSIG %d", fcntl(sp[0], F_GETSIG));
	CHECK(fcntl(sp[0], F_GETFL) & O_ASYNC, "O_ASYNC lost");
	got_fd = -1;
	write(sp[1], "x", 1);
	for (int i = 0; i < 100 && got_fd < 0; i++)
		nap(5);
	CHECK(got_fd == sp[0] && got_code == POLL_IN, "no SIGRTMIN+2 for fd %d (si_fd %d code %d)", sp[0], got_fd, got_code);
	char b[16];
	read(sp[0], b, sizeof b);
	struct f_owner_ex ox = {0};
	fcntl(tp[0], F_GETOWN_EX, &ox);
	CHECK(ox.type == F_OWNER_TID && ox.pid == worker_tid, "thread owner: type %d pid %d, want tid %d", ox.type, ox.pid, worker_tid);
	tgot_fd = -1;
	write(tp[1], "x", 1);
	for (int i = 0; i < 100 && tgot_fd < 0; i++)
		nap(5);
	CHECK(tgot_fd == tp[0] && got_tid == worker_tid, "SIGIO for fd %d went to thread %d (si_fd %d), want thread %d", tp[0], got_tid, tgot_fd, worker_tid);
	read(tp[0], b, sizeof b);
	CHECK(fcntl(gp[0], F_GETOWN) == -getpid(), "group owner %d, want %d", fcntl(gp[0], F_GETOWN), -getpid());
	ggot_fd = -1;
	write(gp[1], "x", 1);
	for (int i = 0; i < 100 && ggot_fd < 0; i++)
		nap(5);
	CHECK(ggot_fd == gp[0], "no SIGRTMIN+2 for fd %d owned by the process group", gp[0]);
	read(gp[0], b, sizeof b);
	if (!fail[0])
		say("sigio ok\n");
}

// ---- fanotify
static int fa_fd;

static void touch(const char *name, const char *what) {
	char p[300];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	int fd = open(p, what[0] == 'w' ? O_WRONLY | O_CREAT : O_RDONLY, 0644);
	if (what[0] == 'w')
		write(fd, "x", 1);
	else {
		char c;
		read(fd, &c, 1);
	}
	close(fd);
}

static void setup_fanotify(const char *d, int queued) {
	snprintf(dir, sizeof dir, "%s", d);
	char p[300];
	touch("f", "w"), touch("g", "w"), touch("h", "w");
	fa_fd = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
	expect_cloexec(fa_fd, 0);
	snprintf(p, sizeof p, "%s/f", dir);
	int ok = fa_fd >= 0 && fanotify_mark(fa_fd, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, p) == 0;
	ok = ok && fanotify_mark(fa_fd, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_CLOSE_WRITE, AT_FDCWD, dir) == 0;
	ok = ok && fanotify_mark(fa_fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_ACCESS, AT_FDCWD, dir) == 0;
	snprintf(p, sizeof p, "%s/g", dir);
	ok = ok && fanotify_mark(fa_fd, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_CLOSE_WRITE, AT_FDCWD, p) == 0;
	if (!ok)
		say("FAIL fanotify setup: %d\n", errno), exit(1);
	if (queued)
		touch("h", "r");
	say("ready fanotify\n");
}

static void check_fanotify(void) {
	touch("f", "w");
	touch("g", "w");
	touch("h", "r");
	usleep(10000);
	unsigned mf = 0, mg = 0, mh = 0;
	char buf[8192];
	for (;;) {
		int n = read(fa_fd, buf, sizeof buf);
		if (n <= 0)
			break;
		for (struct fanotify_event_metadata *m = (void *)buf; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			char l[64], t[160];
			snprintf(l, sizeof l, "/proc/self/fd/%d", m->fd);
			int k = readlink(l, t, sizeof t - 1);
			t[k > 0 ? k : 0] = 0;
			close(m->fd);
			const char *base = strrchr(t, '/');
			base = base ? base + 1 : t;
			if (!strcmp(base, "f"))
				mf |= m->mask;
			else if (!strcmp(base, "g"))
				mg |= m->mask;
			else if (!strcmp(base, "h"))
				mh |= m->mask;
			else
				CHECK(0, "fanotify event %#llx for %s", (unsigned long long)m->mask, t);
		}
	}
	CHECK(mf == (FAN_MODIFY | FAN_CLOSE_WRITE), "events for f %#x, want MODIFY|CLOSE_WRITE", mf);
	CHECK(mg == 0, "events for g %#x, want none (ignore mark)", mg);
	CHECK(mh == FAN_ACCESS, "events for h %#x, want ACCESS (filesystem mark)", mh);
	CHECK(fcntl(fa_fd, F_GETFL) & O_NONBLOCK, "FAN_NONBLOCK lost");
	if (!fail[0])
		say("fanotify ok\n");
}

// ---- proc
static int st_fd, dir_fd;

static void setup_proc(void) {
	child = fork();
	if (child == 0) {
		for (;;)
			pause();
	}
	st_fd = open("/proc/self/status", O_RDONLY);
	char p[64];
	snprintf(p, sizeof p, "/proc/%d", child);
	dir_fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	expect_cloexec(st_fd, 0);
	expect_cloexec(dir_fd, 1);
	say("ready proc child %d\n", child);
}

static void check_proc(void) {
	char buf[4096], want[64];
	int n = pread(st_fd, buf, sizeof buf - 1, 0);
	buf[n > 0 ? n : 0] = 0;
	snprintf(want, sizeof want, "\nPid:\t%d\n", getpid());
	CHECK(n > 0 && strstr(buf, want), "/proc/self/status fd reads no %s (n %d errno %d)", want + 1, n, errno);
	int s = openat(dir_fd, "stat", O_RDONLY);
	n = s < 0 ? -1 : read(s, buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	close(s);
	snprintf(want, sizeof want, "%d (events) S", child);
	CHECK(n > 0 && strncmp(buf, want, strlen(want)) == 0, "/proc/%d dirfd: stat reads %.40s (errno %d)", child, buf, errno);
	if (!fail[0])
		say("proc ok\n");
}

int main(int argc, char **argv) {
	signal(SIGUSR1, on_usr1);
	const char *mode = argc > 1 ? argv[1] : "";
	void (*check)(void) = NULL;
	int once = 0; // the check changes what it checks: one round only
	if (!strcmp(mode, "inotify") || !strcmp(mode, "inotify-queued")) {
		setup_inotify(argv[2], !strcmp(mode, "inotify-queued"));
		check = check_inotify;
	} else if (!strcmp(mode, "pidfd")) {
		setup_pidfd();
		check = check_pidfd, once = 1;
	} else if (!strcmp(mode, "epoll")) {
		setup_epoll();
		check = check_epoll, once = 1;
	} else if (!strcmp(mode, "sigio")) {
		setup_sigio();
		check = check_sigio;
	} else if (!strcmp(mode, "proc")) {
		setup_proc();
		check = check_proc;
	} else if (!strcmp(mode, "aio")) {
		aio_context_t ctx = 0;
		if (syscall(SYS_io_setup, 4, &ctx) != 0)
			return say("FAIL io_setup %d\n", errno), 1;
		say("ready aio\n");
	} else if (!strcmp(mode, "fanotify") || !strcmp(mode, "fanotify-queued")) {
		setup_fanotify(argv[2], !strcmp(mode, "fanotify-queued"));
		check = check_fanotify;
	} else if (!strcmp(mode, "epoll-later")) {
		// an eventfd watched by the parent's set that only the child holds
		ep = epoll_create1(0);
		e1 = eventfd(0, 0);
		add(e1, EPOLLIN, 1);
		if (fork() == 0) {
			for (;;)
				pause();
		}
		close(e1);
		say("ready epoll-later\n");
	} else if (!strcmp(mode, "owner-outside")) {
		int p[2];
		pipe(p);
		fcntl(p[0], F_SETOWN, getppid());
		say("ready owner-outside\n");
	} else if (!strcmp(mode, "proc-outside")) {
		if (open("/proc/1/stat", O_RDONLY) < 0)
			return say("FAIL open /proc/1/stat %d\n", errno), 1;
		say("ready proc-outside\n");
	} else if (!strcmp(mode, "pidfd-outside")) {
		if (pidfd_open(getppid(), 0) < 0)
			return say("FAIL pidfd_open %d\n", errno), 1;
		say("ready pidfd-outside\n");
	} else {
		return say("FAIL mode %s\n", mode), 2;
	}
	for (long n = 0;; n++) {
		if (usr1 && check) {
			usr1 = 0;
			fail[0] = 0;
			check_cloexec();
			if (!fail[0])
				check();
			if (fail[0])
				say("FAIL %s\n", fail);
			if (once)
				check = NULL;
		}
		say("alive %ld\n", n);
		nap(20);
	}
}
