// scale: holds many of one kind of thing, for the scale benchmark.
//
//   scale procs N     N processes: this one and N-1 children (pause)
//   scale threads N   N threads: this one and N-1 waiting on a semaphore
//   scale maps N      N separate one-page mappings, each with its own value
//   scale files N FILE   N descriptors of FILE, fd i at offset i
//
// It prints "ready", then on SIGUSR1 checks that everything is still there
// (children alive and its own, threads able to run, page values, offsets)
// and prints "scale ok" or "scale FAIL ...".
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testprog.h"

static volatile sig_atomic_t check;
static void on_usr1(int s) { (void)s; check = 1; }

static long n;
static pid_t *kids;
static sem_t go;
static atomic_long ran;
static pthread_t *threads;
static char *base;
static int *fds;

static void *worker(void *arg) {
	(void)arg;
	sem_wait(&go);
	atomic_fetch_add(&ran, 1);
	return NULL;
}

static int setup(const char *mode, const char *file) {
	if (strcmp(mode, "procs") == 0) {
		kids = calloc(n, sizeof *kids);
		for (long i = 1; i < n; i++) {
			if ((kids[i] = fork()) == 0) {
				for (;;)
					pause();
			}
			if (kids[i] < 0)
				return 1;
		}
	} else if (strcmp(mode, "threads") == 0) {
		sem_init(&go, 0, 0);
		threads = calloc(n, sizeof *threads);
		pthread_attr_t a;
		pthread_attr_init(&a);
		pthread_attr_setstacksize(&a, 64 << 10);
		for (long i = 1; i < n; i++)
			if (pthread_create(&threads[i], &a, worker, NULL) != 0)
				return 1;
	} else if (strcmp(mode, "maps") == 0) {
		// Every other page of a PROT_NONE reservation: the gaps keep the
		// kernel from merging neighbours into one area.
		base = mmap(0, 2 * n * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (base == MAP_FAILED)
			return 1;
		for (long i = 0; i < n; i++) {
			char *p = mmap(base + 2 * i * 4096, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			if (p == MAP_FAILED)
				return 1;
			*(long *)p = i;
		}
	} else if (strcmp(mode, "files") == 0) {
		struct rlimit rl;
		getrlimit(RLIMIT_NOFILE, &rl);
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		fds = calloc(n, sizeof *fds);
		for (long i = 0; i < n; i++) {
			if ((fds[i] = open(file, O_RDONLY)) < 0 || lseek(fds[i], i, SEEK_SET) != i)
				return 1;
		}
	} else {
		return 2;
	}
	return 0;
}

static int verify(const char *mode) {
	if (strcmp(mode, "procs") == 0) {
		for (long i = 1; i < n; i++)
			if (waitpid(kids[i], NULL, WNOHANG) != 0 || kill(kids[i], 0) != 0)
				return say("scale FAIL child %d\n", kids[i]), 1;
	} else if (strcmp(mode, "threads") == 0) {
		for (long i = 1; i < n; i++)
			sem_post(&go);
		for (long i = 1; i < n; i++)
			pthread_join(threads[i], NULL);
		if (atomic_load(&ran) != n - 1)
			return say("scale FAIL %ld threads ran\n", atomic_load(&ran)), 1;
	} else if (strcmp(mode, "maps") == 0) {
		for (long i = 0; i < n; i++)
			if (*(long *)(base + 2 * i * 4096) != i)
				return say("scale FAIL page %ld\n", i), 1;
	} else {
		for (long i = 0; i < n; i++)
			if (lseek(fds[i], 0, SEEK_CUR) != i)
				return say("scale FAIL fd %d\n", fds[i]), 1;
	}
	return 0;
}

int main(int argc, char **argv) {
	if (argc < 3)
		return 2;
	n = atol(argv[2]);
	signal(SIGUSR1, on_usr1);
	if (setup(argv[1], argc > 3 ? argv[3] : "/dev/null") != 0) {
		say("scale FAIL setup\n");
		return 1;
	}
	say("ready\n");
	while (!check)
		nap(10);
	if (verify(argv[1]) == 0)
		say("scale ok %s %ld\n", argv[1], n);
	for (;;)
		pause();
}
