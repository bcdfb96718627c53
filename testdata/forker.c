// forker MIB: touches MIB MiB of memory, prints "ready", then forks a
// child that exits at once, again and again (1 ms apart), and every 20 ms
// prints "forked at SECONDS.MICROS" (CLOCK_REALTIME) when a fork and its
// wait have completed. Under a tracer that follows forks, each fork stops
// until the tracer serves the event: the lines show when it did.
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "testprog.h"

int main(int argc, char **argv) {
	size_t n = (size_t)atol(argc > 1 ? argv[1] : "64") << 20;
	char *mem = malloc(n);
	if (mem == NULL)
		return say("FAIL malloc\n"), 1;
	memset(mem, 1, n);
	say("ready\n");
	struct timespec last = {0};
	for (;;) {
		pid_t pid = fork();
		if (pid == 0)
			_exit(0);
		if (pid < 0 || waitpid(pid, NULL, 0) != pid)
			return say("FAIL fork\n"), 1;
		struct timespec now;
		clock_gettime(CLOCK_REALTIME, &now);
		if ((now.tv_sec - last.tv_sec) * 1000000000L + now.tv_nsec - last.tv_nsec >= 20000000L) {
			say("forked at %ld.%06ld\n", (long)now.tv_sec, now.tv_nsec / 1000);
			last = now;
		}
		nap(1);
	}
}
