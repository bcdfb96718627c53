// mem maps memory in the shapes vmadump must tell apart, fills a few pages
// with a deterministic pattern, prints the addresses and waits.
//
//   big:    256 MiB private anonymous; pages 0, 1, 2, 1000, 65535 written
//   none:   4 pages private anonymous, pages 0-2 written, then PROT_NONE
//   shared: 1 MiB MAP_SHARED|MAP_ANONYMOUS, pages 3, 4, 200 written, then
//           MADV_DONTNEED: the data stays in shmem, the page tables are empty
//   file:   4 pages of argv[1] mapped MAP_PRIVATE, all read, page 2 written
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096UL

static unsigned char pat(unsigned long off, unsigned tag) {
	return (unsigned char)(off * 7 + (off >> 12) * 13 + tag * 101);
}

static void fill(unsigned char *base, unsigned long page, unsigned tag) {
	for (unsigned long i = page * PG; i < (page + 1) * PG; i++)
		base[i] = pat(i, tag);
}

static void *map(size_t len, int flags, int fd) {
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	if (fd < 0)
		madvise(p, len, MADV_NOHUGEPAGE); /* one touched byte = one page */
	return p;
}

int main(int argc, char **argv) {
	if (argc != 2)
		return 2;
	unsigned char *big = map(256UL << 20, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	unsigned long bigPages[] = {0, 1, 2, 1000, 65535};
	for (int i = 0; i < 5; i++)
		fill(big, bigPages[i], 1);

	unsigned char *none = map(4 * PG, MAP_PRIVATE | MAP_ANONYMOUS, -1);
	for (int i = 0; i < 3; i++)
		fill(none, i, 2);
	if (mprotect(none, 4 * PG, PROT_NONE)) {
		perror("mprotect");
		return 1;
	}

	unsigned char *shared = map(1UL << 20, MAP_SHARED | MAP_ANONYMOUS, -1);
	fill(shared, 3, 3);
	fill(shared, 4, 3);
	fill(shared, 200, 3);
	if (madvise(shared, 1UL << 20, MADV_DONTNEED)) {
		perror("madvise");
		return 1;
	}

	int fd = open(argv[1], O_RDONLY);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	unsigned char *file = map(4 * PG, MAP_PRIVATE, fd);
	volatile unsigned char sum = 0;
	for (int i = 0; i < 4; i++)
		sum += file[i * PG];
	fill(file, 2, 4);

	printf("%lx %lx %lx %lx\n", (unsigned long)big, (unsigned long)none,
	       (unsigned long)shared, (unsigned long)file);
	fflush(stdout);
	for (;;)
		pause();
}
