// memfd: memfd objects and copy-on-write memory between a parent and its
// child.
//
//   memfd DIR
//
// Before forking, the parent makes:
//  - "shared-m1": 64 KiB, sealed F_SEAL_SHRINK|F_SEAL_GROW, mapped
//    MAP_SHARED read-write and kept as fd 10 (both inherited by the child);
//  - "fdonly-m2": MFD_NOEXEC_SEAL, 10000 bytes written, offset 1234, sealed
//    F_SEAL_WRITE|F_SEAL_SEAL, held only as fd 11 (close-on-exec);
//  - "private-m3": made without MFD_ALLOW_SEALING, 2 pages, mapped
//    MAP_PRIVATE with page 1 written privately, its fd closed;
//  - "ro-m4": sealed F_SEAL_FUTURE_WRITE, then mapped MAP_SHARED PROT_READ
//    (that mapping can never become writable), its fd closed;
//  - a MAP_SHARED|MAP_ANONYMOUS area of 2 pages (named "/dev/zero (deleted)");
//  - DIR/del.dat, 2 pages, mapped MAP_SHARED, kept as fd 12 and unlinked;
//  - a private anonymous area of 16 pages with a pattern.
// After the fork the child changes pages 8-15 of the private area (its
// copy), and each writes its own counter word into shared-m1. Each prints
// "ROLE N OTHER" every 20 ms; the parent first prints "pids PARENT CHILD".
//
// SIGUSR1 to either: it checks names (readlink of /proc/self/fd and
// /proc/self/maps), seals, sizes, modes, offsets, contents, that the
// mapping and the fd of shared-m1 are one object (a write through the fd
// shows in the mapping) and that the other's counter moves, and prints
// "memfd ok ROLE" or a FAIL line.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testprog.h"

#ifndef F_SEAL_FUTURE_WRITE
#define F_SEAL_FUTURE_WRITE 0x0010
#endif
#ifndef F_SEAL_EXEC
#define F_SEAL_EXEC 0x0020
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif

#define PG 4096
#define M1 (64 << 10)
#define M2 10000
#define PRIV (16 * PG)

static volatile sig_atomic_t usr1;
static void on_usr1(int s) { (void)s; usr1 = 1; }

static volatile uint64_t *m1, *mine;
static char *m3, *m4, *priv, *za, *del;
static int child;

static char pat(long i, int tag) { return (char)(i * 7 + tag * 31 + (i >> 12)); }

static int bad(const char *role, const char *what) {
	say("FAIL %s %s: %s\n", role, what, strerror(errno));
	return 1;
}

static int fdname(int fd, const char *want) {
	char p[64], got[256];
	snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, got, sizeof got - 1);
	if (n < 0)
		return 0;
	got[n] = 0;
	return strcmp(got, want) == 0;
}

// mapname tells whether the area at a is named want in /proc/self/maps.
static int mapname(void *a, const char *want) {
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int ok = 0;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long s;
		if (sscanf(line, "%lx-", &s) == 1 && s == (uintptr_t)a) {
			ok = strstr(line, want) != NULL;
			break;
		}
	}
	if (f)
		fclose(f);
	return ok;
}

static int check(const char *role) {
	errno = 0;
	// shared-m1: fd 10 and the mapping, in both processes.
	if (!fdname(10, "/memfd:shared-m1 (deleted)") || !mapname((void *)m1, "/memfd:shared-m1 (deleted)"))
		return bad(role, "shared-m1 name");
	if (fcntl(10, F_GET_SEALS) != (F_SEAL_SHRINK | F_SEAL_GROW))
		return bad(role, "shared-m1 seals");
	struct stat st;
	if (fstat(10, &st) || st.st_size != M1)
		return bad(role, "shared-m1 size");
	for (long i = 2; i < M1 / 8 - 1; i++)
		if (m1[i] != (uint64_t)i * 3)
			return bad(role, "shared-m1 content");
	// A write through the fd shows in the mapping: one object.
	uint64_t v = (uint64_t)getpid() << 8 | 0x5a;
	if (pwrite(10, &v, 8, M1 - 8) != 8 || m1[M1 / 8 - 1] != v)
		return bad(role, "shared-m1 fd and mapping are not one object");
	// The other's counter moves.
	volatile uint64_t *other = &m1[child == 0 ? 0 : 1];
	uint64_t before = *other;
	for (int i = 0; i < 100 && *other == before; i++) {
		(*mine)++; // the other may be waiting for us, too
		nap(10);
	}
	if (*other == before)
		return bad(role, "shared-m1 not shared: the other's counter stands still");
	// private-m3: page 0 the object's, page 1 our own.
	if (!mapname(m3, "/memfd:private-m3 (deleted)"))
		return bad(role, "private-m3 name");
	for (long i = 0; i < PG; i++)
		if (m3[i] != pat(i, 3) || m3[PG + i] != pat(i, 4))
			return bad(role, "private-m3 content");
	// ro-m4: read-only for good.
	if (!mapname(m4, "/memfd:ro-m4 (deleted)") || m4[100] != 'R')
		return bad(role, "ro-m4 name or content");
	if (mprotect(m4, PG, PROT_READ | PROT_WRITE) == 0)
		return bad(role, "ro-m4 could be made writable");
	// The unlinked file: its fd and its mapping are one file.
	if (del[10] != 'D' || pwrite(12, &v, 8, 4096) != 8 || *(uint64_t *)(del + 4096) != v)
		return bad(role, "deleted file: fd and shared mapping are not one file");
	// MAP_SHARED|MAP_ANONYMOUS memory is no memfd: it is named as it was.
	if (!mapname(za, "/dev/zero (deleted)") || za[5000] != 'Z')
		return bad(role, "shared anonymous area name or content");
	// Copy-on-write area: the child changed pages 8-15.
	for (long i = 0; i < PRIV; i++) {
		int tag = child == 0 && i >= 8 * PG ? 6 : 5;
		if (priv[i] != pat(i, tag))
			return bad(role, "copy-on-write area content");
	}
	if (child != 0) {
		// fdonly-m2, the parent's only.
		if (!fdname(11, "/memfd:fdonly-m2 (deleted)"))
			return bad(role, "fdonly-m2 name");
		int seals = fcntl(11, F_GET_SEALS);
		if (seals != (F_SEAL_WRITE | F_SEAL_SEAL | F_SEAL_EXEC)) {
			say("FAIL %s fdonly-m2 seals %#x\n", role, seals);
			return 1;
		}
		if (fstat(11, &st) || st.st_size != M2 || (st.st_mode & 07777) != 0666)
			return bad(role, "fdonly-m2 size or mode");
		if (lseek(11, 0, SEEK_CUR) != 1234 || fcntl(11, F_GETFD) != FD_CLOEXEC || (fcntl(11, F_GETFL) & O_ACCMODE) != O_RDWR)
			return bad(role, "fdonly-m2 offset or flags");
		char b[M2];
		if (pread(11, b, M2, 0) != M2)
			return bad(role, "fdonly-m2 read");
		for (long i = 0; i < M2; i++)
			if (b[i] != pat(i, 2))
				return bad(role, "fdonly-m2 content");
		if (write(11, "x", 1) != -1 || errno != EPERM)
			return bad(role, "fdonly-m2 can be written");
	}
	say("memfd ok %s\n", role);
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	char path[4096];
	snprintf(path, sizeof path, "%s/del.dat", argv[1]);
	int dfd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (dfd < 0 || dup2(dfd, 12) != 12 || ftruncate(12, 2 * PG))
		return bad("setup", "del.dat");
	close(dfd);
	del = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, 12, 0);
	if (del == MAP_FAILED || unlink(path))
		return bad("setup", "del.dat map");
	del[10] = 'D';
	int fd = memfd_create("shared-m1", MFD_ALLOW_SEALING);
	if (fd < 0 || dup2(fd, 10) != 10 || ftruncate(10, M1))
		return bad("setup", "m1");
	close(fd);
	m1 = mmap(NULL, M1, PROT_READ | PROT_WRITE, MAP_SHARED, 10, 0);
	if (m1 == MAP_FAILED || fcntl(10, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW))
		return bad("setup", "m1 map");
	for (long i = 2; i < M1 / 8; i++)
		m1[i] = i * 3;

	fd = memfd_create("fdonly-m2", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_NOEXEC_SEAL);
	if (fd < 0 || dup3(fd, 11, O_CLOEXEC) != 11)
		return bad("setup", "m2");
	close(fd);
	char b[M2];
	for (long i = 0; i < M2; i++)
		b[i] = pat(i, 2);
	if (write(11, b, M2) != M2 || lseek(11, 1234, SEEK_SET) != 1234 || fcntl(11, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SEAL))
		return bad("setup", "m2 fill");

	fd = memfd_create("private-m3", 0);
	char pg[PG];
	for (long i = 0; i < PG; i++)
		pg[i] = pat(i, 3);
	if (fd < 0 || write(fd, pg, PG) != PG || write(fd, pg, PG) != PG)
		return bad("setup", "m3");
	m3 = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (m3 == MAP_FAILED)
		return bad("setup", "m3 map");
	close(fd);
	for (long i = 0; i < PG; i++)
		m3[PG + i] = pat(i, 4);

	fd = memfd_create("ro-m4", MFD_ALLOW_SEALING);
	memset(pg, 'R', PG);
	if (fd < 0 || write(fd, pg, PG) != PG || fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE))
		return bad("setup", "m4");
	m4 = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	if (m4 == MAP_FAILED)
		return bad("setup", "m4 map");
	close(fd);

	za = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (za == MAP_FAILED)
		return bad("setup", "shared anonymous");
	za[5000] = 'Z';
	priv = mmap(NULL, PRIV, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (long i = 0; i < PRIV; i++)
		priv[i] = pat(i, 5);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	pid_t parent = getpid();
	child = fork();
	if (child < 0)
		return 1;
	const char *role = child == 0 ? "child" : "parent";
	if (child == 0) {
		close(11);
		for (long i = 8 * PG; i < PRIV; i++)
			priv[i] = pat(i, 6);
	} else {
		say("pids %d %d\n", parent, child);
	}
	mine = &m1[child == 0 ? 1 : 0];
	for (long n = 0;; n++) {
		(*mine)++;
		if (usr1) {
			usr1 = 0;
			check(role);
		}
		if (n % 4 == 0)
			say("%s %lu %lu\n", role, (unsigned long)*mine, (unsigned long)m1[child == 0 ? 0 : 1]);
		nap(5);
	}
}
