// memdetails: memory areas with kernel-held state beyond their pages.
//
//   memdetails DIR
//
// It maps areas with madvise flags (DONTFORK, DONTDUMP, HUGEPAGE, MERGEABLE;
// WIPEONFORK, NOHUGEPAGE), mlock'ed and mlock2(MLOCK_ONFAULT)'ed areas, an
// area with guard regions (MADV_GUARD_INSTALL), an mseal'ed area, a
// MAP_NORESERVE area, a file
// opened O_RDWR mapped MAP_SHARED PROT_READ (mprotect may make it
// writable), a file opened O_RDONLY mapped MAP_SHARED PROT_READ (it may
// not), a MAP_PRIVATE PROT_WRITE mapping of a read-only file with one page
// written, and sets prctl(PR_SET_MEMORY_MERGE), prctl(PR_SET_THP_DISABLE)
// and mlockall(MCL_FUTURE|MCL_ONFAULT). Then it prints "ready" and ticks.
//
// SIGUSR1: it checks all of that on itself (smaps VmFlags per area,
// pagemap guard bits, faults, fork behaviour, mprotect, prctl) and prints
// "ok NAME" per item, then "check done", or "FAIL NAME: why".
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testprog.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif

#define PG 4096
#define NA 8 // pages per area

static char *adv, *wof, *lck, *lof, *grd, *sld, *plain, *nrs, *rwf, *rof, *prv, *fgd;
static char rwpath[4096], ropath[4096];
static volatile sig_atomic_t usr1;
static sigjmp_buf jb;
static int fails;

static void on_usr1(int s) { (void)s; usr1 = 1; }
static void on_segv(int s) { (void)s; siglongjmp(jb, 1); }

static char pat(char *base, long i) { return (char)((uintptr_t)base / PG * 7 + i * 13 + 1); }

static void fill(char *a, long n) {
	for (long i = 0; i < n; i++)
		a[i] = pat(a, i);
}

static int same(char *a, long from, long to) {
	for (long i = from; i < to; i++)
		if (a[i] != pat(a, i))
			return 0;
	return 1;
}

static void fail(const char *what, const char *why) {
	say("FAIL %s: %s\n", what, why);
	fails++;
}

static char *area(int prot, int flags, int fd) {
	char *a = mmap(NULL, NA * PG, prot, flags, fd, 0);
	if (a == MAP_FAILED) {
		say("FAIL mmap: %s\n", strerror(errno));
		exit(1);
	}
	return a;
}

// vmflags returns the VmFlags line of the area that starts at a.
static int vmflags(char *a, char *out, size_t n) {
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	int in = 0;
	out[0] = 0;
	while (f && fgets(line, sizeof line, f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, ' ') > strchr(line, '-')) {
			in = s == (uintptr_t)a;
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(out, n, "%s", line + 8);
			break;
		}
	}
	if (f)
		fclose(f);
	return out[0] != 0;
}

static int hasflag(const char *flags, const char *fl) {
	char want[8];
	snprintf(want, sizeof want, " %s ", fl);
	return strstr(flags, want) != NULL;
}

// flags checks that the area at a has every flag of yes and none of no.
static void flags(const char *what, char *a, const char *yes, const char *no) {
	char fl[256], buf[64];
	if (!vmflags(a, fl, sizeof fl)) {
		fail(what, "area not found in smaps");
		return;
	}
	char tmp[64];
	snprintf(tmp, sizeof tmp, "%s", yes);
	for (char *t = strtok(tmp, " "); t; t = strtok(NULL, " "))
		if (!hasflag(fl, t)) {
			snprintf(buf, sizeof buf, "no %s in VmFlags:%.40s", t, fl);
			fail(what, buf);
			return;
		}
	snprintf(tmp, sizeof tmp, "%s", no);
	for (char *t = strtok(tmp, " "); t; t = strtok(NULL, " "))
		if (hasflag(fl, t)) {
			snprintf(buf, sizeof buf, "%s in VmFlags:%.40s", t, fl);
			fail(what, buf);
			return;
		}
	say("ok %s\n", what);
}

static int faults(volatile char *p) {
	if (sigsetjmp(jb, 1))
		return 1;
	(void)*p;
	return 0;
}

static void check(void) {
	fails = 0;
	flags("advice", adv, "dc dd hg mg", "wf nh lo");
	flags("wipeonfork", wof, "wf nh", "dc dd hg lo");
	flags("plain", plain, "", "dc dd wf hg nh lo gu sl");
	flags("mlock", lck, "lo", "lf");
	flags("mlock-onfault", lof, "lo lf", "");
	flags("mseal", sld, "sl", "");
	flags("noreserve", nrs, "nr", "lo");
	if (!same(adv, 0, NA * PG) || !same(wof, 0, NA * PG) || !same(lck, 0, NA * PG) || !same(sld, 0, PG))
		fail("content", "pattern differs");
	else
		say("ok content\n");

	// Fork: a DONTFORK area is not in the child, a WIPEONFORK one is zero.
	pid_t c = fork();
	if (c == 0) {
		char fl[256];
		int bad = vmflags(adv, fl, sizeof fl) ? 1 : 0;
		for (long i = 0; i < NA * PG; i++)
			if (wof[i] != 0)
				bad |= 2;
		_exit(bad);
	}
	int ws;
	waitpid(c, &ws, 0);
	if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
		fail("fork", WIFEXITED(ws) && (WEXITSTATUS(ws) & 1) ? "DONTFORK area in the child" : "WIPEONFORK area not wiped in the child");
	else
		say("ok fork\n");

	// Guard regions at pages 2-3: marked in pagemap (bit 58), they fault;
	// the other pages hold their content.
	int pm = open("/proc/self/pagemap", O_RDONLY);
	int gbad = 0;
	for (int i = 0; i < NA; i++) {
		uint64_t e = 0;
		pread(pm, &e, 8, ((uintptr_t)grd / PG + i) * 8);
		int g = (e >> 58) & 1;
		if (g != (i == 2 || i == 3))
			gbad = 1;
	}
	close(pm);
	if (gbad)
		fail("guard", "pagemap guard bits are not on pages 2 and 3 only");
	else if (!faults(grd + 2 * PG) || !faults(grd + 3 * PG + 100) || faults(grd + 4 * PG))
		fail("guard", "guard pages do not fault, or others do");
	else if (!same(grd, 0, 2 * PG) || !same(grd, 4 * PG, NA * PG))
		fail("guard", "content around the guard differs");
	else
		say("ok guard\n");

	// A guard region in a file mapping (page 1 of the read-only file).
	{
		int pm2 = open("/proc/self/pagemap", O_RDONLY);
		uint64_t e0 = 0, e1 = 0;
		pread(pm2, &e0, 8, ((uintptr_t)fgd / PG) * 8);
		pread(pm2, &e1, 8, ((uintptr_t)fgd / PG + 1) * 8);
		close(pm2);
		if ((e0 >> 58 & 1) || !(e1 >> 58 & 1) || fgd[5] != 'r' || !faults(fgd + PG))
			fail("file-guard", "no guard on page 1 of the file mapping, or one on page 0");
		else
			say("ok file-guard\n");
	}
	// mseal: the area cannot be unmapped.
	if (munmap(sld, PG) == 0 || errno != EPERM)
		fail("mseal", "munmap of the sealed area did not fail with EPERM");
	else
		say("ok mseal-munmap\n");

	// File mappings: O_RDWR file mapped PROT_READ may become writable.
	if (mprotect(rwf, PG, PROT_READ | PROT_WRITE) != 0) {
		fail("rw-file", strerror(errno));
	} else {
		rwf[10] = 'W';
		int fd = open(rwpath, O_RDONLY);
		char b = 0;
		pread(fd, &b, 1, 10);
		close(fd);
		mprotect(rwf, PG, PROT_READ);
		if (b != 'W')
			fail("rw-file", "write through the mapping did not reach the file");
		else
			say("ok rw-file\n");
	}
	if (mprotect(rof, PG, PROT_READ | PROT_WRITE) == 0 || errno != EACCES)
		fail("ro-file", "a shared mapping of a read-only file could be made writable");
	else
		say("ok ro-file\n");
	// Private writable mapping of a read-only file: the written page is
	// ours, the rest is the file's.
	{
		int fd = open(ropath, O_RDONLY);
		char b[2] = {0};
		pread(fd, b, 1, PG + 5);
		close(fd);
		if (prv[PG + 5] != 'P' || b[0] != 'r' || prv[5] != 'r')
			fail("private-file", "content differs");
		else
			say("ok private-file\n");
	}
	if (prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) != 1)
		fail("merge-any", "PR_GET_MEMORY_MERGE is not 1");
	else
		say("ok merge-any\n");
	if (prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) != 1)
		fail("thp-disable", "PR_GET_THP_DISABLE is not 1");
	else
		say("ok thp-disable\n");
	// mlockall(MCL_FUTURE|MCL_ONFAULT): a new area is locked on fault.
	char *n = mmap(NULL, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	flags("lock-future", n, "lo lf", "");
	munmap(n, PG);
	if (fails == 0)
		say("check done\n");
}

int main(int argc, char **argv) {
	if (argc < 2)
		return 2;
	int rw = PROT_READ | PROT_WRITE, pa = MAP_PRIVATE | MAP_ANONYMOUS;
	// A page between areas keeps the kernel from merging them.
	mmap(NULL, PG, PROT_NONE, pa, -1, 0);
	adv = area(rw, pa, -1);
	mmap(NULL, PG, PROT_NONE, pa, -1, 0);
	wof = area(rw, pa, -1);
	mmap(NULL, PG, PROT_NONE, pa, -1, 0);
	lck = area(rw, pa, -1);
	mmap(NULL, PG, PROT_NONE, pa, -1, 0);
	lof = area(rw, pa, -1);
	mmap(NULL, PG, PROT_NONE, pa, -1, 0);
	grd = area(rw, pa, -1);
	mmap(NULL, PG, PROT_NONE, pa, -1, 0);
	sld = area(PROT_READ | PROT_WRITE, pa, -1);
	mmap(NULL, PG, PROT_NONE, pa, -1, 0);
	plain = area(rw, pa, -1);
	mmap(NULL, PG, PROT_NONE, pa, -1, 0);
	nrs = area(rw, pa | MAP_NORESERVE, -1);
	nrs[0] = 1;
	fill(adv, NA * PG);
	fill(wof, NA * PG);
	fill(lck, NA * PG);
	fill(grd, NA * PG);
	fill(sld, PG);
	fill(plain, NA * PG);
	if (madvise(adv, NA * PG, MADV_DONTFORK) || madvise(adv, NA * PG, MADV_DONTDUMP) ||
	    madvise(adv, NA * PG, MADV_HUGEPAGE) || madvise(adv, NA * PG, MADV_MERGEABLE) ||
	    madvise(wof, NA * PG, MADV_WIPEONFORK) || madvise(wof, NA * PG, MADV_NOHUGEPAGE)) {
		say("FAIL madvise: %s\n", strerror(errno));
		return 1;
	}
	if (mlock(lck, NA * PG) || syscall(SYS_mlock2, lof, NA * PG, 1 /* MLOCK_ONFAULT */)) {
		say("FAIL mlock: %s\n", strerror(errno));
		return 1;
	}
	lof[0] = 1;
	if (madvise(grd + 2 * PG, 2 * PG, MADV_GUARD_INSTALL)) {
		say("FAIL guard: %s\n", strerror(errno));
		return 1;
	}
	// Only part of the area sealed would split it; seal all of it.
	munmap(sld + PG, (NA - 1) * PG);
	if (syscall(462 /* mseal */, sld, PG, 0)) {
		say("FAIL mseal: %s\n", strerror(errno));
		return 1;
	}

	snprintf(rwpath, sizeof rwpath, "%s/rw.dat", argv[1]);
	snprintf(ropath, sizeof ropath, "%s/ro.dat", argv[1]);
	char page[2 * PG];
	memset(page, 'r', sizeof page);
	int fd = open(rwpath, O_RDWR | O_CREAT | O_TRUNC, 0644);
	int fd2 = open(ropath, O_RDWR | O_CREAT | O_TRUNC, 0444);
	if (fd < 0 || fd2 < 0 || write(fd, page, sizeof page) != sizeof page || write(fd2, page, sizeof page) != sizeof page) {
		say("FAIL files: %s\n", strerror(errno));
		return 1;
	}
	close(fd2);
	fd2 = open(ropath, O_RDONLY);
	rwf = mmap(NULL, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
	rof = mmap(NULL, 2 * PG, PROT_READ, MAP_SHARED, fd2, 0);
	prv = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd2, 0);
	if (rwf == MAP_FAILED || rof == MAP_FAILED || prv == MAP_FAILED) {
		say("FAIL file mmap: %s\n", strerror(errno));
		return 1;
	}
	prv[PG + 5] = 'P';
	fgd = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd2, 0);
	if (fgd == MAP_FAILED || madvise(fgd + PG, PG, MADV_GUARD_INSTALL)) {
		say("FAIL file guard: %s\n", strerror(errno));
		return 1;
	}
	close(fd);
	close(fd2);

	if (prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) || prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)) {
		say("FAIL prctl: %s\n", strerror(errno));
		return 1;
	}
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_segv;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	if (mlockall(MCL_FUTURE | MCL_ONFAULT)) {
		say("FAIL mlockall: %s\n", strerror(errno));
		return 1;
	}
	say("ready\n");
	for (long n = 0;; n++) {
		if (usr1) {
			usr1 = 0;
			check();
		}
		if (n % 10 == 0)
			say("tick %ld\n", n / 10);
		nap(20);
	}
}
