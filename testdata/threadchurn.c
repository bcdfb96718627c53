// threadchurn: starts and joins short-lived threads all the time, four at
// once, and checks that each did its work; prints "round N" every 100
// rounds, or "FAIL ..." and exits.
#include <pthread.h>
#include <stdatomic.h>

#include "testprog.h"

static atomic_long done;

static void *work(void *arg) {
	long *slot = arg;
	*slot *= 2; // the joiner checks it
	atomic_fetch_add(&done, 1);
	return NULL;
}

int main(void) {
	say("ready\n");
	for (long round = 1;; round++) {
		pthread_t t[4];
		long v[4];
		for (int i = 0; i < 4; i++) {
			v[i] = round + i;
			if (pthread_create(&t[i], NULL, work, &v[i]) != 0)
				return say("FAIL pthread_create\n"), 1;
		}
		for (int i = 0; i < 4; i++) {
			pthread_join(t[i], NULL);
			if (v[i] != 2 * (round + i))
				return say("FAIL thread %d of round %ld\n", i, round), 1;
		}
		if (atomic_load(&done) != 4 * round)
			return say("FAIL %ld threads done after %ld rounds\n", atomic_load(&done), round), 1;
		if (round % 100 == 0)
			say("round %ld\n", round);
	}
}
