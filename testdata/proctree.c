// proctree: process-tree states for checkpoint tests.
//
//   P (leads its own group; PR_SET_CHILD_SUBREAPER; handlers for SIGUSR1,
//      SIGCHLD, SIGTERM)
//   ├── zk      zombie, killed by SIGKILL (it kept P's handlers)
//   ├── zt      zombie, killed by SIGTERM (default action restored first)
//   ├── zl      zombie that led its own process group, exit status 5
//   ├── g       zl's child, reparented to the subreaper P when zl exited;
//   │           still in zl's group
//   ├── sSTOP, sTSTP, sTTIN, sTTOU   stopped by raise() of that signal
//   │           (sTTIN has a second thread)
//   ├── sWAITED stopped by SIGSTOP, the stop already collected by P
//   │           (waitpid WUNTRACED)
//   └── tp      has SIGTRAP blocked and pending (raise(SIGTRAP))
//
// Lines: "pids P zk zt zl g sSTOP sTSTP sTTIN sTTOU sWAITED tp" once all are
// in place, then "alive P N" every 50 ms.
// SIGUSR1 to P: P checks, without reaping or collecting anything (waitid
// with WNOWAIT), that it is still a subreaper, that each stopped child
// shows its stop signal (sWAITED none: already collected) and each zombie
// its status, and that no SIGCHLD came since all were in place; then it prints "P ok" or "P FAIL ...".
// SIGUSR1 to g: "g ok" if its parent is P and its group zl's.
// SIGUSR1 to tp: "tp ok" if SIGTRAP is pending, and once unblocked it is
// delivered once with si_code SI_TKILL from itself.
//
// "proctree traced": P forks a child that is traced by P (PTRACE_TRACEME)
// and sits in a ptrace-stop; P prints "traced CHILD" and waits.
//
// SIGUSR2 to P: P sends SIGCONT to the stopped ones, reaps everything and
// prints "reaped N" with how many children it reaped.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testprog.h"

static volatile sig_atomic_t usr1, usr2, chld, traps, trap_code, trap_pid;
static sig_atomic_t chld_ready; // SIGCHLDs handled once all were in place

static void on_usr1(int sig) { (void)sig; usr1 = 1; }
static void on_usr2(int sig) { (void)sig; usr2 = 1; }
static void on_chld(int sig) { (void)sig; chld++; }
static void on_trap(int sig, siginfo_t *si, void *uc) {
	(void)sig;
	(void)uc;
	traps++;
	trap_code = si->si_code;
	trap_pid = si->si_pid;
}

static void *idle(void *arg) {
	for (;;)
		pause();
	return arg;
}

static const int stops[] = {SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU};
static pid_t zk, zt, zl, g, s[4], swaited, tp;

static void action(int sig, void (*h)(int)) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = h;
	sa.sa_flags = SA_RESTART; // SIGCHLD comes often here: reads and waits go on
	sigaction(sig, &sa, NULL);
}

// peek returns what waitid(WNOWAIT) says of child c for the options.
static int peek(pid_t c, int opts, siginfo_t *si) {
	memset(si, 0, sizeof *si);
	return waitid(P_PID, c, si, opts | WNOHANG | WNOWAIT);
}

// settle waits until child c reaches the state opts waits for.
static void settle(pid_t c, int opts) {
	siginfo_t si;
	for (int i = 0; i < 2000; i++) {
		if (peek(c, opts, &si) == 0 && si.si_pid == c)
			return;
		nap(2);
	}
	say("proctree FAIL child %d never reached its state\n", c);
	exit(1);
}

static void check_p(void) {
	char why[256] = "";
	int sub = 0;
	siginfo_t si;
	prctl(PR_GET_CHILD_SUBREAPER, &sub);
	if (!sub)
		snprintf(why, sizeof why, "not a child subreaper");
	else if (chld != chld_ready)
		snprintf(why, sizeof why, "%d SIGCHLD came after all children were in place", (int)(chld - chld_ready));
	for (int i = 0; !why[0] && i < 4; i++) {
		if (peek(s[i], WSTOPPED, &si) != 0 || si.si_pid != s[i] || si.si_code != CLD_STOPPED || si.si_status != stops[i])
			snprintf(why, sizeof why, "child %d stopped by %d shows pid %d code %d status %d", s[i], stops[i], si.si_pid,
				 si.si_code, si.si_status);
	}
	if (!why[0] && (peek(swaited, WSTOPPED, &si) != 0 || si.si_pid != 0))
		snprintf(why, sizeof why, "the stop of %d was collected, yet waitid reports pid %d status %d", swaited, si.si_pid,
			 si.si_status);
	struct {
		pid_t pid;
		int code, status;
	} z[] = {{zk, CLD_KILLED, SIGKILL}, {zt, CLD_KILLED, SIGTERM}, {zl, CLD_EXITED, 5}};
	for (int i = 0; !why[0] && i < 3; i++) {
		if (peek(z[i].pid, WEXITED, &si) != 0 || si.si_pid != z[i].pid || si.si_code != z[i].code ||
		    si.si_status != z[i].status)
			snprintf(why, sizeof why, "zombie %d shows pid %d code %d status %d, want code %d status %d", z[i].pid,
				 si.si_pid, si.si_code, si.si_status, z[i].code, z[i].status);
	}
	if (!why[0] && getpgid(zl) != zl)
		snprintf(why, sizeof why, "zombie %d is in group %d, want its own", zl, getpgid(zl));
	if (!why[0] && getpgid(g) != zl)
		snprintf(why, sizeof why, "g %d is in group %d, want zl's %d", g, getpgid(g), zl);
	if (why[0])
		say("P FAIL %s\n", why);
	else
		say("P ok\n");
}

static void run_tp(void) {
	sigset_t set, pend;
	sigemptyset(&set);
	sigaddset(&set, SIGTRAP);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	raise(SIGTRAP);
	action(SIGUSR1, SIG_DFL);
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_trap;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGTRAP, &sa, NULL);
	pid_t me = getpid();
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	for (;;) {
		int sig;
		sigwait(&set, &sig); // SIGUSR1
		sigpending(&pend);
		if (!sigismember(&pend, SIGTRAP) || traps != 0) {
			say("tp FAIL SIGTRAP pending %d, delivered %d times\n", sigismember(&pend, SIGTRAP), (int)traps);
			continue;
		}
		sigset_t trap;
		sigemptyset(&trap);
		sigaddset(&trap, SIGTRAP);
		sigprocmask(SIG_UNBLOCK, &trap, NULL);
		sigprocmask(SIG_BLOCK, &trap, NULL);
		if (traps != 1 || trap_code != SI_TKILL || trap_pid != me)
			say("tp FAIL SIGTRAP delivered %d times, code %d pid %d\n", (int)traps, (int)trap_code, (int)trap_pid);
		else
			say("tp ok\n");
		sigpending(&pend);
		if (sigismember(&pend, SIGTRAP))
			say("tp FAIL SIGTRAP still pending after its delivery\n");
		raise(SIGTRAP); // pending again, for the next round
		traps = 0;
	}
}

int main(int argc, char **argv) {
	setpgid(0, 0);
	if (argc > 1 && strcmp(argv[1], "traced") == 0) {
		pid_t c = fork();
		if (c == 0) {
			ptrace(PTRACE_TRACEME, 0, 0, 0);
			raise(SIGSTOP);
			for (;;)
				pause();
		}
		int st;
		if (waitpid(c, &st, 0) != c || !WIFSTOPPED(st))
			say("proctree FAIL the traced child did not stop\n");
		say("traced %d\n", c);
		for (;;)
			pause();
	}
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	action(SIGUSR1, on_usr1);
	action(SIGUSR2, on_usr2);
	action(SIGTERM, on_usr2);
	action(SIGCHLD, on_chld);

	if ((zk = fork()) == 0) {
		kill(getpid(), SIGKILL);
		_exit(1);
	}
	if ((zt = fork()) == 0) {
		action(SIGTERM, SIG_DFL);
		raise(SIGTERM);
		_exit(1);
	}
	int gp[2];
	if (pipe(gp) < 0)
		return 1;
	if ((zl = fork()) == 0) {
		setpgid(0, 0);
		pid_t zlpid = getpid(); // zl may be gone before g first asks for its parent
		if ((g = fork()) == 0) {
			close(gp[0]);
			close(gp[1]);
			action(SIGUSR1, on_usr1);
			while (getppid() == zlpid)
				nap(1);
			for (;;) {
				nap(20);
				if (usr1) {
					usr1 = 0;
					pid_t pp = getppid(), pg = getpgid(0);
					if (pg != zlpid)
						say("g FAIL parent %d group %d, want group %d\n", pp, pg, zlpid);
					else
						say("g ok parent %d\n", pp);
				}
			}
		}
		if (write(gp[1], &g, sizeof g) != sizeof g)
			_exit(1);
		_exit(5);
	}
	close(gp[1]);
	if (read(gp[0], &g, sizeof g) != sizeof g)
		return 1;
	close(gp[0]);
	for (int i = 0; i < 4; i++) {
		if ((s[i] = fork()) == 0) {
			action(stops[i], SIG_DFL);
			if (stops[i] == SIGTTIN) { // a second thread: the whole process stops
				pthread_t th;
				pthread_create(&th, NULL, idle, NULL);
			}
			raise(stops[i]);
			for (;;)
				pause();
		}
	}
	if ((swaited = fork()) == 0) {
		raise(SIGSTOP);
		for (;;)
			pause();
	}
	if ((tp = fork()) == 0)
		run_tp();

	settle(zk, WEXITED);
	settle(zt, WEXITED);
	settle(zl, WEXITED);
	for (int i = 0; i < 4; i++)
		settle(s[i], WSTOPPED);
	int st;
	if (waitpid(swaited, &st, WUNTRACED) != swaited || !WIFSTOPPED(st))
		say("proctree FAIL waitpid WUNTRACED of %d\n", swaited);
	while (getpgid(g) != zl)
		nap(1);
	for (int i = 0; i < 1000; i++) { // g sees P as its parent
		char path[64], buf[512];
		snprintf(path, sizeof path, "/proc/%d/stat", g);
		FILE *f = fopen(path, "r");
		int ppid = 0;
		if (f && fgets(buf, sizeof buf, f)) {
			char *r = strrchr(buf, ')');
			if (r)
				sscanf(r + 2, "%*c %d", &ppid);
		}
		if (f)
			fclose(f);
		if (ppid == getpid())
			break;
		nap(2);
	}
	do { // until the last SIGCHLD of the setup was handled
		chld_ready = chld;
		nap(50);
	} while (chld != chld_ready);
	say("pids %d %d %d %d %d %d %d %d %d %d %d\n", getpid(), zk, zt, zl, g, s[0], s[1], s[2], s[3], swaited, tp);
	for (long n = 0;; n++) {
		if (n % 10 == 0)
			say("alive P %ld\n", n / 10);
		nap(5);
		if (usr1) {
			usr1 = 0;
			check_p();
		}
		if (usr2) {
			usr2 = 0;
			for (int i = 0; i < 4; i++)
				kill(s[i], SIGCONT);
			kill(swaited, SIGCONT);
			kill(tp, SIGKILL);
			kill(g, SIGKILL);
			for (int i = 0; i < 4; i++)
				kill(s[i], SIGKILL);
			kill(swaited, SIGKILL);
			int n = 0;
			while (waitpid(-1, &st, 0) > 0)
				n++;
			say("reaped %d\n", n);
		}
	}
}
