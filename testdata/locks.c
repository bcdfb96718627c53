// locks: a tree holding every kind of file lock, for checkpoint tests.
//
//   locks DIR            the full tree (below)
//   locks DIR lease      only a read lease on DIR/lease, whose break signal
//                        (SIGUSR2) is blocked: a lease break stays pending
//   locks DIR devnull    only a flock on /dev/null
//
// The parent P:
//   fd 3: DIR/flock, flock(LOCK_EX); the child A inherits this description
//   fd 4: DIR/posix, POSIX read lock on bytes 0-9, write lock on 20-EOF
//   fd 5: DIR/ofd, OFD write lock on bytes 5-9
//   fd 6: DIR/lease (read-only), a read lease, F_SETSIG SIGUSR2
//   fd 7: DIR/gone, flock(LOCK_SH), then the file is unlinked
//   fd 9: DIR/wlease, a write lease
// The child A: fd 8: DIR/posix2, POSIX write lock on 100-199, read lock on
//   300-399 (its own locks, in its own process).
// The waiter W: its own open of DIR/posix, fcntl(F_SETLKW) for a write lock
//   on byte 0 (blocked by P's read lock); then prints "W got posix".
// The waiter F: its own open of DIR/flock, flock(LOCK_SH) (blocked by P's
//   LOCK_EX); then prints "F got flock".
//
// Lines: "pids P A W F" once all locks are taken and the waiters wait,
// then "alive ROLE N" every 50 ms from P and A.
// SIGUSR1 to P or A: it checks from inside that each of its locks is held
// by its own description ("check ok ROLE" or "check FAIL ...").
// SIGHUP to P: it releases the POSIX read lock and the flock (the waiters
// go on).
// A lease break sends SIGUSR2 to P: it prints "lease broken SIG" and gives
// the lease up.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "testprog.h"

static const char *dir;
static const char *role = "P";
static volatile sig_atomic_t usr1, hup, lease_sig;

static void on_usr1(int sig) { (void)sig; usr1 = 1; }
static void on_hup(int sig) { (void)sig; hup = 1; }
static void on_lease(int sig, siginfo_t *si, void *uc) {
	(void)si;
	(void)uc;
	lease_sig = sig;
}

static int open_in(const char *name, int flags) {
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, flags | O_CREAT, 0644);
	if (fd < 0) {
		say("locks FAIL open %s: %s\n", path, strerror(errno));
		exit(1);
	}
	return fd;
}

// at places fd at number want.
static void at(int fd, int want) {
	if (fd != want) {
		if (dup2(fd, want) < 0)
			exit(1);
		close(fd);
	}
}

static void setlk(int fd, int cmd, short type, off_t start, off_t len) {
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
	if (fcntl(fd, cmd, &fl) < 0) {
		say("locks FAIL %s fcntl(%d) type %d %ld+%ld: %s\n", role, cmd, type, (long)start, (long)len, strerror(errno));
		exit(1);
	}
}

// conflict returns the type of a lock that would block a write lock on
// byte off through fd (F_UNLCK if none), with its pid.
static short conflict(int fd, int cmd, off_t off, pid_t *pid) {
	struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = off, .l_len = 1};
	if (fcntl(fd, cmd, &fl) < 0)
		return -1;
	if (pid)
		*pid = fl.l_pid;
	return fl.l_type;
}

// check proves from inside that the locks belong to this process's own
// descriptions: its own fds do not conflict with them, a fresh open does.
static void check(void) {
	char why[200] = "";
	if (strcmp(role, "P") == 0) {
		int fresh = open_in("flock", O_RDWR);
		if (flock(3, LOCK_EX | LOCK_NB) != 0)
			snprintf(why, sizeof why, "flock on its own fd 3: %s", strerror(errno));
		else if (flock(fresh, LOCK_SH | LOCK_NB) == 0)
			snprintf(why, sizeof why, "a fresh open of flock is not blocked");
		close(fresh);
		fresh = open_in("ofd", O_RDWR);
		if (!why[0] && conflict(5, F_OFD_GETLK, 5, NULL) != F_UNLCK)
			snprintf(why, sizeof why, "its own OFD lock conflicts with fd 5");
		else if (!why[0] && conflict(fresh, F_OFD_GETLK, 5, NULL) != F_WRLCK)
			snprintf(why, sizeof why, "no OFD write lock on ofd byte 5 seen from a fresh open");
		close(fresh);
		if (!why[0] && fcntl(6, F_GETLEASE) != F_RDLCK)
			snprintf(why, sizeof why, "F_GETLEASE on fd 6 is %d, want F_RDLCK", fcntl(6, F_GETLEASE));
		if (!why[0] && fcntl(6, F_GETSIG) != SIGUSR2)
			snprintf(why, sizeof why, "F_GETSIG on fd 6 is %d, want SIGUSR2", fcntl(6, F_GETSIG));
		if (!why[0] && flock(7, LOCK_SH | LOCK_NB) != 0)
			snprintf(why, sizeof why, "flock on the deleted file's fd 7: %s", strerror(errno));
	} else {
		// The flock belongs to the description A shares with P.
		if (flock(3, LOCK_EX | LOCK_NB) != 0)
			snprintf(why, sizeof why, "flock on the inherited fd 3: %s", strerror(errno));
	}
	if (why[0])
		say("check FAIL %s: %s\n", role, why);
	else
		say("check ok %s\n", role);
}

static void loop(void) {
	for (long n = 0;; n++) {
		if (n % 10 == 0)
			say("alive %s %ld\n", role, n / 10);
		nap(5);
		if (usr1) {
			usr1 = 0;
			check();
		}
		if (hup) {
			hup = 0;
			setlk(4, F_SETLK, F_UNLCK, 0, 10);
			flock(3, LOCK_UN);
			say("released\n");
		}
		if (lease_sig) {
			say("lease broken %d\n", (int)lease_sig);
			lease_sig = 0;
			fcntl(6, F_SETLEASE, F_UNLCK);
		}
	}
}

static void handlers(void) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_hup;
	sigaction(SIGHUP, &sa, NULL);
	sa.sa_sigaction = on_lease;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGUSR2, &sa, NULL);
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	dir = argv[1];
	handlers();
	if (argc > 2 && strcmp(argv[2], "devnull") == 0) {
		int fd = open("/dev/null", O_RDONLY);
		if (fd < 0 || flock(fd, LOCK_EX) < 0) {
			say("locks FAIL flock /dev/null: %s\n", strerror(errno));
			return 1;
		}
		say("flock held %d\n", fd);
		for (;;)
			pause();
	}
	if (argc > 2 && strcmp(argv[2], "lease") == 0) {
		sigset_t set;
		sigemptyset(&set);
		sigaddset(&set, SIGUSR2);
		sigprocmask(SIG_BLOCK, &set, NULL);
		at(open_in("lease", O_RDONLY), 6);
		if (fcntl(6, F_SETSIG, SIGUSR2) < 0 || fcntl(6, F_SETLEASE, F_RDLCK) < 0) {
			say("locks FAIL lease: %s\n", strerror(errno));
			return 1;
		}
		say("lease held %d\n", getpid());
		for (;;)
			pause();
	}

	at(open_in("flock", O_RDWR), 3);
	if (flock(3, LOCK_EX) < 0)
		return 1;
	at(open_in("posix", O_RDWR), 4);
	setlk(4, F_SETLK, F_RDLCK, 0, 10);
	setlk(4, F_SETLK, F_WRLCK, 20, 0);
	at(open_in("ofd", O_RDWR), 5);
	setlk(5, F_OFD_SETLK, F_WRLCK, 5, 5);
	at(open_in("lease", O_RDONLY), 6);
	if (fcntl(6, F_SETSIG, SIGUSR2) < 0 || fcntl(6, F_SETLEASE, F_RDLCK) < 0) {
		say("locks FAIL lease: %s\n", strerror(errno));
		return 1;
	}
	at(open_in("wlease", O_RDWR), 9);
	if (fcntl(9, F_SETLEASE, F_WRLCK) < 0) {
		say("locks FAIL write lease: %s\n", strerror(errno));
		return 1;
	}
	at(open_in("gone", O_RDWR), 7);
	if (flock(7, LOCK_SH) < 0)
		return 1;
	char gone[4096];
	snprintf(gone, sizeof gone, "%s/gone", dir);
	unlink(gone);

	int ready[2];
	if (pipe(ready) < 0)
		return 1;
	pid_t a = fork();
	if (a == 0) {
		role = "A";
		close(ready[0]);
		close(4), close(5), close(6), close(7), close(9);
		at(open_in("posix2", O_RDWR), 8);
		setlk(8, F_SETLK, F_WRLCK, 100, 100);
		setlk(8, F_SETLK, F_RDLCK, 300, 100);
		close(ready[1]);
		loop();
	}
	char c;
	close(ready[1]);
	if (read(ready[0], &c, 1) != 0) // A closed its end: its locks are taken
		return 1;
	close(ready[0]);
	pid_t w = fork();
	if (w == 0) {
		role = "W";
		for (int fd = 3; fd <= 9; fd++)
			close(fd);
		int fd = open_in("posix", O_RDWR);
		setlk(fd, F_SETLKW, F_WRLCK, 0, 1);
		say("W got posix\n");
		for (;;)
			pause();
	}
	pid_t f = fork();
	if (f == 0) {
		role = "F";
		for (int fd = 3; fd <= 9; fd++)
			close(fd);
		int fd = open_in("flock", O_RDWR);
		if (flock(fd, LOCK_SH) < 0)
			say("locks FAIL F flock: %s\n", strerror(errno));
		say("F got flock\n");
		for (;;)
			pause();
	}
	// Wait until both waiters wait (their requests show in /proc/locks).
	for (int i = 0; i < 2000; i++) {
		FILE *pl = fopen("/proc/locks", "r");
		char line[256];
		int seen = 0;
		while (pl && fgets(line, sizeof line, pl)) {
			char want[32];
			snprintf(want, sizeof want, " %d ", w);
			if (strstr(line, "->") && strstr(line, want))
				seen |= 1;
			snprintf(want, sizeof want, " %d ", f);
			if (strstr(line, "->") && strstr(line, want))
				seen |= 2;
		}
		if (pl)
			fclose(pl);
		if (seen == 3)
			break;
		nap(5);
	}
	say("pids %d %d %d %d\n", getpid(), a, w, f);
	loop();
}
