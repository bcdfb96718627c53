package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func tidsOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, e := range ents {
		n, _ := strconv.Atoi(e.Name())
		out = append(out, n)
	}
	sort.Ints(out)
	return out
}

// TestSeccomp: a process under seccomp comes back with every filter of
// every thread: two threads that shared a filter still share it (a later
// SECCOMP_FILTER_FLAG_TSYNC names the same thread as the one that does
// not), the third keeps its own extra filter, installed with prctl, and
// the filters still act: getppid fails with EPERM, getuid in the third
// thread with EACCES, getpgid there kills the process with SIGSYS.
func TestSeccomp(t *testing.T) {
	setup(t, "seccomp")
	p := start(t, "seccomp")
	keys := []string{"S 0", "S 1", "S 2"}
	before := lastLines(t, p, 0, 2, keys...)
	want := map[string]string{
		"S 0": "S 0 ppid=-1 uid=0 mode=2 filters=1",
		"S 1": "S 1 ppid=-1 uid=0 mode=2 filters=1",
		"S 2": "S 2 ppid=-1 uid=-13 mode=2 filters=2",
	}
	for k, w := range want {
		if before[k] != w {
			t.Fatalf("the original reports %q, want %q: the test would prove nothing", before[k], w)
		}
	}
	tids := tidsOf(t, p.pid)
	if len(tids) != 3 {
		t.Fatalf("threads %v, want 3", tids)
	}
	tsync := fmt.Sprintf("T tsync=%d", tids[2])
	p.signal(t, unix.SIGUSR1)
	if got := lastLines(t, p, 0, 1, "T")["T"]; got != tsync {
		t.Fatalf("the original reports %q, want %q", got, tsync)
	}
	img := dumpKill(t, p)
	filters := []string{"seccomp filters: #1 7 insns log, 3 threads; #2 9 insns after #1, 1 threads", "seccomp 2 filters (#1 #2)"}
	insp := mustChpox(t, "inspect", img).stdout
	for _, w := range filters {
		if !strings.Contains(insp, w) {
			t.Errorf("inspect does not show %q:\n%s", w, insp)
		}
	}
	r := restoredSame(t, img, p, before, keys...)
	off := logSize(p.log)
	r.signal(t, unix.SIGUSR1)
	if got := lastLines(t, r, off, 1, "T")["T"]; got != tsync {
		t.Errorf("after restore the main thread's TSYNC reports %q, want %q: threads 0 and 1 no longer share their filter", got, tsync)
	}
	// The kernel's own view: the restored filters, flags (LOG) included,
	// dumped again.
	again := mustChpox(t, "inspect", dump(t, r)).stdout
	for _, w := range filters {
		if !strings.Contains(again, w) {
			t.Errorf("the restored process, dumped again, does not show %q:\n%s", w, again)
		}
	}
	r.signal(t, unix.SIGUSR2)
	if st := r.waitExit(t, 10*time.Second); st != "killed by SIGSYS" {
		t.Errorf("getpgid in thread 2: the restored process ended with %q, want killed by SIGSYS", st)
	}
}

// TestSeccompRefused: what chpox cannot checkpoint under seccomp is refused
// at dump, by name, and the process runs on as it was. A filter that
// would kill the process on a call chpox must inject is never run into:
// the dump checks the filters first. (A thread in strict mode is no longer
// refused as root: TestSeccompStrict.)
func TestSeccompRefused(t *testing.T) {
	setup(t, "seccomp")
	for _, c := range []struct{ mode, words string }{
		{"denymmap", "answers KILL_PROCESS to system call 9"},
		// the trampoline's recovery code, should chpox die mid-call
		{"nosigmask", "answers ERRNO(1) to system call 14"},
		{"notif", "SECCOMP_RET_USER_NOTIF"},
		{"dropped", "neither no_new_privs nor CAP_SYS_ADMIN"},
	} {
		t.Run(c.mode, func(t *testing.T) {
			p := start(t, "seccomp", c.mode)
			p.waitInt(t, `tick (\d+)`, 3, 10*time.Second)
			var child int
			if c.mode == "strict" {
				p.waitLog(t, "strict child ready", 1, 10*time.Second)
				kids := childrenOf(p.pid)
				if len(kids) != 1 {
					t.Fatalf("children %v, want the strict child", kids)
				}
				child = kids[0]
			}
			img := filepath.Join(t.TempDir(), "x.img")
			r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
			wantFailure(t, r, 6, strings.Fields(c.words)...)
			if !strings.Contains(r.stderr, c.words) {
				t.Errorf("stderr %q does not say %q", r.stderr, c.words)
			}
			if _, err := os.Stat(img); err == nil {
				t.Error("a refused dump wrote an image")
			}
			p.waitInt(t, `tick (\d+)`, lastInt(p.log, `tick (\d+)`)+3, 10*time.Second)
			if child != 0 {
				if st := procState(child); !strings.Contains(st, "State: S") {
					t.Errorf("the strict child after the refused dump: %s", st)
				}
				killAtEnd(t, child)
			}
		})
	}
}

// seccompMode is the Seccomp: line of /proc/PID/status.
func seccompMode(pid int) string {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Seccomp:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "Seccomp:"))
		}
	}
	return "?"
}

// strictAlive has the strict child write once more (read and write only)
// and checks it is in strict mode.
func strictAlive(t *testing.T, p *proc, child int, when string) {
	t.Helper()
	strictAliveTraced(t, p, child, 0, when)
}

// strictAliveTraced: strictAlive for a child traced by tracer.
func strictAliveTraced(t *testing.T, p *proc, child, tracer int, when string) {
	t.Helper()
	before := strings.Count(readFile(t, p.log), "strict child alive")
	p.signal(t, unix.SIGUSR1)
	p.waitLog(t, `strict child alive \d+`, before+1, 10*time.Second)
	if m := seccompMode(child); m != "1" {
		t.Fatalf("%s: the strict child (pid %d) has Seccomp: %s, want 1", when, child, m)
	}
	if tr := tracerOf(t, child); tr != tracer {
		t.Fatalf("%s: the strict child: %s, traced by %d, want by %d", when, procState(child), tr, tracer)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestSeccompStrict: a child in seccomp strict mode (only read, write,
// exit and sigreturn) is checkpointed, its sandbox suspended for chpox
// alone while it injects (PTRACE_O_SUSPEND_SECCOMP): a plain dump leaves
// it running and still strict, chpox killed mid-dump leaves it running
// and still strict (the kernel drops the suspension with the tracer), and
// the restored child runs on in strict mode: it still answers with
// write(2), and a forbidden call kills it with SIGKILL.
func TestSeccompStrict(t *testing.T) {
	setup(t, "seccomp")
	p := start(t, "seccomp", "strict")
	p.waitLog(t, "strict child ready", 1, 10*time.Second)
	kids := childrenOf(p.pid)
	if len(kids) != 1 {
		t.Fatalf("children %v, want the strict child", kids)
	}
	child := kids[0]
	killAtEnd(t, child)
	strictAlive(t, p, child, "the original")

	dump(t, p)
	strictAlive(t, p, child, "after a plain dump")
	// --live would inject its userfaultfd calls past the sandbox: the
	// sandboxed process is copied frozen instead, and says so.
	if r := mustChpox(t, "dump", "--live", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "live.img")); !strings.Contains(r.stderr, "runs under seccomp") {
		t.Errorf("dump --live of a sandboxed tree said %q, want the frozen copy named", r.stderr)
	}
	strictAlive(t, p, child, "after a dump --live")

	img := dumpKill(t, p)
	waitPIDFree(t, child, 10*time.Second)
	if insp := mustChpox(t, "inspect", img).stdout; !strings.Contains(insp, "seccomp strict") {
		t.Errorf("inspect does not show seccomp strict:\n%s", insp)
	}
	r := restoreDetached(t, img, p)
	if kids := childrenOf(r.pid); len(kids) != 1 || kids[0] != child {
		t.Fatalf("restored children %v, want [%d]", kids, child)
	}
	strictAlive(t, r, child, "after restore")
	off := logSize(r.log)
	r.signal(t, unix.SIGUSR2)
	if got := lastLines(t, r, off, 1, "strict child")["strict child"]; got != "strict child killed by 9" {
		t.Errorf("getpid in the restored strict child: %q, want strict child killed by 9", got)
	}

	// chpox killed while the child's sandbox is suspended for it: the
	// kernel drops the suspension with the tracer, and the child runs on,
	// strict mode enforced.
	p = start(t, "seccomp", "strict")
	p.waitLog(t, "strict child ready", 1, 10*time.Second)
	if kids = childrenOf(p.pid); len(kids) != 1 {
		t.Fatalf("children %v, want the strict child", kids)
	}
	child = kids[0]
	killAtEnd(t, child)
	cmd := exec.Command(chpoxBin, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "crash.img"))
	cmd.Env = append(os.Environ(), "CHPOX_TEST_CRASH=seccomp-suspended")
	if out, err := cmd.CombinedOutput(); exitCode(err) != 128+int(unix.SIGKILL) {
		t.Fatalf("chpox dump with CHPOX_TEST_CRASH: %v, want killed; output %s", err, out)
	}
	strictAlive(t, p, child, "after chpox was killed mid-dump")
	off = logSize(p.log)
	p.signal(t, unix.SIGUSR2)
	if got := lastLines(t, p, off, 1, "strict child")["strict child"]; got != "strict child killed by 9" {
		t.Errorf("getpid in the strict child after chpox died mid-dump: %q, want strict child killed by 9 (its sandbox stayed suspended?)", got)
	}
}

// TestSeccompStrictAsUserRefused: without CAP_SYS_ADMIN chpox cannot
// suspend a sandbox, so a user's dump of its own process with a thread in
// strict mode is refused, naming it, and the child runs on, still strict.
func TestSeccompStrictAsUserRefused(t *testing.T) {
	setup(t, "seccomp")
	p, dir := startAsUser(t, "seccomp", "strict")
	p.waitLog(t, "strict child ready", 1, 10*time.Second)
	kids := childrenOf(p.pid)
	if len(kids) != 1 {
		t.Fatalf("children %v, want the strict child", kids)
	}
	child := kids[0]
	killAtEnd(t, child)
	img := filepath.Join(dir, "x.img")
	out, err := exec.Command("setpriv", "--reuid=1000", "--regid=1000", "--clear-groups", chpoxBin, "dump", strconv.Itoa(p.pid), "-o", img).CombinedOutput()
	if code := exitCode(err); code != 6 {
		t.Fatalf("dump as uid 1000: exit %d, want 6; output %s", code, out)
	}
	t.Logf("refusal: %s", out)
	for _, w := range []string{"seccomp strict mode", "CAP_SYS_ADMIN"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("the refusal %q does not say %q", out, w)
		}
	}
	if _, err := os.Stat(img); err == nil {
		t.Error("a refused dump wrote an image")
	}
	strictAlive(t, p, child, "after the refused dump")
}

// TestSeccompStrictThread: the second thread of a process is in strict
// mode, the main thread not: after restore that thread alone is in strict
// mode and answers, and its forbidden call kills it alone.
func TestSeccompStrictThread(t *testing.T) {
	setup(t, "seccomp")
	p := start(t, "seccomp", "strictthread")
	p.waitLog(t, "strict child ready", 1, 10*time.Second)
	tids := tidsOf(t, p.pid)
	if len(tids) != 2 || tids[0] != p.pid {
		t.Fatalf("threads %v, want the main thread and the strict one", tids)
	}
	strict := tids[1]
	strictAlive(t, p, strict, "the original")
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	if got := tidsOf(t, r.pid); len(got) != 2 || got[1] != strict {
		t.Fatalf("restored threads %v, want %v", got, tids)
	}
	strictAlive(t, r, strict, "after restore")
	if m := seccompMode(r.pid); m != "0" {
		t.Errorf("the restored main thread has Seccomp: %s, want 0", m)
	}
	r.signal(t, unix.SIGUSR2)
	waitFor(t, 10*time.Second, "the strict thread to die of its forbidden call", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", r.pid, strict))
		return err != nil
	})
	r.waitInt(t, `tick (\d+)`, lastInt(r.log, `tick (\d+)`)+3, 10*time.Second)
}

// TestSeccompStrictRun: a checkpoint of a `chpox run` job with a child in
// strict mode: the tracer stays, so the checkpoint itself must give the
// sandbox back (the kernel drops the suspension only with the tracer):
// after it the child still answers, and a forbidden call still kills it.
func TestSeccompStrictRun(t *testing.T) {
	setup(t, "seccomp")
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--signal", "31", "-o", img, "--", progs["seccomp"], "strict")
	p := adopt(t, "seccomp", j.root, j.stdout)
	p.waitLog(t, "strict child ready", 1, 10*time.Second)
	kids := childrenOf(p.pid)
	if len(kids) != 1 {
		t.Fatalf("children %v, want the strict child", kids)
	}
	child := kids[0]
	killAtEnd(t, child)
	run := j.cmd.Process.Pid
	strictAliveTraced(t, p, child, run, "under chpox run")
	unix.Kill(j.root, 31)
	j.waitCheckpoint(t, 1, 2, img)
	if insp := mustChpox(t, "inspect", img).stdout; !strings.Contains(insp, "seccomp strict") {
		t.Errorf("inspect does not show seccomp strict:\n%s", insp)
	}
	strictAliveTraced(t, p, child, run, "after the checkpoint")
	off := logSize(p.log)
	p.signal(t, unix.SIGUSR2)
	if got := lastLines(t, p, off, 1, "strict child")["strict child"]; got != "strict child killed by 9" {
		t.Errorf("getpid in the strict child after the checkpoint: %q, want strict child killed by 9 (its sandbox stayed suspended?)", got)
	}
}
