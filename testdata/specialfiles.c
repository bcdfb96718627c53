// specialfiles: holds files that are gone or special, and proves on
// SIGUSR1 that each is as it was, printing "special ok" or
// "special FAIL <what>".
//
//   specialfiles DIR [nodev]
//
//   cwd       DIR/cwd, removed: the working directory is a deleted one,
//             mode 0510, owner 1234:1235 (root)
//   held      DIR/held, a directory held open and removed
//   fifo      DIR/fifo, O_RDWR, "fifo-bytes" written and not read, unlinked
//   dev       DIR/null, mknod c 1 3 (not with nodev), O_WRONLY, unlinked
//   sparse    DIR/sparse, 4 MiB with data at 0 and at 1 MiB only, offset
//             1 MiB + 3, unlinked: same size, same holes after restore
//   owned     DIR/owned, O_RDWR, owner 1234:1235 and mode 0404 set after
//             the open (root only; else only the mode), unlinked
//   same      DIR/same, "old" opened, unlinked, then a new DIR/same with
//             "new" that must stay untouched
//   opath     DIR/opath, O_PATH: same inode
//   link      DIR/link -> target-nowhere, O_PATH|O_NOFOLLOW: a symlink
//   viaproc   DIR/viaproc reopened through /proc/self/fd/N, offset 2
//   mapped    DIR/mapped, 8 KiB mapped private (12 KiB: a page beyond its
//             end) and shared, unlinked
//   memfd     memfd "special" holding "memfd-data", offset 2, also mapped
//             shared: a write through the fd shows in the mapping
//   twice     DIR/twice, "0123456789", unlinked, open twice (again through
//             /proc/self/fd) at offsets 3 and 7: still one file
//   orphan    DIR/sub/orphan, "orphan", unlinked, and DIR/sub removed too
//   blk       DIR/blk, mknod b 7 0 (loop0; not with nodev), O_RDONLY, unlinked,
//             and /dev/loop1 O_RDONLY
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "testprog.h"

static volatile sig_atomic_t usr1;
static void on_usr1(int sig) {
	(void)sig;
	usr1 = 1;
}

#define MiB (1L << 20)
static int held, fifo, dev = -1, sparse, owned, same, opath, link_fd, viaproc, viaproc_orig;
static ino_t opath_ino, viaproc_ino;
static char *priv, *shared, *memmap;
static int nodev, root, memfd, blk = -1, loop1 = -1, twice1, twice2, orphan;
static off_t layout[16];
static int nlayout;

#define FAIL(...)                             \
	do {                                  \
		say("special FAIL " __VA_ARGS__); \
		return 0;                     \
	} while (0)

static void die(const char *what) {
	say("setup FAIL %s: %s\n", what, strerror(errno));
	_exit(1);
}

// holes lists the data and hole boundaries of fd from 0 to its size.
static int holes(int fd, off_t *out, int max) {
	struct stat st;
	int n = 0;
	off_t pos = lseek(fd, 0, SEEK_CUR); // SEEK_DATA and SEEK_HOLE move it
	if (fstat(fd, &st) != 0)
		return -1;
	for (off_t off = 0; off < st.st_size && n + 2 <= max;) {
		off_t d = lseek(fd, off, SEEK_DATA);
		if (d < 0)
			break;
		off_t h = lseek(fd, d, SEEK_HOLE);
		out[n++] = d;
		out[n++] = h;
		off = h;
	}
	lseek(fd, pos, SEEK_SET);
	return n;
}

static char path_buf[PATH_MAX];
static const char *at(const char *dir, const char *name) {
	snprintf(path_buf, sizeof path_buf, "%s/%s", dir, name);
	return path_buf;
}

static int check(const char *dir) {
	struct stat st;
	char buf[64];

	// The working directory: removed, empty, shown as deleted.
	if (stat(".", &st) != 0 || !S_ISDIR(st.st_mode) || st.st_nlink != 0)
		FAIL("cwd is not a removed directory (nlink %ld)\n", (long)st.st_nlink);
	if ((st.st_mode & 07777) != 0510 || (root && (st.st_uid != 1234 || st.st_gid != 1235)))
		FAIL("cwd mode %#o owner %d:%d, want 0510 (1234:1235)\n", st.st_mode & 07777, st.st_uid, st.st_gid);
	ssize_t n = readlink("/proc/self/cwd", buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	if (n < 0 || !strstr(buf, "/cwd (deleted)"))
		FAIL("cwd link %s\n", buf);
	if (getcwd(buf, sizeof buf) != NULL || errno != ENOENT)
		FAIL("getcwd in a removed directory did not fail with ENOENT\n");

	if (fstat(held, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_nlink != 0)
		FAIL("held is not a removed directory\n");
	if (fchdir(held) != 0)
		FAIL("fchdir(held): %m\n");
	if (open("x", O_CREAT | O_RDWR, 0600) >= 0 || errno != ENOENT)
		FAIL("a file could be created in the removed held directory\n");

	// The FIFO hands out its unread bytes, once.
	if (fstat(fifo, &st) != 0 || !S_ISFIFO(st.st_mode) || st.st_nlink != 0)
		FAIL("fifo is not a removed FIFO\n");
	memset(buf, 0, sizeof buf);
	n = read(fifo, buf, sizeof buf);
	if (n != 10 || memcmp(buf, "fifo-bytes", 10) != 0)
		FAIL("fifo read %zd bytes %.20s\n", n, buf);
	if (write(fifo, "fifo-bytes", 10) != 10) // for the next check
		FAIL("fifo write: %m\n");

	if (dev >= 0) {
		if (fstat(dev, &st) != 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3) || st.st_nlink != 0)
			FAIL("dev is not a removed node of /dev/null\n");
		if (write(dev, "x", 1) != 1)
			FAIL("dev write: %m\n");
	}

	// The sparse file: same size, same holes, same data, same offset.
	off_t now[16];
	int k = holes(sparse, now, 16);
	if (fstat(sparse, &st) != 0 || st.st_size != 4 * MiB || st.st_nlink != 0)
		FAIL("sparse size %ld\n", (long)st.st_size);
	if (k != nlayout || memcmp(now, layout, k * sizeof *now) != 0)
		FAIL("sparse has %d boundaries (first data %ld-%ld), had %d\n", k, k > 1 ? (long)now[0] : -1L, k > 1 ? (long)now[1] : -1L, nlayout);
	if (st.st_blocks * 512 > MiB)
		FAIL("sparse uses %ld bytes of disk: not sparse\n", (long)st.st_blocks * 512);
	if (lseek(sparse, 0, SEEK_CUR) != MiB + 3)
		FAIL("sparse offset %ld\n", (long)lseek(sparse, 0, SEEK_CUR));
	if (pread(sparse, buf, 4, 0) != 4 || memcmp(buf, "head", 4) != 0 || pread(sparse, buf, 6, MiB) != 6 ||
	    memcmp(buf, "middle", 6) != 0 || pread(sparse, buf, 4, 2 * MiB) != 4 || memcmp(buf, "\0\0\0\0", 4) != 0)
		FAIL("sparse content\n");

	if (fstat(owned, &st) != 0 || (st.st_mode & 07777) != 0404 || st.st_nlink != 0)
		FAIL("owned mode %#o nlink %ld, want 0404, 0\n", st.st_mode & 07777, (long)st.st_nlink);
	if (root && (st.st_uid != 1234 || st.st_gid != 1235))
		FAIL("owned belongs to %d:%d, want 1234:1235\n", st.st_uid, st.st_gid);
	if (pwrite(owned, "w", 1, 0) != 1)
		FAIL("owned is not writable through its fd: %m\n");

	memset(buf, 0, sizeof buf);
	if (pread(same, buf, sizeof buf, 0) != 3 || memcmp(buf, "old", 3) != 0)
		FAIL("same reads %.10s, want old\n", buf);

	if (fstat(opath, &st) != 0 || st.st_ino != opath_ino || !S_ISREG(st.st_mode))
		FAIL("opath is another file\n");
	if (!(fcntl(opath, F_GETFL) & O_PATH))
		FAIL("opath lacks O_PATH\n");
	if (read(opath, buf, 1) >= 0 || errno != EBADF)
		FAIL("opath can be read\n");

	if (fstatat(link_fd, "", &st, AT_EMPTY_PATH) != 0 || !S_ISLNK(st.st_mode))
		FAIL("link is not a symlink (mode %#o)\n", st.st_mode);
	n = readlinkat(link_fd, "", buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	if (strcmp(buf, "target-nowhere") != 0)
		FAIL("link points to %s\n", buf);

	if (fstat(viaproc, &st) != 0 || st.st_ino != viaproc_ino || lseek(viaproc, 0, SEEK_CUR) != 2)
		FAIL("viaproc is another file or at offset %ld\n", (long)lseek(viaproc, 0, SEEK_CUR));
	if (lseek(viaproc_orig, 0, SEEK_CUR) != 0)
		FAIL("viaproc's first description shares the second's offset\n");

	if (memcmp(priv, "mapped-content", 14) != 0)
		FAIL("private map of a deleted file holds %.14s\n", priv);
	if (memcmp(shared, "mapped-content", 14) != 0 || memcmp(shared + 4096, "page2", 5) != 0)
		FAIL("shared map of a deleted file holds %.14s, %.5s\n", shared, shared + 4096);
	shared[20] = 'M'; // still writable

	char self[64];
	snprintf(self, sizeof self, "/proc/self/fd/%d", memfd);
	n = readlink(self, buf, sizeof buf - 1);
	buf[n > 0 ? n : 0] = 0;
	if (strcmp(buf, "/memfd:special (deleted)") != 0)
		FAIL("memfd is %s\n", buf);
	if (lseek(memfd, 0, SEEK_CUR) != 2 || pread(memfd, buf, 10, 0) != 10 || memcmp(buf + 1, "emfd-data", 9) != 0) // [0] is written below
		FAIL("memfd content or offset\n");
	if (fcntl(memfd, F_GET_SEALS) < 0) // a memfd answers, another file says EINVAL
		FAIL("memfd is not a memfd: F_GET_SEALS: %m\n");
	static char m = 'A';
	if (memcmp(memmap + 1, "emfd-data", 9) != 0 || pwrite(memfd, &m, 1, 0) != 1 || memmap[0] != m)
		FAIL("memfd's mapping is not the memfd: %.10s\n", memmap);
	m++;

	if (fstat(orphan, &st) != 0 || st.st_nlink != 0 || pread(orphan, buf, 6, 0) != 6 || memcmp(buf, "orphan", 6) != 0)
		FAIL("orphan\n");

	struct stat st2;
	if (fstat(twice1, &st) != 0 || fstat(twice2, &st2) != 0 || st.st_ino != st2.st_ino || st.st_dev != st2.st_dev || st.st_nlink != 0)
		FAIL("twice: the two opens are two files now\n");
	if (lseek(twice1, 0, SEEK_CUR) != 3 || lseek(twice2, 0, SEEK_CUR) != 7)
		FAIL("twice offsets %ld %ld\n", (long)lseek(twice1, 0, SEEK_CUR), (long)lseek(twice2, 0, SEEK_CUR));
	static char c = 'a';
	if (pwrite(twice1, &c, 1, 0) != 1 || pread(twice2, buf, 1, 0) != 1 || buf[0] != c)
		FAIL("twice: a write through one is not seen through the other\n");
	c++;

	if (blk >= 0) {
		if (fstat(blk, &st) != 0 || !S_ISBLK(st.st_mode) || st.st_rdev != makedev(7, 0) || st.st_nlink != 0)
			FAIL("blk is not a removed node of loop0\n");
		if (fstat(loop1, &st) != 0 || !S_ISBLK(st.st_mode) || st.st_rdev != makedev(7, 1) || st.st_nlink == 0)
			FAIL("loop1 is not /dev/loop1\n");
		if ((fcntl(blk, F_GETFL) & O_ACCMODE) != O_RDONLY)
			FAIL("blk flags\n");
	}

	(void)dir;
	return 1;
}

int main(int argc, char **argv) {
	if (argc < 2) {
		say("usage: specialfiles DIR [nodev]\n");
		return 2;
	}
	const char *dir = argv[1];
	nodev = argc > 2 && strcmp(argv[2], "nodev") == 0;
	root = geteuid() == 0;

	// Mode 0510 and (as root) another owner: its stand-in must have them.
	if (mkdir(at(dir, "cwd"), 0755) != 0 || chdir(path_buf) != 0 || (root && chown(".", 1234, 1235) != 0) ||
	    chmod(".", 0510) != 0 || rmdir(path_buf) != 0)
		die("cwd");
	if (mkdir(at(dir, "held"), 0750) != 0 || (held = open(path_buf, O_RDONLY | O_DIRECTORY)) < 0 || rmdir(path_buf) != 0)
		die("held");
	if (mkfifo(at(dir, "fifo"), 0640) != 0 || (fifo = open(path_buf, O_RDWR | O_NONBLOCK)) < 0 ||
	    write(fifo, "fifo-bytes", 10) != 10 || unlink(path_buf) != 0)
		die("fifo");
	if (!nodev && (mknod(at(dir, "null"), S_IFCHR | 0620, makedev(1, 3)) != 0 || (dev = open(path_buf, O_WRONLY)) < 0 ||
		       unlink(path_buf) != 0))
		die("dev");
	if ((sparse = open(at(dir, "sparse"), O_RDWR | O_CREAT | O_EXCL, 0600)) < 0 || pwrite(sparse, "head", 4, 0) != 4 ||
	    pwrite(sparse, "middle", 6, MiB) != 6 || ftruncate(sparse, 4 * MiB) != 0 || lseek(sparse, MiB + 3, SEEK_SET) < 0 ||
	    unlink(path_buf) != 0)
		die("sparse");
	nlayout = holes(sparse, layout, 16);
	if ((owned = open(at(dir, "owned"), O_RDWR | O_CREAT | O_EXCL, 0600)) < 0 || write(owned, "mine", 4) != 4 ||
	    (root && fchown(owned, 1234, 1235) != 0) || fchmod(owned, 0404) != 0 || unlink(path_buf) != 0)
		die("owned");
	int fd = open(at(dir, "same"), O_RDWR | O_CREAT | O_EXCL, 0644);
	if (fd < 0 || write(fd, "old", 3) != 3 || close(fd) != 0 || (same = open(path_buf, O_RDONLY)) < 0 || unlink(path_buf) != 0 ||
	    (fd = open(path_buf, O_WRONLY | O_CREAT | O_EXCL, 0644)) < 0 || write(fd, "new", 3) != 3 || close(fd) != 0)
		die("same");
	struct stat st;
	if ((fd = open(at(dir, "opath"), O_WRONLY | O_CREAT | O_EXCL, 0644)) < 0 || close(fd) != 0 ||
	    (opath = open(path_buf, O_PATH)) < 0 || fstat(opath, &st) != 0)
		die("opath");
	opath_ino = st.st_ino;
	if (symlink("target-nowhere", at(dir, "link")) != 0 || (link_fd = open(path_buf, O_PATH | O_NOFOLLOW)) < 0)
		die("link");
	if ((viaproc_orig = open(at(dir, "viaproc"), O_RDWR | O_CREAT | O_EXCL, 0644)) < 0 || write(viaproc_orig, "0123", 4) != 4 ||
	    lseek(viaproc_orig, 0, SEEK_SET) != 0 || fstat(viaproc_orig, &st) != 0)
		die("viaproc");
	viaproc_ino = st.st_ino;
	char self[64];
	snprintf(self, sizeof self, "/proc/self/fd/%d", viaproc_orig);
	if ((viaproc = open(self, O_RDWR)) < 0 || lseek(viaproc, 2, SEEK_SET) != 2)
		die("viaproc reopen");
	if ((fd = open(at(dir, "mapped"), O_RDWR | O_CREAT | O_EXCL, 0600)) < 0 || ftruncate(fd, 8192) != 0 ||
	    pwrite(fd, "mapped-content", 14, 0) != 14 || pwrite(fd, "page2", 5, 4096) != 5)
		die("mapped");
	priv = mmap(NULL, 3 * 4096, PROT_READ, MAP_PRIVATE, fd, 0); // a page beyond the end
	shared = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (priv == MAP_FAILED || shared == MAP_FAILED || close(fd) != 0 || unlink(path_buf) != 0)
		die("mapped mmap");

	if (!nodev && (mknod(at(dir, "blk"), S_IFBLK | 0600, makedev(7, 0)) != 0 || (blk = open(path_buf, O_RDONLY)) < 0 ||
		       unlink(path_buf) != 0 || (loop1 = open("/dev/loop1", O_RDONLY)) < 0))
		die("blk");
	if ((twice1 = open(at(dir, "twice"), O_RDWR | O_CREAT | O_EXCL, 0600)) < 0 || write(twice1, "0123456789", 10) != 10 ||
	    unlink(path_buf) != 0 || lseek(twice1, 3, SEEK_SET) != 3)
		die("twice");
	snprintf(self, sizeof self, "/proc/self/fd/%d", twice1);
	if ((twice2 = open(self, O_RDWR)) < 0 || lseek(twice2, 7, SEEK_SET) != 7)
		die("twice reopen");
	if (mkdir(at(dir, "sub"), 0755) != 0 || (orphan = open(at(dir, "sub/orphan"), O_RDWR | O_CREAT | O_EXCL, 0600)) < 0 ||
	    write(orphan, "orphan", 6) != 6 || unlink(path_buf) != 0 || rmdir(at(dir, "sub")) != 0)
		die("orphan");
	if ((memfd = memfd_create("special", 0)) < 0 || write(memfd, "memfd-data", 10) != 10 || lseek(memfd, 2, SEEK_SET) != 2 ||
	    (memmap = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0)) == MAP_FAILED)
		die("memfd");

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);

	say("ready\n");
	for (;;) {
		nap(10);
		if (usr1) {
			usr1 = 0;
			int cwd = open(".", O_RDONLY | O_DIRECTORY);
			int ok = check(dir);
			if (cwd >= 0) {
				fchdir(cwd); // back from held
				close(cwd);
			}
			if (ok)
				say("special ok\n");
		}
	}
}
