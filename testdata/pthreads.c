// pthreads: 8 worker threads take N items from a queue guarded by a mutex
// and two condition variables; each keeps a __thread count and sum, and
// sleeps now and then. main joins them (pthread_join needs the kernel's
// clear_child_tid) and checks every total against the uninterrupted answer:
// prints "pthreads ok N SUM" or "pthreads FAIL ...", exit 0 or 1.
//
//   pthreads [ITEMS]   (default 20000; 1 ms of work each, 8 at a time)
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define WORKERS 8
#define QCAP 16

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER, not_full = PTHREAD_COND_INITIALIZER;
static long queue[QCAP];
static int qlen, qhead, done;
static __thread long my_count, my_sum;
static long counts[WORKERS], sums[WORKERS];

static void *worker(void *arg) {
	long id = (long)arg;
	for (;;) {
		pthread_mutex_lock(&mu);
		while (qlen == 0 && !done)
			pthread_cond_wait(&not_empty, &mu);
		if (qlen == 0 && done) {
			pthread_mutex_unlock(&mu);
			break;
		}
		long v = queue[qhead];
		qhead = (qhead + 1) % QCAP;
		qlen--;
		pthread_cond_signal(&not_full);
		pthread_mutex_unlock(&mu);
		my_count++;
		my_sum += v * v % 1000003;
		struct timespec ts = {0, 1000000}; // 1 ms of "work"
		nanosleep(&ts, NULL);
	}
	counts[id] = my_count; // __thread values must have survived
	sums[id] = my_sum;
	return NULL;
}

int main(int argc, char **argv) {
	long n = argc > 1 ? atol(argv[1]) : 20000;
	pthread_t t[WORKERS];
	for (long i = 0; i < WORKERS; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	printf("ready\n");
	fflush(stdout);
	for (long v = 1; v <= n; v++) {
		pthread_mutex_lock(&mu);
		while (qlen == QCAP)
			pthread_cond_wait(&not_full, &mu);
		queue[(qhead + qlen) % QCAP] = v;
		qlen++;
		pthread_cond_signal(&not_empty);
		pthread_mutex_unlock(&mu);
	}
	pthread_mutex_lock(&mu);
	done = 1;
	pthread_cond_broadcast(&not_empty);
	pthread_mutex_unlock(&mu);
	long count = 0, sum = 0, want = 0;
	for (int i = 0; i < WORKERS; i++) {
		if (pthread_join(t[i], NULL) != 0) {
			printf("pthreads FAIL join %d\n", i);
			return 1;
		}
		count += counts[i];
		sum += sums[i];
	}
	for (long v = 1; v <= n; v++)
		want += v * v % 1000003;
	if (count != n || sum != want) {
		printf("pthreads FAIL count %ld/%ld sum %ld/%ld\n", count, n, sum, want);
		return 1;
	}
	printf("pthreads ok %ld %ld\n", count, sum);
	return 0;
}
