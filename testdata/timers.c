// timers: arms every kind of timer chpox keeps, prints "ready", then
// waits in a poll loop that notices the gap a checkpoint leaves (the time
// the process spent frozen and in the image). After the gap it checks,
// against the times it measured itself, that every timer came back:
//
//   - ITIMER_REAL 100 ms periodic: SIGALRMs go on, at the same rate;
//   - ITIMER_VIRTUAL / ITIMER_PROF: same interval, time left not more than
//     before the gap (CPU time does not pass in the image);
//   - POSIX timers, with the same ids (one deleted to leave a gap in them):
//     SIGEV_SIGNAL relative one-shot 2 s (fires 2 s plus the gap after it
//     was armed: not early, not lost), SIGEV_THREAD_ID periodic to a helper
//     thread, glibc SIGEV_THREAD periodic, SIGEV_NONE armed (time left and
//     interval; CLOCK_MONOTONIC, BOOTTIME, PROCESS_CPUTIME_ID) and unarmed, TIMER_ABSTIME CLOCK_REALTIME at ready+3 s
//     (fires then, the gap does not move it) and at ready+1 s (passes in
//     the image: fires at once on restore); si_value and si_timerid;
//     a one-shot's signal pending (blocked) at the dump is taken after, a
//     periodic one's too, once, with its overruns (never two signals);
//   - timerfd: relative one-shot 2 s, periodic 100 ms never read (its
//     ticks count the time without the gap), absolute CLOCK_REALTIME with
//     TFD_TIMER_CANCEL_ON_SET at ready+3 s, absolute periodic 500 ms whose
//     expirations in the image count, one never armed (the periodic ones
//     have expirations not read at the dump).
//
// With the argument "fast" it holds a 1 ms ITIMER_REAL only, and checks
// that SIGALRMs go on. With the argument "refuse" it holds only an armed CLOCK_TAI timer, which
// chpox refuses.
//
// Each check prints "ok NAME" or "FAIL NAME: ..."; then "timers done".
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include "testprog.h"

#define MS 1000000LL
#define SLACK (200 * MS)
// Timers run while the process is frozen, until chpox reads them: under
// load that can take a while, so a timer may seem this much early.
#define EARLY (500 * MS)

static int64_t ns(clockid_t c) {
	struct timespec ts;
	clock_gettime(c, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static struct timespec tspec(int64_t v) { return (struct timespec){v / 1000000000LL, v % 1000000000LL}; }
static int64_t tsns(struct timespec t) { return t.tv_sec * 1000000000LL + t.tv_nsec; }
static int64_t tvns(struct timeval t) { return t.tv_sec * 1000000000LL + t.tv_usec * 1000LL; }

static int fails;
static void check(int ok, const char *name, const char *fmt, ...) {
	char buf[200] = "";
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (ok)
		say("ok %s: %s\n", name, buf);
	else {
		say("FAIL %s: %s\n", name, buf);
		fails++;
	}
}

static volatile int64_t gap_end; // monotonic ns when the gap was seen, 0 before
static volatile int alarms, alarms_after;
static volatile int64_t rel_fired, abs_fired_rt, past_fired, past_fired_rt;
static volatile int rel_val_ok = 1, rel_id, abs_id, past_id;
static volatile int tid_count, tid_after, tid_wrong, helper_tid;
static volatile int thr_count, thr_after;
static timer_t t_rel, t_tid, t_none, t_unarmed, t_abs, t_past, t_gone, t_thr, t_cpu, t_boot;

static void on_alarm(int sig) {
	alarms++;
	if (gap_end)
		alarms_after++;
}
static void on_rt(int sig, siginfo_t *si, void *uc) {
	int64_t m = ns(CLOCK_MONOTONIC), r = ns(CLOCK_REALTIME);
	if (sig == SIGRTMIN) {
		rel_fired = m;
		rel_val_ok = si->si_value.sival_int == 0xabc && si->si_code == SI_TIMER;
		rel_id = si->si_timerid;
	} else if (sig == SIGRTMIN + 1) {
		tid_count++;
		if (gap_end)
			tid_after++;
		if (syscall(SYS_gettid) != helper_tid)
			tid_wrong++;
	} else if (sig == SIGRTMIN + 2) {
		abs_fired_rt = r;
		abs_id = si->si_timerid;
	} else if (sig == SIGRTMIN + 3) {
		past_fired = m;
		past_fired_rt = r;
		past_id = si->si_timerid;
	}
}
static void on_thread(union sigval v) {
	if (v.sival_int == 77) {
		thr_count++;
		if (gap_end)
			thr_after++;
	}
}

static void *helper(void *arg) {
	helper_tid = syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static timer_t mk(clockid_t c, int notify, int sig, int val, int tid) {
	struct sigevent se;
	memset(&se, 0, sizeof se);
	se.sigev_notify = notify;
	se.sigev_signo = sig;
	se.sigev_value.sival_int = val;
	se._sigev_un._tid = tid;
	timer_t t;
	if (timer_create(c, &se, &t) != 0) {
		say("timer_create: %s\n", strerror(errno));
		exit(1);
	}
	return t;
}
static void arm(timer_t t, int flags, int64_t value, int64_t interval) {
	struct itimerspec its = {tspec(interval), tspec(value)};
	if (timer_settime(t, flags, &its, NULL) != 0) {
		say("timer_settime: %s\n", strerror(errno));
		exit(1);
	}
}
static int tfd(clockid_t c, int flags, int64_t value, int64_t interval) {
	int fd = timerfd_create(c, TFD_NONBLOCK | TFD_CLOEXEC);
	struct itimerspec its = {tspec(interval), tspec(value)};
	if (fd < 0 || (value && timerfd_settime(fd, flags, &its, NULL) != 0)) {
		say("timerfd: %s\n", strerror(errno));
		exit(1);
	}
	return fd;
}
static uint64_t ticks(int fd) {
	uint64_t n = 0;
	if (read(fd, &n, 8) != 8)
		return 0;
	return n;
}

int main(int argc, char **argv) {
	struct sigaction sa = {0};
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO;
	for (int s = SIGRTMIN; s <= SIGRTMIN + 3; s++)
		sigaction(s, &sa, NULL);
	// SIGRTMIN+4 stays blocked in every thread: a timer's signal pending
	// at the dump.
	sigset_t pend;
	sigemptyset(&pend);
	sigaddset(&pend, SIGRTMIN + 4);
	sigprocmask(SIG_BLOCK, &pend, NULL);
	// SIGRTMIN+5 too: a periodic timer's signal, pending at the dump.
	sigset_t pend5;
	sigemptyset(&pend5);
	sigaddset(&pend5, SIGRTMIN + 5);
	sigprocmask(SIG_BLOCK, &pend5, NULL);
	pthread_t th;
	pthread_create(&th, NULL, helper, NULL);
	while (!helper_tid)
		nap(1);

	// The helper alone takes SIGRTMIN+1 (its timer is aimed at it anyway).
	if (argc > 1 && strcmp(argv[1], "refuse") == 0) {
		// CLOCK_TAI: absolute and relative cannot be told apart.
		timer_t t = mk(CLOCK_TAI, SIGEV_NONE, 0, 0, 0);
		arm(t, 0, 60000 * MS, 0);
		say("ready\n");
		for (int i = 0;; i++) {
			struct itimerspec its;
			timer_gettime(t, &its);
			say("alive %d tai armed %d\n", i, tsns(its.it_value) > 0);
			nap(50);
		}
	}
	if (argc > 1 && strcmp(argv[1], "fast") == 0) {
		// A 1 ms ITIMER_REAL: expired with its SIGALRM pending at the
		// dump, as good as always (the process is frozen for longer).
		struct itimerval fv = {{0, 1000}, {0, 1000}};
		setitimer(ITIMER_REAL, &fv, NULL);
		say("ready\n");
		int64_t last = ns(CLOCK_MONOTONIC);
		for (;;) {
			nap(10);
			int64_t now = ns(CLOCK_MONOTONIC);
			if (now - last > 300 * MS) {
				int a = alarms;
				for (int64_t end = now + 500 * MS; ns(CLOCK_MONOTONIC) < end;)
					nap(10); // each SIGALRM ends a nap
				check(alarms - a > 100, "fast-alarm", "%d SIGALRMs in 500 ms after the gap", alarms - a);
				say("timers done, %d failed\n", fails);
				for (;;)
					pause();
			}
			last = now;
		}
	}
	// Periodic timerfds with expirations not read at the dump.
	int64_t m_per = ns(CLOCK_MONOTONIC), r_per = ns(CLOCK_REALTIME);
	int fd_per = tfd(CLOCK_MONOTONIC, 0, 100 * MS, 100 * MS);
	int fd_absper = tfd(CLOCK_REALTIME, TFD_TIMER_ABSTIME, r_per + 50 * MS, 500 * MS);
	nap(650);
	int64_t m0 = ns(CLOCK_MONOTONIC), r0 = ns(CLOCK_REALTIME);
	int fd_rel = tfd(CLOCK_MONOTONIC, 0, 2000 * MS, 0);
	int fd_abs = tfd(CLOCK_REALTIME, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, r0 + 3000 * MS, 0);
	int fd_off = tfd(CLOCK_BOOTTIME, 0, 0, 0);

	t_rel = mk(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN, 0xabc, 0);
	t_gone = mk(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0, 0);
	t_tid = mk(CLOCK_MONOTONIC, SIGEV_THREAD_ID, SIGRTMIN + 1, 0, helper_tid);
	t_none = mk(CLOCK_MONOTONIC, SIGEV_NONE, 0, 0, 0);
	t_unarmed = mk(CLOCK_BOOTTIME, SIGEV_NONE, 0, 0, 0);
	t_abs = mk(CLOCK_REALTIME, SIGEV_SIGNAL, SIGRTMIN + 2, 0, 0);
	t_past = mk(CLOCK_REALTIME, SIGEV_SIGNAL, SIGRTMIN + 3, 0, 0);
	struct sigevent se = {0};
	se.sigev_notify = SIGEV_THREAD;
	se.sigev_notify_function = on_thread;
	se.sigev_value.sival_int = 77;
	timer_create(CLOCK_MONOTONIC, &se, &t_thr);
	t_cpu = mk(CLOCK_PROCESS_CPUTIME_ID, SIGEV_NONE, 0, 0, 0);
	t_boot = mk(CLOCK_BOOTTIME, SIGEV_NONE, 0, 0, 0);
	timer_t t_pend = mk(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 4, 0x55, 0);
	arm(t_pend, 0, 1 * MS, 0);
	timer_t t_per5 = mk(CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGRTMIN + 5, 0x66, 0);
	arm(t_per5, 0, 1 * MS, 300 * MS);
	timer_delete(t_gone); // a gap in the ids
	arm(t_rel, 0, 2000 * MS, 0);
	arm(t_tid, 0, 200 * MS, 200 * MS);
	arm(t_none, 0, 30000 * MS, 5000 * MS);
	arm(t_abs, TIMER_ABSTIME, r0 + 3000 * MS, 0);
	arm(t_past, TIMER_ABSTIME, r0 + 1000 * MS, 0);
	arm(t_thr, 0, 250 * MS, 250 * MS);
	arm(t_cpu, 0, 100000 * MS, 0);
	arm(t_boot, 0, 20000 * MS, 1000 * MS);
	struct itimerval iv = {{0, 100000}, {0, 100000}};
	setitimer(ITIMER_REAL, &iv, NULL);
	struct itimerval vv = {{7, 0}, {50, 0}}, pv = {{3, 0}, {40, 0}};
	setitimer(ITIMER_VIRTUAL, &vv, NULL);
	setitimer(ITIMER_PROF, &pv, NULL);
	say("ids %ld %ld %ld %ld %ld %ld %ld gone %ld\n", (long)t_rel, (long)t_tid, (long)t_none, (long)t_unarmed,
	    (long)t_abs, (long)t_past, (long)t_thr, (long)t_gone);
	nap(5);
	say("ready\n");

	struct pollfd pfd[2] = {{fd_rel, POLLIN}, {fd_abs, POLLIN}};
	int64_t last = ns(CLOCK_MONOTONIC), gap = 0, fd_rel_fired = 0, fd_abs_fired_rt = 0;
	struct itimerval bv, bp;
	struct itimerspec bn, bc, bb;
	getitimer(ITIMER_VIRTUAL, &bv);
	getitimer(ITIMER_PROF, &bp);
	timer_gettime(t_none, &bn);
	timer_gettime(t_cpu, &bc);
	timer_gettime(t_boot, &bb);
	int alarms_before = 0;
	for (;;) {
		int n = poll(pfd, 2, 10);
		int64_t now = ns(CLOCK_MONOTONIC);
		if (n > 0 && pfd[0].revents && ticks(fd_rel))
			fd_rel_fired = now;
		if (n > 0 && pfd[1].revents && ticks(fd_abs))
			fd_abs_fired_rt = ns(CLOCK_REALTIME);
		if (!gap_end && now - last > 300 * MS) {
			gap = now - last;
			gap_end = now;
			alarms_before = alarms;
			say("gap %lld ms\n", (long long)(gap / MS));
			struct itimerval av, ap;
			struct itimerspec an, au;
			getitimer(ITIMER_VIRTUAL, &av);
			getitimer(ITIMER_PROF, &ap);
			check(tvns(av.it_interval) == 7000 * MS && tvns(av.it_value) <= tvns(bv.it_value) + MS &&
			          tvns(av.it_value) > tvns(bv.it_value) - EARLY,
			      "itimer-virtual", "interval %lld value %lld before %lld", (long long)tvns(av.it_interval),
			      (long long)tvns(av.it_value), (long long)tvns(bv.it_value));
			check(tvns(ap.it_interval) == 3000 * MS && tvns(ap.it_value) <= tvns(bp.it_value) + MS &&
			          tvns(ap.it_value) > tvns(bp.it_value) - EARLY,
			      "itimer-prof", "interval %lld value %lld before %lld", (long long)tvns(ap.it_interval),
			      (long long)tvns(ap.it_value), (long long)tvns(bp.it_value));
			int e1 = timer_gettime(t_none, &an), e2 = timer_gettime(t_unarmed, &au);
			check(e1 == 0 && tsns(an.it_interval) == 5000 * MS && tsns(an.it_value) <= tsns(bn.it_value) + MS &&
			          tsns(an.it_value) > tsns(bn.it_value) - EARLY,
			      "posix-none-armed", "err %d interval %lld value %lld before %lld", e1,
			      (long long)tsns(an.it_interval), (long long)tsns(an.it_value), (long long)tsns(bn.it_value));
			struct itimerspec ac, ab;
			e1 = timer_gettime(t_cpu, &ac);
			check(e1 == 0 && tsns(ac.it_value) <= tsns(bc.it_value) + MS && tsns(ac.it_value) > tsns(bc.it_value) - EARLY,
			      "posix-process-cputime", "err %d value %lld before %lld", e1, (long long)tsns(ac.it_value),
			      (long long)tsns(bc.it_value));
			e1 = timer_gettime(t_boot, &ab);
			check(e1 == 0 && tsns(ab.it_interval) == 1000 * MS && tsns(ab.it_value) <= tsns(bb.it_value) + MS &&
			          tsns(ab.it_value) > tsns(bb.it_value) - EARLY,
			      "posix-boottime", "err %d value %lld before %lld", e1, (long long)tsns(ab.it_value),
			      (long long)tsns(bb.it_value));
			check(e2 == 0 && tsns(au.it_value) == 0 && tsns(au.it_interval) == 0, "posix-none-unarmed",
			      "err %d value %lld", e2, (long long)tsns(au.it_value));
			struct itimerspec gs;
			check(timer_gettime(t_gone, &gs) != 0 && errno == EINVAL, "posix-deleted-id",
			      "deleted timer %ld exists", (long)t_gone);
			siginfo_t si;
			struct timespec zero = {0, 0};
			int sig = sigtimedwait(&pend, &si, &zero);
			check(sig == SIGRTMIN + 4 && si.si_code == SI_TIMER && si.si_timerid == (long)t_pend &&
			          si.si_value.sival_int == 0x55,
			      "posix-signal-pending", "signal %d code %d timer %d value %#x", sig, si.si_code, si.si_timerid,
			      si.si_value.sival_int);
			struct itimerspec fo;
			timerfd_gettime(fd_off, &fo);
			check(tsns(fo.it_value) == 0, "timerfd-unarmed", "value %lld", (long long)tsns(fo.it_value));
		}
		static int per5_checked;
		if (gap_end == now) {
			// Still pending at once, not only at the timer's next expiry.
			sigset_t ps;
			sigpending(&ps);
			check(sigismember(&ps, SIGRTMIN + 5), "posix-periodic-pending-at-once", "pending %d",
			      sigismember(&ps, SIGRTMIN + 5));
		}
		if (gap_end && !per5_checked && now - gap_end > 400 * MS) {
			// The kernel keeps one signal per timer queued and counts
			// the rest as overruns: one signal, never two.
			per5_checked = 1;
			siginfo_t s1, s2;
			struct timespec zero = {0, 0};
			int a = sigtimedwait(&pend5, &s1, &zero), b = sigtimedwait(&pend5, &s2, &zero);
			check(a == SIGRTMIN + 5 && s1.si_timerid == (long)t_per5 && s1.si_value.sival_int == 0x66 &&
			          s1.si_overrun >= 1 && b < 0,
			      "posix-periodic-pending", "signal %d timer %d value %#x overrun %d, then %d", a, s1.si_timerid,
			      s1.si_value.sival_int, s1.si_overrun, b);
		}
		if (!gap_end) {
			getitimer(ITIMER_VIRTUAL, &bv);
			getitimer(ITIMER_PROF, &bp);
			timer_gettime(t_none, &bn);
			timer_gettime(t_cpu, &bc);
			timer_gettime(t_boot, &bb);
		}
		last = now;
		if (gap_end && now - gap_end > 2500 * MS)
			break;
	}
	// The time the timers did not count: the gap less one loop period.
	int64_t g = gap - 10 * MS, now = ns(CLOCK_MONOTONIC), rnow = ns(CLOCK_REALTIME);
	int64_t want = m0 + 2000 * MS + g;
	check(rel_fired > want - EARLY && rel_fired < want + SLACK && rel_val_ok && rel_id == (long)t_rel, "posix-relative",
	      "fired %lld ms from arming, want %lld; value ok %d, id %d", (long long)((rel_fired - m0) / MS),
	      (long long)((want - m0) / MS), rel_val_ok, rel_id);
	check(fd_rel_fired > want - EARLY && fd_rel_fired < want + SLACK, "timerfd-relative",
	      "fired %lld ms from arming, want %lld", (long long)((fd_rel_fired - m0) / MS), (long long)((want - m0) / MS));
	check(abs_fired_rt >= r0 + 3000 * MS && abs_fired_rt < r0 + 3000 * MS + SLACK && abs_id == (long)t_abs,
	      "posix-absolute", "fired %lld ms after ready, want 3000; id %d", (long long)((abs_fired_rt - r0) / MS), abs_id);
	check(past_fired > gap_end - SLACK && past_fired < gap_end + SLACK && past_fired_rt >= r0 + 1000 * MS &&
	          past_id == (long)t_past,
	      "posix-absolute-passed", "fired %lld ms from the gap's end (%lld ms after ready)",
	      (long long)((past_fired - gap_end) / MS), (long long)((past_fired_rt - r0) / MS));
	check(fd_abs_fired_rt >= r0 + 3000 * MS && fd_abs_fired_rt < r0 + 3000 * MS + SLACK, "timerfd-absolute",
	      "fired %lld ms after ready, want 3000", (long long)((fd_abs_fired_rt - r0) / MS));
	int64_t per = ticks(fd_per), wantper = (now - m_per - g) / (100 * MS);
	check(per >= wantper - 2 && per <= wantper + 5, "timerfd-periodic-ticks", "%lld ticks, want %lld",
	      (long long)per, (long long)wantper);
	int64_t aper = ticks(fd_absper), wantaper = (rnow - r_per - 50 * MS) / (500 * MS) + 1;
	check(aper >= wantaper - 1 && aper <= wantaper + 1, "timerfd-absolute-periodic-ticks", "%lld ticks, want %lld",
	      (long long)aper, (long long)wantaper);
	int wantal = (now - gap_end) / (100 * MS);
	check(alarms_after >= wantal - 6 && alarms_after <= wantal + 2, "itimer-real",
	      "%d SIGALRMs after the gap (%d before), want %d", alarms_after, alarms_before, wantal);
	struct itimerval rv;
	getitimer(ITIMER_REAL, &rv);
	check(tvns(rv.it_interval) == 100 * MS, "itimer-real-interval", "%lld", (long long)tvns(rv.it_interval));
	check(tid_after >= 8 && tid_wrong == 0, "posix-thread-id", "%d signals after the gap (%d in all), %d to another thread",
	      tid_after, tid_count, tid_wrong);
	check(thr_after >= 6, "posix-sigev-thread", "%d calls after the gap (%d in all)", thr_after, thr_count);
	say("timers done, %d failed\n", fails);
	for (;;)
		pause();
}
