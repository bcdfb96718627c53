// reserve: maps GIB GiB of address space without touching it (as a JIT or
// a database reserves its heap), prints "ready" and counts.
#include <stdlib.h>
#include <sys/mman.h>

#include "testprog.h"

int main(int argc, char **argv) {
	size_t n = (size_t)atol(argc > 1 ? argv[1] : "8") << 30;
	if (mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) == MAP_FAILED)
		return 1;
	say("ready\n");
	for (long i = 0;; i++) {
		say("count %ld\n", i);
		nap(20);
	}
}
