// bigmem: touches N MiB of anonymous memory (argv[1]) with a pattern, prints
// "ready", then waits. On SIGUSR1 it checks the pattern and prints
// "bigmem ok" or "bigmem FAIL <offset>". Used by the benchmark.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

static volatile sig_atomic_t check;
static void on_usr1(int s) { (void)s; check = 1; }

int main(int argc, char **argv) {
	size_t n = (size_t)atol(argc > 1 ? argv[1] : "1024") << 20;
	uint64_t *p = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < n / 8; i++)
		p[i] = i * 0x9e3779b97f4a7c15ull;
	signal(SIGUSR1, on_usr1);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		// Poll rather than pause(): a signal arriving just before pause()
		// would be lost until the next one.
		while (!check)
			usleep(10000);
		check = 0;
		size_t i = 0;
		while (i < n / 8 && p[i] == i * 0x9e3779b97f4a7c15ull)
			i++;
		if (i == n / 8)
			printf("bigmem ok\n");
		else
			printf("bigmem FAIL %zu\n", i * 8);
		fflush(stdout);
	}
}
