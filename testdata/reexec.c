// reexec: replaces itself with a new run of itself every 3 ms, counting the
// generations in its argument: "gen N" once per generation.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "testprog.h"

int main(int argc, char **argv) {
	long n = argc > 1 ? atol(argv[1]) : 0;
	say("gen %ld\n", n);
	nap(3);
	char next[32];
	snprintf(next, sizeof next, "%ld", n + 1);
	execl("/proc/self/exe", argv[0], next, (char *)NULL);
	say("FAIL exec\n");
	return 1;
}
