// demo: a "long computation" for the README demo. Every 0.3 s it advances
// one step and prints the step number and a running checksum that depends
// on every step before it, so a restored run visibly goes on where it was.
#include <stdio.h>
#include <stdint.h>
#include <unistd.h>

int main(void) {
	uint64_t sum = 1;
	for (unsigned step = 1;; step++) {
		for (int i = 0; i < 1000; i++)
			sum = sum * 6364136223846793005ull + step;
		printf("step %4u  checksum %016llx\n", step, (unsigned long long)sum);
		fflush(stdout);
		usleep(300000);
	}
}
