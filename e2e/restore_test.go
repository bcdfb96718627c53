package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const countRE = `(?m)^count (\d+)$`

// checkCounterLog checks that the counter's log is "ready" followed by one
// unbroken sequence "count 0", "count 1", ... and returns the last number.
func checkCounterLog(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) < 2 || lines[0] != "ready" {
		t.Fatalf("log does not start with ready:\n%s", tailOf(data))
	}
	want := 0
	for i, l := range lines[1:] {
		if strings.HasPrefix(l, "usr1 at ") {
			continue
		}
		if l != fmt.Sprintf("count %d", want) {
			start := max(0, i-5)
			t.Fatalf("log line %d is %q, want \"count %d\"; lines around it:\n%s", i+2, l, want,
				strings.Join(lines[1+start:min(len(lines), i+7)], "\n"))
		}
		want++
	}
	return want - 1
}

// The restored counter continues where the dump caught it: the original keeps
// running after a plain dump, and after it is killed the restored copy
// rewrites the tail of the log from the dump-time offset with the same lines
// and then goes beyond, so the log stays one unbroken sequence.
func TestCounterContinues(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 20, 10*time.Second)
	img := dump(t, p)
	atDump := lastInt(p.log, countRE)
	// The original was not harmed: it keeps counting.
	p.waitInt(t, countRE, atDump+20, 10*time.Second)
	killOriginal(t, p)
	atKill := checkCounterLog(t, p.log)

	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, atKill+30, 10*time.Second)
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", r.pid)); strings.TrimSpace(string(comm)) != "counter" {
		t.Errorf("restored comm is %q, want counter", comm)
	}
	last := checkCounterLog(t, p.log)
	t.Logf("dump at ~count %d, original killed at count %d, restored reached count %d", atDump, atKill, last)
}

// A handler installed with sigaction before the dump runs after restore.
func TestSignalHandlerAfterRestore(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 10, 10*time.Second)
	img := dumpKill(t, p)
	atDump := lastInt(p.log, countRE)
	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, atDump+5, 10*time.Second)
	r.signal(t, unix.SIGUSR1)
	m := r.waitLog(t, `(?m)^usr1 at (\d+)$`, 1, 10*time.Second)
	if n, _ := strconv.Atoi(m[1]); n < atDump {
		t.Errorf("handler saw count %d, below the dump-time count %d", n, atDump)
	}
	// The process goes on after the handler.
	r.waitInt(t, countRE, lastInt(p.log, countRE)+10, 10*time.Second)
	checkCounterLog(t, p.log)
}

// Signal actions come back exactly as the kernel holds them: handler,
// flags, restorer and blocked mask of handled and ignored signals, and the
// SA_NOCLDSTOP|SA_NOCLDWAIT of a SIGCHLD left at SIG_DFL (the dump asks
// the process only for the actions /proc shows to be set, and SIGCHLD).
func TestSignalActions(t *testing.T) {
	setup(t, "sigstate")
	p := start(t, "sigstate")
	sigsRE := `(?m)^sigs .*$`
	before := p.waitLog(t, sigsRE, 1, 10*time.Second)[0]
	for _, want := range []string{" 1=ign/14000000/", "/4 10=a/14000000/", "/4800 12=b/cc000004/",
		" 13=ign/4000000/", " 17=dfl/4000003/", " 28=dfl", " 37=a/4000000/", "/8000000000000002"} {
		if !strings.Contains(before, want) {
			t.Fatalf("the original reports %q, without %q: the test would prove nothing", before, want)
		}
	}
	img := dumpKill(t, p)
	data, _ := os.ReadFile(p.log)
	seen := len(regexp.MustCompile(sigsRE).FindAll(data, -1))
	r := restoreDetached(t, img, p)
	after := r.waitLog(t, sigsRE, seen+1, 10*time.Second)[0]
	if after != before {
		t.Errorf("signal actions changed across the restore:\nbefore %s\nafter  %s", before, after)
	}
}

// Every kind of memory keeps its content and protection, and malloc and sbrk
// go on working in the restored process.
func TestMemory(t *testing.T) {
	setup(t, "memory")
	p := start(t, "memory", t.TempDir())
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	// Prove the program's checks pass before any checkpoint.
	p.signal(t, unix.SIGUSR1)
	p.waitLog(t, `(?m)^malloc ok$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	if fi, err := os.Stat(img); err == nil {
		// The 1 GiB sparse area has six pages touched: the image must not hold it all.
		t.Logf("image size %d bytes", fi.Size())
		if fi.Size() > 256<<20 {
			t.Errorf("image is %d MiB: untouched pages of the sparse area were dumped", fi.Size()>>20)
		}
	}
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^verify ok$`, 2, 20*time.Second)
	r.waitLog(t, `(?m)^malloc ok$`, 2, 20*time.Second)
	// Once more, to see that the restored process survives its own changes.
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^malloc ok$`, 3, 20*time.Second)
}

// Vector registers (ymm, or zmm and k masks with AVX-512), x87, MXCSR and
// general registers held only in registers across a dump taken mid-loop.
func TestVector(t *testing.T) {
	setup(t, "vector")
	p := start(t, "vector", "4000")
	ready := p.waitLog(t, `(?m)^ready.*$`, 1, 20*time.Second)
	t.Logf("vector: %s", ready[0])
	// Give the loop a moment to be surely inside the asm (ready is printed just before it).
	time.Sleep(200 * time.Millisecond)
	img := dumpKill(t, p)
	if data, _ := os.ReadFile(p.log); strings.Contains(string(data), "vector ") {
		t.Fatalf("the loop ended before the dump: the test proves nothing; log:\n%s", data)
	}
	r := restoreDetached(t, img, p)
	ok := r.waitLog(t, `(?m)^vector ok.*$`, 1, 30*time.Second)
	t.Logf("restored vector: %s", ok[0])
	if st := r.waitExit(t, 10*time.Second); st != "exit status 0" {
		t.Errorf("restored vector ended with %q, want exit status 0", st)
	}
}

// A process caught inside nanosleep keeps ticking after restore.
func TestSleeper(t *testing.T) {
	setup(t, "sleeper")
	p := start(t, "sleeper")
	p.waitInt(t, `(?m)^tick (\d+)$`, 2, 10*time.Second)
	img := dumpKill(t, p)
	atDump := lastInt(p.log, `(?m)^tick (\d+)$`)
	r := restoreDetached(t, img, p)
	r.waitInt(t, `(?m)^tick (\d+)$`, atDump+3, 10*time.Second)
	data, _ := os.ReadFile(p.log)
	want := "ready\n"
	for i := 1; i <= atDump+3; i++ {
		want += fmt.Sprintf("tick %d\n", i)
	}
	if !strings.HasPrefix(string(data), want) {
		t.Errorf("log is not one tick sequence:\n%s", data)
	}
}

// A process caught in sigsuspend wakes on SIGUSR1 after restore, and
// sigsuspend puts back the mask it had (SIGUSR1 blocked), not the temporary one.
func TestSleeperPause(t *testing.T) {
	setup(t, "sleeper")
	p := start(t, "sleeper", "pause")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	p.signal(t, unix.SIGUSR1)
	p.waitLog(t, `(?m)^woke 1 mask ok$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^woke 2 mask ok$`, 1, 10*time.Second)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^woke 3 mask ok$`, 1, 10*time.Second)
}

// Open files keep offsets and flags; a deleted file keeps its content;
// O_APPEND still appends after someone else made the file longer.
func TestFiles(t *testing.T) {
	setup(t, "files")
	dir := t.TempDir()
	p := start(t, "files", dir)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	bLog := filepath.Join(dir, "b.log")
	f, err := os.OpenFile(bLog, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("external\n")
	f.Close()

	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^files ok$`, 1, 10*time.Second)
	if data, _ := os.ReadFile(bLog); string(data) != "line1\nexternal\nline2\n" {
		t.Errorf("b.log is %q, want line1, external, line2", data)
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "a.txt")); string(data) != "0123456789" {
		t.Errorf("a.txt is %q, want 0123456789", data)
	}
	if _, err := os.Stat(filepath.Join(dir, "c.tmp")); err == nil {
		t.Errorf("the deleted file c.tmp is back in %s", dir)
	}
}

// A Python interpreter with a 100000-entry dict: the dict's hash is the same
// after restore and the counter goes on from where it was.
func TestPythonDict(t *testing.T) {
	setup(t)
	p := start(t, "dict.py")
	p.waitLog(t, `(?m)^ready$`, 1, 30*time.Second)
	time.Sleep(100 * time.Millisecond) // let the counter move off zero
	p.signal(t, unix.SIGUSR1)
	pyRE := `(?m)^py ok (\d+) ([0-9a-f]{64})$`
	before := p.waitLog(t, pyRE, 1, 10*time.Second)
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	after := r.waitLog(t, pyRE, 2, 20*time.Second)
	if after[2] != before[2] {
		t.Errorf("dict hash changed: before %s, after restore %s", before[2], after[2])
	}
	nb, _ := strconv.Atoi(before[1])
	na, _ := strconv.Atoi(after[1])
	if na <= nb {
		t.Errorf("counter after restore is %d, not beyond %d from before the dump", na, nb)
	}
	// And it keeps going.
	r.signal(t, unix.SIGUSR1)
	again := r.waitLog(t, pyRE, 3, 20*time.Second)
	if n, _ := strconv.Atoi(again[1]); n <= na || again[2] != before[2] {
		t.Errorf("third report %q after %q", again[0], after[0])
	}
}

// dump --kill leaves the original dead (SIGKILL, checked by dumpKill), and
// the image restores.
func TestDumpKill(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 10, 10*time.Second)
	img := dumpKill(t, p)
	atDump := checkCounterLog(t, p.log)
	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, atDump+20, 10*time.Second)
	checkCounterLog(t, p.log)
}

// A foreground restore waits for the process and exits with its exit code.
func TestForegroundExitCode(t *testing.T) {
	setup(t, "counter")
	const limit = 150
	p := start(t, "counter", strconv.Itoa(limit), "7")
	p.waitInt(t, countRE, 20, 10*time.Second)
	img := dumpKill(t, p)
	res := runChpox(t, "restore", img)
	if res.code != 7 {
		t.Errorf("chpox restore exited %d, want 7 (the restored process's exit code); stderr:\n%s", res.code, res.stderr)
	}
	if last := checkCounterLog(t, p.log); last != limit {
		t.Errorf("log ends at count %d, want %d", last, limit)
	}
	waitPIDFree(t, p.pid, 5*time.Second)
}

// SIGTERM to a foreground restore reaches the restored process, and chpox
// exits with 128+SIGTERM like the process did.
func TestForegroundSIGTERM(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 10, 10*time.Second)
	img := dumpKill(t, p)
	atDump := lastInt(p.log, countRE)

	fg := startChpox(t, "restore", img)
	// Wait until the restored process is visibly running.
	deadline := time.Now().Add(10 * time.Second)
	for lastInt(p.log, countRE) < atDump+10 {
		if fg.exited() || time.Now().After(deadline) {
			t.Fatalf("restored counter did not run (chpox %s); log:\n%s\nchpox stderr:\n%s", fg.status, tail(p.log), fg.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := fg.cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fg.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("chpox restore still runs 10s after SIGTERM; restored process: %s", procState(p.pid))
	}
	if fg.status != "exit status 143" {
		t.Errorf("chpox restore ended with %q after SIGTERM, want exit status 143 (chpox must exit, not die of the signal); stderr:\n%s",
			fg.status, fg.stderr.String())
	}
	// The restored process got the signal: it is gone, and it stopped counting.
	waitPIDFree(t, p.pid, 5*time.Second)
	n := lastInt(p.log, countRE)
	time.Sleep(100 * time.Millisecond)
	if m := lastInt(p.log, countRE); m != n {
		t.Errorf("something still counts after chpox exited: %d -> %d", n, m)
	}
}

// The image holds all of the process's memory: mode 0600, and written via a
// temporary name, so nothing else is left in the directory. A later failed
// dump leaves the last good image alone.
func TestImageMode(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	dir := t.TempDir()
	img := filepath.Join(dir, "counter.img")
	old := unix.Umask(0)
	defer unix.Umask(old)
	mustChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
	checkImageFile(t, img)
	// Again onto the same path.
	mustChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
	checkImageFile(t, img)
	good, _ := os.ReadFile(img)

	res := runChpox(t, "dump", strconv.Itoa(freePID(t)), "-o", img)
	if res.code == 0 {
		t.Fatal("dump of a free PID succeeded")
	}
	if now, _ := os.ReadFile(img); string(now) != string(good) {
		t.Errorf("a failed dump changed the existing image")
	}
	checkImageFile(t, img)
}

func checkImageFile(t *testing.T, img string) {
	t.Helper()
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("image mode %v, want -rw-------", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(img))
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("image directory holds %v, want only %s", names, filepath.Base(img))
	}
}

// inspect describes an image in text and JSON.
func TestInspect(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	img := dump(t, p)

	text := mustChpox(t, "inspect", img)
	if !strings.Contains(text.stdout, strconv.Itoa(p.pid)) || !strings.Contains(text.stdout, "counter") {
		t.Errorf("inspect output does not name pid %d and comm counter:\n%s", p.pid, text.stdout)
	}
	checkInspectJSON(t, mustChpox(t, "inspect", "--json", img).stdout, p.pid, "counter")
}

// The original keeps running after dump and inspect (sanity for both).
func TestDumpLeavesOriginalRunning(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	dump(t, p)
	n := lastInt(p.log, countRE)
	p.waitInt(t, countRE, n+20, 10*time.Second)
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("original after dump: %s, want untraced", st)
	}
	checkCounterLog(t, p.log)
}

// TestStoppedProcess: a process stopped by job control (kill -STOP) stays
// stopped through a dump, comes back stopped, and SIGCONT resumes it.
func TestStoppedProcess(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 10, 10*time.Second)
	p.signal(t, unix.SIGSTOP)
	waitState(t, p.pid, "T")
	at := lastInt(p.log, countRE)
	img := dump(t, p)
	time.Sleep(100 * time.Millisecond) // a running counter would log 10 lines meanwhile
	if st := procState(p.pid); !strings.Contains(st, "State: T") || lastInt(p.log, countRE) != at {
		t.Fatalf("after the dump the stopped counter ran: %s, count %d→%d", st, at, lastInt(p.log, countRE))
	}
	killOriginal(t, p)
	r := restoreDetached(t, img, p)
	waitState(t, r.pid, "T")
	r.signal(t, unix.SIGCONT)
	r.waitInt(t, countRE, at+20, 10*time.Second)
}

// waitState waits until /proc/PID/status shows the state letter.
func waitState(t *testing.T, pid int, letter string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if strings.Contains(procState(pid), "State: "+letter) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("pid %d never reached state %s: %s", pid, letter, procState(pid))
}

// TestCredentials: root restores a process of another user with its ids,
// groups, no capabilities and no_new_privs, and a root process with a cut
// bounding set and fewer capabilities without giving them back: restore
// never hands out more privilege than the process had.
func TestCredentials(t *testing.T) {
	setup(t, "counter")
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed:", err)
	}
	cases := []struct {
		name string
		args []string
		want []string // lines of /proc/PID/status
	}{
		{"user", []string{"--reuid=1000", "--regid=1000", "--groups=1000,27", "--no-new-privs"},
			[]string{"Uid:\t1000\t1000\t1000\t1000", "Gid:\t1000\t1000\t1000\t1000", "Groups:\t27 1000", "CapEff:\t0000000000000000", "NoNewPrivs:\t1"}},
		{"root with fewer capabilities", []string{"--bounding-set=-net_raw,-sys_admin", "--inh-caps=+kill"},
			[]string{"Uid:\t0\t0\t0\t0", "CapInh:\t0000000000000020"}},
		// SECBIT_NOROOT and its lock: lost, an execve would give root
		// its capabilities back.
		{"root with securebits", []string{"--securebits=+noroot,+noroot_locked"}, []string{"Uid:\t0\t0\t0\t0"}},
		// An ambient capability must be raised again after capset.
		{"root with ambient capabilities", []string{"--inh-caps=+kill", "--ambient-caps=+kill"}, []string{"CapAmb:\t0000000000000020"}},
	}
	// The user's files (its program, mapped again at restore) must be
	// reachable by the user: restore opens them with the process's ids.
	if err := os.Chmod(workDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := startExe(t, "counter", setpriv, append(c.args, progs["counter"])...)
			// The user must be able to reopen its log by path at restore
			// (t.TempDir makes 0700 directories, two levels of them).
			os.Chmod(filepath.Dir(filepath.Dir(p.log)), 0o755)
			os.Chmod(filepath.Dir(p.log), 0o755)
			os.Chmod(p.log, 0o666)
			p.waitInt(t, countRE, 5, 10*time.Second)
			before := statusLines(t, p.pid)
			img := dumpKill(t, p)
			r := restoreDetached(t, img, p)
			r.waitInt(t, countRE, lastInt(p.log, countRE)+5, 10*time.Second)
			after := statusLines(t, r.pid)
			for _, k := range []string{"Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"} {
				if before[k] != after[k] {
					t.Errorf("%s: %q before, %q after restore", k, before[k], after[k])
				}
			}
			for _, w := range c.want {
				k, v, _ := strings.Cut(w, ":")
				if strings.TrimSpace(after[k]) != strings.TrimSpace(v) {
					t.Errorf("%s after restore is %q, want %q", k, after[k], v)
				}
			}
			// Securebits are not in /proc: the restored process dumped
			// again shows them.
			if strings.Contains(strings.Join(c.args, " "), "securebits") {
				for _, in := range []string{img, dump(t, r)} {
					if insp := mustChpox(t, "inspect", in).stdout; !strings.Contains(insp, "securebits 0x3") {
						t.Errorf("inspect %s shows no securebits 0x3:\n%s", in, insp)
					}
				}
			}
		})
	}
}

// statusLines reads /proc/PID/status into a map of field to value.
func statusLines(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
}

// TestProcessAttributes: umask, personality and resource limits that the
// program did not choose itself come back: each one differs from the
// defaults chpox restore itself runs with.
func TestProcessAttributes(t *testing.T) {
	setup(t, "counter")
	p := startExe(t, "counter", "/bin/sh", "-c", "umask 0027; ulimit -n 777; exec setarch x86_64 -R "+progs["counter"])
	p.waitInt(t, countRE, 5, 10*time.Second)
	attrs := func(pid int) map[string]string {
		m := map[string]string{"Umask": statusLines(t, pid)["Umask"]}
		pers, _ := os.ReadFile(fmt.Sprintf("/proc/%d/personality", pid))
		m["personality"] = strings.TrimSpace(string(pers))
		limits, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
		for _, l := range strings.Split(string(limits), "\n") {
			if strings.HasPrefix(l, "Max open files") {
				m["nofile"] = strings.Join(strings.Fields(l)[3:5], " ")
			}
		}
		return m
	}
	before := attrs(p.pid)
	want := map[string]string{"Umask": "0027", "personality": "00040000", "nofile": "777 777"}
	for k, v := range want {
		if before[k] != v {
			t.Fatalf("the original's %s is %q, want %q: the test would prove nothing", k, before[k], v)
		}
	}
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, lastInt(p.log, countRE)+5, 10*time.Second)
	if after := attrs(r.pid); !reflect.DeepEqual(after, before) {
		t.Errorf("after restore %v, before %v", after, before)
	}
}
