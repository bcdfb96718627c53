// sysv: System V IPC objects shared by a parent and its child.
//
//   sysv [partial|lock]
//
// Before forking, the parent makes
//   A: a 64 KiB segment (key KEY), filled with a pattern, attached at
//      0x10000000000 and again at 0x10000100000 (whose second half is then
//      made read-only), owned by uid/gid 65534, mode 0660;
//   B: an 8 KiB private segment attached at 0x10000200000 and marked removed
//      (IPC_RMID) at once;
//   S: a set of 3 semaphores (key KEY+1) with values 5 0 1234;
//   Q: a message queue (key KEY+2) with 3 messages: types 1, 2, 7.
//   D: a 4 KiB segment (key KEY+4), filled and detached: attached by nobody;
//   E: an empty message queue (key KEY+5) nobody sent to or received from.
// After the fork the child attaches C (a 4 KiB segment, key KEY+3, made by
// the parent) read-only at 0x10000300000, takes 2 from semaphore 0 with
// SEM_UNDO (its exit gives them back), and the parent adds 7 to semaphore 2
// with SEM_UNDO: the values are then 3 0 1241. The child counts in word 0
// of A, the parent in word 0 of B (seen through the other's attachment),
// every 5 ms; each prints "ROLE N SEEN" every 50 ms. The first line is
// "ids PARENT CHILD A B C S Q D E".
//
// SIGUSR1 to either: it checks A's pattern through both attachments, C's
// content (and the parent D's, attaching it for the check), that the other's counter moves, the semaphore values and the
// messages (read with MSG_COPY, not taken) and prints "check ok ROLE".
// SIGUSR2 to the child: it exits; the parent then checks that its exit gave
// semaphore 0 its 2 back and prints "undo ok VALUE".
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testprog.h"

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

#define A1 ((void *)0x10000000000ul)
#define A2 ((void *)0x10000100000ul)
#define BA ((void *)0x10000200000ul)
#define CA ((void *)0x10000300000ul)
#define DA ((void *)0x10000400000ul)
#define ASIZE (64 << 10)

static volatile sig_atomic_t usr1, usr2;
static void on_usr1(int s) { (void)s; usr1 = 1; }
static void on_usr2(int s) { (void)s; usr2 = 1; }

static uint64_t pat(uint64_t i) { return i * 0x9E3779B97F4A7C15ull + 3; }

struct msg {
	long type;
	char text[64];
};
static const long types[3] = {1, 2, 7};
static const char *texts[3] = {"first message", "second", "the seventh type"};

static void *attach(int id, void *at, int flags) {
	void *p = shmat(id, at, flags);
	if (p != at) {
		say("FAIL shmat %d at %p: %p %s\n", id, at, p, strerror(errno));
		exit(1);
	}
	return p;
}

static int check(const char *role, int sem, int q, volatile uint64_t *a1, volatile uint64_t *a2,
		 volatile uint64_t *c, volatile uint64_t *mine, volatile uint64_t *other) {
	for (uint64_t i = 1; i < ASIZE / 8; i++)
		if (a1[i] != pat(i) || a2[i] != pat(i)) {
			say("FAIL %s: A word %lu is %lx/%lx\n", role, i, a1[i], a2[i]);
			return 0;
		}
	for (uint64_t i = 0; i < 512; i++)
		if (c[i] != ~pat(i)) {
			say("FAIL %s: C word %lu is %lx\n", role, i, c[i]);
			return 0;
		}
	uint64_t o = *other;
	for (int n = 0; n < 200 && *other == o; n++) {
		(*mine)++; // the other may be checking too
		nap(5);
	}
	if (*other == o) {
		say("FAIL %s: the other's counter stays at %lu\n", role, o);
		return 0;
	}
	unsigned short v[3];
	if (semctl(sem, 0, GETALL, v) != 0 || v[0] != 3 || v[1] != 0 || v[2] != 1241) {
		say("FAIL %s: semaphores %u %u %u (%s)\n", role, v[0], v[1], v[2], strerror(errno));
		return 0;
	}
	for (int i = 0; i < 3; i++) {
		struct msg m;
		ssize_t n = msgrcv(q, &m, sizeof m.text, i, MSG_COPY | IPC_NOWAIT);
		if (n != (ssize_t)strlen(texts[i]) + 1 || m.type != types[i] || strcmp(m.text, texts[i]) != 0) {
			say("FAIL %s: message %d: %zd type %ld %s\n", role, i, n, m.type, n < 0 ? strerror(errno) : "");
			return 0;
		}
	}
	struct msqid_ds ds;
	if (msgctl(q, IPC_STAT, &ds) != 0 || ds.msg_qnum != 3) {
		say("FAIL %s: queue holds %lu messages\n", role, (unsigned long)ds.msg_qnum);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv) {
	key_t key = 0x5c000000 | (getpid() & 0xffff) << 4;
	int a = shmget(key, ASIZE, IPC_CREAT | IPC_EXCL | 0600);
	int b = shmget(IPC_PRIVATE, 8192, IPC_CREAT | 0600);
	int c = shmget(key + 3, 4096, IPC_CREAT | IPC_EXCL | 0644);
	int sem = semget(key + 1, 3, IPC_CREAT | IPC_EXCL | 0600);
	int q = msgget(key + 2, IPC_CREAT | IPC_EXCL | 0620);
	int d = shmget(key + 4, 4096, IPC_CREAT | IPC_EXCL | 0600);
	int e = msgget(key + 5, IPC_CREAT | IPC_EXCL | 0600);
	if (a < 0 || b < 0 || c < 0 || sem < 0 || q < 0 || d < 0 || e < 0) {
		say("FAIL create: %s\n", strerror(errno));
		return 1;
	}
	volatile uint64_t *a1 = attach(a, A1, 0), *a2 = attach(a, A2, 0), *bp = attach(b, BA, 0);
	// The second half of A's second attachment is read-only: two areas.
	if (mprotect((char *)A2 + ASIZE / 2, ASIZE / 2, PROT_READ) != 0) {
		say("FAIL mprotect: %s\n", strerror(errno));
		return 1;
	}
	shmctl(b, IPC_RMID, NULL);
	struct shmid_ds ds;
	shmctl(a, IPC_STAT, &ds);
	ds.shm_perm.uid = ds.shm_perm.gid = 65534;
	ds.shm_perm.mode = 0660;
	shmctl(a, IPC_SET, &ds);
	for (uint64_t i = 1; i < ASIZE / 8; i++)
		a1[i] = pat(i);
	uint64_t *cw = shmat(c, NULL, 0);
	for (uint64_t i = 0; i < 512; i++)
		cw[i] = ~pat(i);
	shmdt(cw);
	cw = shmat(d, NULL, 0);
	for (uint64_t i = 0; i < 512; i++)
		cw[i] = pat(i) ^ 0xd;
	shmdt(cw);
	unsigned short init[3] = {5, 0, 1234};
	semctl(sem, 0, SETALL, init);
	for (int i = 0; i < 3; i++) {
		struct msg m = {types[i], ""};
		strcpy(m.text, texts[i]);
		if (msgsnd(q, &m, strlen(texts[i]) + 1, 0) != 0) {
			say("FAIL msgsnd: %s\n", strerror(errno));
			return 1;
		}
	}

	// sysv partial: half of A's first attachment is unmapped; sysv lock:
	// A is locked in memory (SHM_LOCK). chpox refuses both.
	if (argc > 1 && strcmp(argv[1], "partial") == 0)
		munmap((char *)A1 + ASIZE / 2, ASIZE / 2);
	if (argc > 1 && strcmp(argv[1], "lock") == 0 && shmctl(a, SHM_LOCK, NULL) != 0) {
		say("FAIL SHM_LOCK: %s\n", strerror(errno));
		return 1;
	}

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_usr2;
	sigaction(SIGUSR2, &sa, NULL);

	pid_t parent = getpid();
	pid_t child = fork();
	if (child < 0)
		return 1;
	const char *role = child == 0 ? "child" : "parent";
	volatile uint64_t *cp = child == 0 ? attach(c, CA, SHM_RDONLY) : NULL;
	struct sembuf op = {child == 0 ? 0 : 2, child == 0 ? -2 : 7, SEM_UNDO};
	if (child == 0)
		semop(sem, &op, 1);
	else {
		nap(50); // the child takes first, so no check sees 5
		semop(sem, &op, 1);
		say("ids %d %d %d %d %d %d %d %d %d\n", parent, child, a, b, c, sem, q, d, e);
	}
	volatile uint64_t *mine = child == 0 ? &a1[0] : &bp[0];
	volatile uint64_t *other = child == 0 ? &bp[0] : &a2[0];
	for (long n = 0;; n++) {
		if (usr1) {
			usr1 = 0;
			volatile uint64_t *cc = cp;
			if (!cc) // the parent reads C through a fresh attachment
				cc = attach(c, CA, SHM_RDONLY);
			int ok = check(role, sem, q, a1, a2, cc, mine, other);
			if (ok && !cp) {
				volatile uint64_t *dp = attach(d, DA, SHM_RDONLY);
				for (uint64_t i = 0; i < 512 && ok; i++)
					if (dp[i] != (pat(i) ^ 0xd)) {
						say("FAIL %s: D word %lu is %lx\n", role, i, dp[i]);
						ok = 0;
					}
				shmdt((void *)dp);
			}
			if (ok)
				say("check ok %s\n", role);
			if (!cp)
				shmdt((void *)cc);
		}
		if (usr2 && child == 0)
			_exit(0);
		if (child != 0) {
			int st;
			if (waitpid(child, &st, WNOHANG) == child) {
				int v = semctl(sem, 0, GETVAL);
				say(v == 5 ? "undo ok %d\n" : "FAIL undo: semaphore 0 is %d, want 5\n", v);
			}
		}
		(*mine)++;
		if (n % 10 == 0)
			say("%s %lu %lu\n", role, *mine, *other);
		nap(5);
	}
}
