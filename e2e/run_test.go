package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/procinfo"
)

// runJob is a `chpox run` in the background. Its stdout (O_APPEND) and
// stderr are files: the job inherits them, and a pipe to this test would
// make every checkpoint refuse.
type runJob struct {
	cmd            *exec.Cmd
	stdout, stderr string // paths
	img            string // -o
	root           int    // the job's root process
	done           chan struct{}
	status         string
}

func (j *runJob) exited() bool {
	return closed(j.done)
}

// startRun starts `chpox run ARGS...` and waits until it names the job's
// root process. The job's root is killed at the end of the test, then chpox.
func startRun(t *testing.T, args ...string) *runJob {
	t.Helper()
	dir := t.TempDir()
	j := &runJob{stdout: filepath.Join(dir, "job.out"), stderr: filepath.Join(dir, "run.err"), done: make(chan struct{})}
	for i, a := range args {
		if a == "-o" && i+1 < len(args) {
			j.img = args[i+1]
		}
	}
	out, err := os.OpenFile(j.stdout, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	errf, err := os.OpenFile(j.stderr, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	cmdline := append([]string{"run"}, args...)
	if len(args) > 0 && args[0] == "-v" { // a global flag: before the command
		cmdline = append([]string{"-v", "run"}, args[1:]...)
	}
	j.cmd = exec.Command(chpoxBin, cmdline...)
	j.cmd.Stdout, j.cmd.Stderr = out, errf
	if err := j.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		j.cmd.Wait()
		j.status = describeWait(j.cmd.ProcessState.Sys().(syscall.WaitStatus))
		close(j.done)
	}()
	t.Cleanup(func() {
		if !j.exited() {
			j.cmd.Process.Kill()
			<-j.done
		}
		t.Logf("chpox run %s: %s; stderr:\n%s", strings.Join(args, " "), j.status, tail(j.stderr))
	})
	m := j.waitFile(t, j.stderr, `(?m)^chpox: job pid (\d+);`, 1, 10*time.Second)
	j.root = atoi(m[1])
	adopt(t, "job", j.root, j.stdout)
	t.Logf("chpox run %s: pid %d, job pid %d", strings.Join(args, " "), j.cmd.Process.Pid, j.root)
	return j
}

// child is the pid of runjob's child ("child pid N"), killed at the end
// of the test.
func (j *runJob) child(t *testing.T) int {
	t.Helper()
	child := atoi(j.waitFile(t, j.stdout, `(?m)^child pid (\d+)$`, 1, 10*time.Second)[1])
	killAtEnd(t, child)
	return child
}

// waitEnd waits for chpox run to end, after what happened (for the
// messages), and checks its exit status.
func (j *runJob) waitEnd(t *testing.T, timeout time.Duration, after, want string) {
	t.Helper()
	select {
	case <-j.done:
	case <-time.After(timeout):
		t.Fatalf("chpox run still runs %v after %s", timeout, after)
	}
	if j.status != want {
		t.Errorf("chpox run ended with %q after %s, want %s", j.status, after, want)
	}
}

// waitFile polls a file of the job until pattern matches n times and
// returns the last match. It fails at once if the job printed GOT TRIGGER
// or FAIL, or if chpox run ended.
func (j *runJob) waitFile(t *testing.T, path, pattern string, n int, timeout time.Duration) []string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(timeout)
	for {
		data, _ := os.ReadFile(path)
		if bad := regexp.MustCompile(`(?m)^.*(GOT TRIGGER|FAIL).*$`).Find(data); bad != nil {
			t.Fatalf("%s: %q; job output:\n%s", path, bad, tail(j.stdout))
		}
		if all := re.FindAllStringSubmatch(string(data), -1); len(all) >= n {
			return all[len(all)-1]
		}
		if j.exited() || time.Now().After(deadline) {
			t.Fatalf("%d× %q not in %s within %v (chpox run: %s, job root %s); chpox run stderr:\n%s\njob output:\n%s",
				n, pattern, filepath.Base(path), timeout, j.status, procState(j.root), tail(j.stderr), tail(j.stdout))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// count is the last "ROLE count N" the job printed, or -1.
func (j *runJob) count(role string) int {
	return lastInt(j.stdout, `(?m)^`+role+` count (\d+)$`)
}

// waitCount waits until the job's ROLE count reaches min.
func (j *runJob) waitCount(t *testing.T, role string, min int) int {
	t.Helper()
	j.waitFile(t, j.stdout, `(?m)^`+role+` count (\d+)$`, 1, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n := j.count(role); n >= min {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s count did not reach %d within 10s (job root %s); output:\n%s", role, min, procState(j.root), tail(j.stdout))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkRunLog checks the job's output: no GOT TRIGGER, and in each part
// (parts are separated by MARK lines the test appends before a restore)
// each role counts up by one with no gap. It returns the first count of
// ROLE in each part.
func checkRunLog(t *testing.T, path string, roles ...string) map[string][]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	first := map[string][]int{}
	next := map[string]int{}
	lineRE := regexp.MustCompile(`^(\w+) count (\d+)$`)
	lines := strings.Split(string(data), "\n")
	lines = lines[:len(lines)-1]
	for i, l := range lines {
		switch {
		case l == "MARK":
			next = map[string]int{}
			continue
		case strings.Contains(l, "GOT TRIGGER"):
			t.Errorf("line %d: %q: the trigger signal reached the job", i+1, l)
			continue
		case strings.HasPrefix(l, "child pid "):
			continue
		}
		m := lineRE.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("line %d: unexpected %q", i+1, l)
			continue
		}
		n := atoi(m[2])
		if want, ok := next[m[1]]; !ok {
			first[m[1]] = append(first[m[1]], n)
		} else if n != want {
			t.Errorf("line %d: %q, want %s count %d (the count was disturbed); lines around it:\n%s",
				i+1, l, m[1], want, strings.Join(lines[max(0, i-5):min(len(lines), i+5)], "\n"))
			return first
		}
		next[m[1]] = n + 1
	}
	for _, r := range roles {
		if len(first[r]) == 0 {
			t.Errorf("no %s count in the job's output", r)
		}
	}
	return first
}

var checkpointRE = `(?m)^chpox: checkpoint (\d+) at \d\d:\d\d:\d\d: (\d+) processes, (\d+) bytes(?:, \d+ unchanged taken from the last image(?:, \d+ of them sharing its blocks)?)?, frozen \S+ -> (.+)$`

// waitCheckpoint waits for and checks the n-th checkpoint line of chpox run.
func (j *runJob) waitCheckpoint(t *testing.T, n, procs int, img string) {
	t.Helper()
	j.waitFile(t, j.stderr, fmt.Sprintf(`(?m)^chpox: checkpoint %d at `, n), 1, 20*time.Second)
	data, _ := os.ReadFile(j.stderr)
	if strings.Contains(string(data), "failed") {
		t.Fatalf("a checkpoint failed:\n%s", data)
	}
	all := regexp.MustCompile(checkpointRE).FindAllStringSubmatch(string(data), -1)
	if len(all) < n {
		t.Fatalf("checkpoint line %d is not of the form %q:\n%s", n, checkpointRE, data)
	}
	m := all[n-1]
	if atoi(m[1]) != n || atoi(m[2]) != procs || m[4] != img {
		t.Errorf("checkpoint line %q, want checkpoint %d of %d processes to %s", m[0], n, procs, img)
	}
	if size := fileSize(img); size <= 0 || atoi(m[3]) < 4096 {
		t.Errorf("checkpoint line says %s bytes, %s has %d", m[3], img, size)
	}
}

// waitRestoredCounts waits until the restored job (root and child) has
// counted a while after the last MARK.
func waitRestoredCounts(t *testing.T, path string, r *proc) {
	t.Helper()
	waitFor(t, 10*time.Second, "the restored job counts", func() bool {
		data, _ := os.ReadFile(path)
		after := string(data[strings.LastIndex(string(data), "MARK\n")+1:])
		if r.exited() {
			t.Fatalf("the restored job ended: %s; output:\n%s", r.status, tail(path))
		}
		return strings.Count(after, "root count") >= 20 && strings.Count(after, "child count") >= 10
	})
}

func appendMark(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("MARK\n")
	f.Close()
}

// Two checkpoints on the trigger signal (given as a number), sent once to
// the root and once to the exec'd child: the image holds the later one,
// the job never sees the signal and its count is not disturbed. chpox run
// killed with SIGKILL leaves the job running untraced.
func TestRunCheckpoints(t *testing.T) {
	setup(t, "runjob")
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--signal", "10", "-o", img, "--", progs["runjob"], "tree")
	child := j.child(t)
	j.waitCount(t, "root", 20)
	j.waitCount(t, "child", 20)

	unix.Kill(j.root, unix.SIGUSR1)
	j.waitCheckpoint(t, 1, 2, img)
	c1 := j.count("root")
	j.waitCount(t, "root", c1+30)
	c2lo := j.count("root")
	unix.Kill(child, unix.SIGUSR1)
	j.waitCheckpoint(t, 2, 2, img)
	c2hi := j.count("root")
	j.waitCount(t, "root", c2hi+10)
	j.waitCount(t, "child", j.count("child")+10)
	checkRunLog(t, j.stdout, "root", "child")
	for _, pid := range []int{j.root, child} {
		if tr := tracerOf(t, pid); tr != j.cmd.Process.Pid {
			t.Errorf("pid %d under chpox run: %s, traced by %d, want by chpox run (%d)", pid, procState(pid), tr, j.cmd.Process.Pid)
		}
	}

	// chpox run dies: the job goes on, untraced.
	j.cmd.Process.Kill()
	<-j.done
	for _, pid := range []int{j.root, child} {
		waitFor(t, 5*time.Second, fmt.Sprintf("pid %d untraced after chpox run was killed", pid), func() bool {
			return strings.Contains(procState(pid), "TracerPid: 0")
		})
		if s := mustStat(t, pid); s.state == "T" || s.state == "t" || s.state == "Z" {
			t.Errorf("after chpox run was killed: %v", s)
		}
	}
	j.waitCount(t, "root", j.count("root")+20)
	j.waitCount(t, "child", j.count("child")+20)
	checkRunLog(t, j.stdout, "root", "child")

	// The image holds the second checkpoint.
	killPIDs(t, j.root, child)
	appendMark(t, j.stdout)
	r := restoreDetached(t, img, &proc{name: "runjob", pid: j.root, log: j.stdout})
	if s := mustStat(t, child); s.ppid != j.root {
		t.Errorf("restored child: %v, want ppid %d", s, j.root)
	}
	waitRestoredCounts(t, j.stdout, r)
	first := checkRunLog(t, j.stdout, "root", "child")
	if len(first["root"]) != 2 {
		t.Fatalf("root count starts %v, want two parts (original, restored)", first["root"])
	}
	got := first["root"][1]
	t.Logf("checkpoint 1 at root count ~%d, checkpoint 2 between %d and %d; restored from %d", c1, c2lo, c2hi, got)
	if got < c2lo || got > c2hi+1 {
		t.Errorf("the restored job starts at root count %d, want the second checkpoint's (between %d and %d; the first was at ~%d)",
			got, c2lo, c2hi+1, c1)
	}
}

// --interval checkpoints periodically (trigger by name); the job never
// sees the trigger; SIGTERM to chpox run reaches the job, and chpox run
// exits with the job's status.
func TestRunInterval(t *testing.T) {
	setup(t, "runjob")
	img := filepath.Join(t.TempDir(), "job.chp")
	began := time.Now()
	j := startRun(t, "--signal", "SIGUSR2", "--interval", "300ms", "-o", img, "--", progs["runjob"])
	for n := 1; n <= 3; n++ {
		j.waitCheckpoint(t, n, 1, img)
	}
	if d := time.Since(began); d < 800*time.Millisecond {
		t.Errorf("3 checkpoints within %v with --interval 300ms", d)
	}
	j.waitCount(t, "root", j.count("root")+10)
	checkRunLog(t, j.stdout, "root")
	if ps := imageProcs(t, img); len(ps) != 1 || ps[0].PID != j.root {
		t.Errorf("the image holds %v, want the job %d", imagePIDs(ps), j.root)
	}

	if err := j.cmd.Process.Signal(unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-j.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("chpox run still runs 10s after SIGTERM; job: %s", procState(j.root))
	}
	if j.status != "exit status 77" {
		t.Errorf("chpox run ended with %q after SIGTERM, want exit status 77 (the job's SIGTERM handler exits 77); output:\n%s",
			j.status, tail(j.stdout))
	}
	if data, _ := os.ReadFile(j.stdout); !strings.Contains(string(data), "got SIGTERM\n") {
		t.Errorf("the job did not get SIGTERM; output:\n%s", tail(j.stdout))
	}
	waitPIDFree(t, j.root, 5*time.Second)
}

// chpox run exits with the job's exit status.
func TestRunExitStatus(t *testing.T) {
	setup(t, "runjob")
	j := startRun(t, "-o", filepath.Join(t.TempDir(), "job.chp"), "--", progs["runjob"], "30", "7")
	select {
	case <-j.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("chpox run still runs; job: %s", procState(j.root))
	}
	if j.status != "exit status 7" {
		t.Errorf("chpox run ended with %q, want exit status 7 (the job's)", j.status)
	}
	if n := j.count("root"); n != 30 {
		t.Errorf("the job counted to %d, want 30", n)
	}
}

// chpox dump of a process under chpox run goes through the supervisor; the
// job stays traced by chpox run and keeps counting; the image restores.
// A job killed by a signal makes chpox run exit 128+N.
func TestRunDumpSupervised(t *testing.T) {
	setup(t, "runjob")
	j := startRun(t, "--signal", "USR1", "-o", filepath.Join(t.TempDir(), "default.chp"), "--", progs["runjob"], "tree")
	child := j.child(t)
	j.waitCount(t, "root", 20)
	j.waitCount(t, "child", 5)

	// A supervised tree is checkpointed whole: --no-children is a usage error.
	nc := runChpox(t, "dump", "--no-children", strconv.Itoa(j.root), "-o", filepath.Join(t.TempDir(), "nc.chp"))
	wantFailure(t, nc, 2, "--no-children")

	img := filepath.Join(t.TempDir(), "dumped.chp")
	lo := j.count("root")
	r := mustChpox(t, "dump", strconv.Itoa(j.root), "-o", img)
	hi := j.count("root")
	if !strings.Contains(r.stderr, "2 processes") {
		t.Errorf("dump stderr %q does not say 2 processes", r.stderr)
	}
	if ps := imageProcs(t, img); len(ps) != 2 {
		t.Errorf("the image holds %v, want %d and %d", imagePIDs(ps), j.root, child)
	}
	j.waitCount(t, "root", hi+20)
	j.waitCount(t, "child", j.count("child")+10)
	for _, pid := range []int{j.root, child} {
		if st := procState(pid); !strings.Contains(st, fmt.Sprintf("TracerPid: %d", j.cmd.Process.Pid)) {
			t.Errorf("pid %d after chpox dump: %s, want still traced by chpox run (%d)", pid, st, j.cmd.Process.Pid)
		}
	}
	checkRunLog(t, j.stdout, "root", "child")

	killPIDs(t, j.root, child)
	j.waitEnd(t, 10*time.Second, "SIGKILL of its job", "exit status 137")
	appendMark(t, j.stdout)
	rp := restoreDetached(t, img, &proc{name: "runjob", pid: j.root, log: j.stdout})
	if s := mustStat(t, child); s.ppid != j.root {
		t.Errorf("restored child: %v, want ppid %d", s, j.root)
	}
	waitRestoredCounts(t, j.stdout, rp)
	first := checkRunLog(t, j.stdout, "root", "child")
	if len(first["root"]) != 2 || first["root"][1] < lo || first["root"][1] > hi+1 {
		t.Errorf("root count starts %v; the restored part should start between %d and %d", first["root"], lo, hi+1)
	}
}

// TestRunStormForking: a job that forks, execs and reaps a child all the
// time gets 200 trigger signals, 2 ms apart. None reaches it (SIGUSR2 would
// kill the shell), checkpoints keep coming, and the last image restores a
// shell that counts on.
func TestRunStormForking(t *testing.T) {
	setup(t)
	img := filepath.Join(t.TempDir(), "busy.chp")
	j := startRun(t, "--signal", "USR2", "-o", img, "--", "/bin/sh", "-c",
		`i=0; while :; do /bin/true; i=$((i+1)); [ $((i % 20)) -eq 0 ] && echo "round $i"; done`)
	re := `(?m)^round (\d+)$`
	j.waitFile(t, j.stdout, re, 2, 10*time.Second)
	for range 200 {
		unix.Kill(j.root, unix.SIGUSR2)
		time.Sleep(2 * time.Millisecond)
	}
	j.waitFile(t, j.stderr, `(?m)^chpox: checkpoint \d+ at `, 2, 30*time.Second)
	before := lastInt(j.stdout, re)
	j.waitFile(t, j.stdout, fmt.Sprintf(`(?m)^round %d$`, before+200), 1, 20*time.Second)
	if j.exited() {
		t.Fatalf("chpox run ended: %s", j.status)
	}
	if data, _ := os.ReadFile(j.stderr); strings.Contains(string(data), "failed") {
		t.Errorf("a checkpoint failed:\n%s", tail(j.stderr))
	}
	// The job, not chpox, is killed: chpox run ends with it.
	unix.Kill(j.root, unix.SIGKILL)
	select {
	case <-j.done:
	case <-time.After(10 * time.Second):
		t.Fatal("chpox run did not end with its job")
	}
	waitImagePIDsFree(t, img)
	r := restoreDetached(t, img, &proc{name: "busy", pid: j.root, log: j.stdout})
	r.waitInt(t, re, lastInt(j.stdout, re)+100, 10*time.Second)
}

// TestRunRootKilledMidCheckpoint: the job's root dies while a checkpoint
// waits for it to stop (it waits for its vfork child, which no signal
// interrupts). The checkpoint fails, and chpox run ends with its job,
// status 137, at once: its own wait had taken the root's end, and chpox
// run used to wait for that end forever.
func TestRunRootKilledMidCheckpoint(t *testing.T) {
	setup(t, "holder")
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--signal", "USR2", "-o", img, "--", progs["holder"], "vfork")
	j.waitFile(t, j.stdout, `(?m)^ready$`, 1, 10*time.Second)
	time.Sleep(100 * time.Millisecond) // in vfork now (its child sleeps 3 s)
	killAtEnd(t, childrenOf(j.root)...)
	// To chpox, not to the job: a process in vfork takes no signal but
	// SIGKILL.
	unix.Kill(j.cmd.Process.Pid, unix.SIGUSR2)
	time.Sleep(500 * time.Millisecond) // the checkpoint waits for the root to stop
	unix.Kill(j.root, unix.SIGKILL)
	j.waitEnd(t, 5*time.Second, "SIGKILL of its job", "exit status 137")
	if _, err := os.Stat(img); err == nil {
		t.Errorf("the failed checkpoint left %s", img)
	}
}

// TestRunAttach: chpox run --attach PID makes a process chpox did not
// start a registered tree: the trigger sent to it checkpoints it, the
// second checkpoint takes what did not change from the first, chpox dump
// of it is served by chpox run, and SIGTERM to chpox lets it go on,
// untraced. Killed, it restores from the last checkpoint and counts on.
func TestRunAttach(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--attach", strconv.Itoa(p.pid), "--signal", "USR2", "-o", img)
	if j.root != p.pid {
		t.Fatalf("chpox run --attach %d says job pid %d", p.pid, j.root)
	}
	if tr := tracerOf(t, p.pid); tr != j.cmd.Process.Pid {
		t.Fatalf("attached: %s, traced by %d, want by chpox run (%d)", procState(p.pid), tr, j.cmd.Process.Pid)
	}
	for i := 1; i <= 2; i++ {
		unix.Kill(p.pid, unix.SIGUSR2)
		j.waitFile(t, j.stderr, `(?m)^chpox: checkpoint \d+ at .* -> `+regexp.QuoteMeta(img)+`$`, i, 10*time.Second)
	}
	if log := readFile(t, j.stderr); !strings.Contains(log, "unchanged taken from the last image") {
		t.Errorf("the second checkpoint took nothing from the first:\n%s", log)
	}
	other := filepath.Join(t.TempDir(), "other.chp")
	mustChpox(t, "dump", strconv.Itoa(p.pid), "-o", other)
	j.waitFile(t, j.stderr, `(?m)^chpox: checkpoint 3 at .* -> `+regexp.QuoteMeta(other)+`$`, 1, 10*time.Second)

	j.cmd.Process.Signal(unix.SIGTERM)
	j.waitEnd(t, 10*time.Second, "SIGTERM to chpox run --attach", "exit status 0")
	if tr := tracerOf(t, p.pid); tr != 0 || p.exited() {
		t.Fatalf("after chpox run --attach ended: %s, traced by %d; want running untraced", procState(p.pid), tr)
	}
	at := p.waitInt(t, countRE, lastInt(p.log, countRE)+5, 10*time.Second)
	killOriginal(t, p)
	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, at+5, 10*time.Second)
}

// TestRunAttachTree: --attach takes the descendants too: a root and its
// exec'd child are checkpointed together on the trigger, which never
// reaches them (the job prints a line if it does), and SIGTERM to chpox
// detaches without reaching the job (it would print and exit 77); the
// image restores both, counting on.
func TestRunAttachTree(t *testing.T) {
	setup(t, "runjob")
	p := start(t, "runjob", "tree")
	child := atoi(p.waitLog(t, `(?m)^child pid (\d+)$`, 1, 10*time.Second)[1])
	killAtEnd(t, child)
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--attach", strconv.Itoa(p.pid), "--signal", "USR1", "-o", img)
	j.stdout = p.log // the job writes where it did before chpox came
	j.waitCount(t, "child", 20)
	unix.Kill(child, unix.SIGUSR1)
	j.waitCheckpoint(t, 1, 2, img)
	j.cmd.Process.Signal(unix.SIGTERM)
	j.waitEnd(t, 10*time.Second, "SIGTERM to chpox run --attach", "exit status 0")
	for _, pid := range []int{p.pid, child} {
		if tr := tracerOf(t, pid); tr != 0 {
			t.Errorf("pid %d after chpox run --attach ended: %s, traced by %d", pid, procState(pid), tr)
		}
	}
	j.waitCount(t, "root", j.count("root")+10)
	j.waitCount(t, "child", j.count("child")+10)
	checkRunLog(t, p.log, "root", "child")
	restoresCounting(t, img, p.log, p.pid, child)
}

// restoresCounting kills a runjob tree (root and child), restores img and
// checks that both count on, in a part of the log of their own.
func restoresCounting(t *testing.T, img, log string, root, child int) {
	t.Helper()
	killPIDs(t, root, child)
	appendMark(t, log)
	r := restoreDetached(t, img, &proc{name: "runjob", pid: root, log: log})
	waitRestoredCounts(t, log, r)
	checkRunLog(t, log, "root", "child")
}

// TestRunJobControl: a job stopped with SIGSTOP stays stopped under chpox
// run: through --attach, through a checkpoint taken while it is stopped
// (asked of chpox: a trigger sent to the stopped job waits, as any signal
// does, until it continues), and when stopped again later; SIGCONT lets
// it go on each time.
func TestRunJobControl(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	// T, or t while chpox holds it in its group-stop (PTRACE_LISTEN).
	isStopped := func() bool { s := mustStat(t, p.pid).state; return s == "T" || s == "t" }
	stopped := func(when string) {
		t.Helper()
		waitFor(t, 5*time.Second, "the job stopped "+when, isStopped)
		n := lastInt(p.log, countRE)
		time.Sleep(300 * time.Millisecond)
		if !isStopped() || lastInt(p.log, countRE) != n {
			t.Fatalf("%s: %v, counted from %d to %d; want it stopped", when, mustStat(t, p.pid), n, lastInt(p.log, countRE))
		}
	}
	goesOn := func(when string) {
		t.Helper()
		unix.Kill(p.pid, unix.SIGCONT)
		p.waitInt(t, countRE, lastInt(p.log, countRE)+5, 10*time.Second)
	}
	unix.Kill(p.pid, unix.SIGSTOP)
	stopped("by SIGSTOP")
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--attach", strconv.Itoa(p.pid), "--signal", "USR2", "-o", img)
	stopped("after --attach")
	// To chpox: the kernel holds a signal sent to a stopped process
	// until it continues.
	j.cmd.Process.Signal(unix.SIGUSR2)
	j.waitCheckpoint(t, 1, 1, img)
	stopped("after a checkpoint")
	goesOn("after a checkpoint")
	unix.Kill(p.pid, unix.SIGSTOP)
	stopped("by SIGSTOP under chpox run")
	goesOn("under chpox run")
}

// TestRunAttachRefused: what --attach cannot supervise is refused before
// anything is touched, saying why: chpox's own ancestors (here the test
// that runs it), a thread ID, a process that does not exist, and a
// command given with --attach. The process with the thread runs on,
// untraced.
func TestRunAttachRefused(t *testing.T) {
	setup(t, "holder")
	p := start(t, "holder", "thread")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	tids, err := procinfo.TIDs(p.pid)
	if err != nil || len(tids) < 2 {
		t.Fatalf("threads of holder: %v, %v", tids, err)
	}
	other := tids[0]
	if other == p.pid {
		other = tids[1]
	}
	out := filepath.Join(t.TempDir(), "x.chp")
	wantFailure(t, runChpox(t, "run", "--attach", strconv.Itoa(os.Getpid()), "-o", out), 2, "chpox itself or one of its ancestors")
	wantFailure(t, runChpox(t, "run", "--attach", strconv.Itoa(other), "-o", out), 2, fmt.Sprintf("a thread of process %d", p.pid))
	wantFailure(t, runChpox(t, "run", "--attach", "999999999", "-o", out), 3, "no such process")
	wantFailure(t, runChpox(t, "run", "--attach", strconv.Itoa(p.pid), "-o", out, "--", "true"), 2, "not both")
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a refused attach wrote %s", out)
	}
	if tr := tracerOf(t, p.pid); tr != 0 || p.exited() {
		t.Errorf("holder after the refused attaches: %s, traced by %d", procState(p.pid), tr)
	}
}

// TestRunUntracedChild: a child made with CLONE_UNTRACED escapes the
// tracer's fork tracing; chpox run traces it when a checkpoint meets it
// in the tree, so the image holds both processes (it used to leave the
// child out without a word), and the restored pair counts on.
func TestRunUntracedChild(t *testing.T) {
	setup(t, "runjob")
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--signal", "USR1", "-o", img, "--", progs["runjob"], "untraced")
	child := j.child(t)
	j.waitCount(t, "child", 20)
	if tr := tracerOf(t, child); tr != 0 {
		t.Fatalf("the CLONE_UNTRACED child is traced by %d before any checkpoint", tr)
	}
	unix.Kill(j.root, unix.SIGUSR1)
	j.waitCheckpoint(t, 1, 2, img)
	if tr := tracerOf(t, child); tr != j.cmd.Process.Pid {
		t.Errorf("after the checkpoint the child is traced by %d, want by chpox run (%d)", tr, j.cmd.Process.Pid)
	}
	unix.Kill(child, unix.SIGUSR1) // traced now: a trigger like any other
	j.waitCheckpoint(t, 2, 2, img)
	j.waitCount(t, "child", j.count("child")+10)
	checkRunLog(t, j.stdout, "root", "child")
	restoresCounting(t, img, j.stdout, j.root, child)
}

// TestRunUntracedChildTracedElsewhere: an untraced child that another
// tracer holds (here a python3 that seized it) fails the checkpoint with
// a message naming that tracer, rather than an image without the child;
// the job and the previous image are untouched.
func TestRunUntracedChildTracedElsewhere(t *testing.T) {
	setup(t, "runjob")
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--signal", "USR1", "-o", img, "--", progs["runjob"], "untraced")
	child := j.child(t)
	seizer := startExe(t, "seizer", "python3", "-c",
		`import ctypes, sys, time; r = ctypes.CDLL(None).ptrace(0x4206, int(sys.argv[1]), 0, 0); print("seized", r, flush=True); time.sleep(60)`,
		strconv.Itoa(child))
	seizer.waitLog(t, `(?m)^seized 0$`, 1, 10*time.Second)
	unix.Kill(j.root, unix.SIGUSR1)
	j.waitFile(t, j.stderr, `(?m)^chpox: checkpoint 1 at .* failed: `, 1, 20*time.Second)
	if log := readFile(t, j.stderr); !strings.Contains(log, fmt.Sprintf("pid %d of the job is traced by pid %d (python3", child, seizer.pid)) {
		t.Errorf("the failed checkpoint does not name the other tracer:\n%s", log)
	}
	if _, err := os.Stat(img); err == nil {
		t.Errorf("the failed checkpoint wrote %s", img)
	}
	j.waitCount(t, "root", j.count("root")+10)
	j.waitCount(t, "child", j.count("child")+10)
	checkRunLog(t, j.stdout, "root", "child")
	// The other tracer first: the child, killed while it holds it, would
	// stay a zombie until it goes.
	seizer.kill()
	seizer.waitExit(t, 10*time.Second)
	killPIDs(t, j.root, child)
}

// TestRunDesignCard: `chpox run --signal 31 ./app`, as the design card
// writes it: no -o, no --; the image is app.chp in the current directory.
func TestRunDesignCard(t *testing.T) {
	setup(t, "counter")
	dir := t.TempDir()
	app := filepath.Join(dir, "app")
	if err := os.Symlink(progs["counter"], app); err != nil {
		t.Fatal(err)
	}
	f, logPath := logFile(t, "app")
	defer f.Close()
	cmd := exec.Command(chpoxBin, "run", "--signal", "31", "./app")
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, f, f
	run := startCmd(t, "chpox run", cmd, logPath)
	m := run.waitLog(t, `(?m)^chpox: job pid (\d+);`, 1, 10*time.Second)
	job, _ := strconv.Atoi(m[1])
	adopt(t, "app", job, logPath)
	run.waitInt(t, countRE, 5, 10*time.Second)
	unix.Kill(job, unix.Signal(31))
	run.waitLog(t, `(?m)^chpox: checkpoint 1 at .* -> `+regexp.QuoteMeta(filepath.Join(dir, "app.chp"))+`$`, 1, 10*time.Second)
	quietChpox(t, "inspect", "--verify", filepath.Join(dir, "app.chp"))
}

// TestRunTriggerToChpox: the trigger sent to chpox run itself (a batch
// script that execs chpox run is what Slurm signals) checkpoints the job
// as the trigger sent to the job does; chpox and the job go on, and the
// image restores the job at the count it had.
func TestRunTriggerToChpox(t *testing.T) {
	setup(t, "counter")
	dir := t.TempDir()
	img := filepath.Join(dir, "job.chp")
	f, runLog := logFile(t, "chpox-run")
	defer f.Close()
	// The job's log is its own (chpox run's lines go elsewhere), so that
	// the restored job, writing from its saved offset, overwrites exactly
	// what the original wrote after the checkpoint.
	logPath := filepath.Join(dir, "job.log")
	cmd := exec.Command(chpoxBin, "run", "--signal", "USR2", "-o", img, "--", "sh", "-c", `exec "$0" > "$1"`, progs["counter"], logPath)
	cmd.Stdout, cmd.Stderr = f, f
	run := startCmd(t, "chpox run", cmd, runLog)
	m := run.waitLog(t, `(?m)^chpox: job pid (\d+);`, 1, 10*time.Second)
	job, _ := strconv.Atoi(m[1])
	p := adopt(t, "counter", job, logPath)
	p.waitInt(t, countRE, 10, 10*time.Second)
	for i := 1; i <= 2; i++ {
		run.signal(t, unix.SIGUSR2)
		run.waitLog(t, `(?m)^chpox: checkpoint \d+ at .* -> `+regexp.QuoteMeta(img)+`$`, i, 10*time.Second)
	}
	at := p.waitInt(t, countRE, lastInt(logPath, countRE)+5, 10*time.Second)
	if run.exited() || p.exited() {
		t.Fatalf("after the triggers: chpox run %s, job %s", run.status, p.status)
	}
	killOriginal(t, p)
	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, at+5, 10*time.Second)
	checkCounts(t, logPath, 1, at+5, 1)
}
