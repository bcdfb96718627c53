package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Built once by TestMain. A build error fails every test that needs the
// result (never a skip: a broken build must not look like a pass).
var (
	workDir  string
	chpoxBin string
	chpoxErr error
	progs    = map[string]string{} // name -> executable
	progErrs = map[string]error{}
)

// cPrograms are compiled from ../testdata/NAME.c with gcc -O1 -g and these extra flags.
var cPrograms = map[string][]string{
	"counter":     nil,
	"ptyrelay":    nil,
	"memory":      nil,
	"vector":      nil, // AVX-512 code sits in a target("avx512f") function: no -m flags needed
	"sleeper":     nil,
	"files":       nil,
	"holder":      {"-pthread"},
	"bigmem":      nil,
	"livewriter":  nil,
	"forker":      nil,
	"reserve":     nil,
	"slowaccept":  nil,
	"pending":     {"-pthread"},
	"tree":        nil,
	"pipes":       nil,
	"shm":         nil,
	"runjob":      nil,
	"unixsock":    nil,
	"tcppair":     nil,
	"udpqueue":    nil,
	"iouring":     nil,
	"netlink":     nil,
	"faultjob":    {"-pthread"},
	"threadchurn": {"-pthread"},
	"reexec":      nil,
	"slurmjob":    nil,
	"events":      {"-pthread"},
	"memdetails":  nil,
	"memfd":       nil,
	"timers":      {"-pthread"},
	"locks":       nil,
	"proctree":    {"-pthread"},
	"attrs":       {"-pthread"},
	"seccomp":     {"-pthread"},
	"sysv":        nil,
	"signalfd":    nil,
	"sigstate":    nil,
	"lazymem":     {"-pthread"},
	"lazymove":    nil,
	"thstate":     {"-pthread"},
	"fdflags":     nil,
	"eventfds":    nil,
	"restarts":    {"-pthread"},

	// files that are gone or special (specialfiles_test.go)
	"specialfiles": nil,
	"chrooted":     nil,
	"holdfiles":    nil,
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// Whatever started the tests may have leaked descriptors into this
	// process without close-on-exec (a pipe at fd 251 has been seen). The
	// targets must start with 0, 1 and 2 only: chpox rightly refuses to dump
	// a process holding a pipe it does not support.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintln(os.Stderr, "close_range:", err)
		return 1
	}
	var err error
	workDir, err = os.MkdirTemp("", "chpox-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(workDir)

	root, err := repoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	chpoxBin = filepath.Join(workDir, "chpox")
	build := exec.Command("go", "build", "-o", chpoxBin, "./cmd/chpox")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		chpoxErr = fmt.Errorf("go build ./cmd/chpox: %v\n%s", err, out)
	}
	for name, flags := range cPrograms {
		exe := filepath.Join(workDir, name)
		args := append([]string{"-O1", "-g", "-Wall", "-o", exe, filepath.Join(root, "testdata", name+".c")}, flags...)
		if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			progErrs[name] = fmt.Errorf("gcc %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		progs[name] = exe
	}
	progs["dict.py"] = filepath.Join(root, "testdata", "dict.py")
	progs["httpserver.py"] = filepath.Join(root, "testdata", "httpserver.py")
	progs["ptystate.py"] = filepath.Join(root, "testdata", "ptystate.py")
	progs["ptyqueue.py"] = filepath.Join(root, "testdata", "ptyqueue.py")

	// Restored processes are children of chpox; a detached one is orphaned
	// when chpox exits. As a subreaper this process inherits them, so it can
	// reap them at once (PID 1 on these VMs reaps late, and a zombie keeps
	// its PID taken).
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "PR_SET_CHILD_SUBREAPER:", err)
		return 1
	}

	if err := ensureUser(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	code := m.Run()

	killAll()
	// Reap whatever orphans were handed to us along the way.
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			break
		}
	}
	return code
}

// testUID is the ordinary user the tests that run without privilege use
// (setpriv --reuid): a real account, which ensureUser makes where the
// machine has none with that id.
const testUID = 1000

func ensureUser() error {
	if os.Geteuid() != 0 {
		return nil // the tests that need it need root anyway
	}
	if err := exec.Command("getent", "passwd", strconv.Itoa(testUID)).Run(); err == nil {
		return nil
	}
	out, err := exec.Command("useradd", "--uid", strconv.Itoa(testUID), "--user-group", "--no-create-home",
		"--shell", "/usr/sbin/nologin", "chpox-test").CombinedOutput()
	if err != nil {
		return fmt.Errorf("useradd chpox-test (uid %d): %v\n%s", testUID, err, out)
	}
	return nil
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	abs, err := filepath.Abs("..")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(abs, "go.mod")); err != nil {
		return "", fmt.Errorf("cannot find the repository root: %v", err)
	}
	return abs, nil
}

// requireRoot is the one place that decides skips: chpox needs root
// (ptrace of any process, clone3 with set_tid). In CI a missing privilege
// is a failure, so the suite cannot silently stop testing anything.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("the e2e tests need root, and CI is set")
	}
	t.Skip("the e2e tests need root")
}

// setup checks what every test needs: root, the chpox binary and the named programs.
func setup(t *testing.T, programs ...string) {
	t.Helper()
	requireRoot(t)
	if chpoxErr != nil {
		t.Fatal(chpoxErr)
	}
	for _, p := range programs {
		if err := progErrs[p]; err != nil {
			t.Fatal(err)
		}
	}
}

// proc is a target process: started by the test, or restored by chpox.
type proc struct {
	name string
	pid  int
	cmd  *exec.Cmd // nil for a restored process
	log  string

	done   chan struct{} // closed once the process is gone (and reaped, if ours)
	status string        // how it ended, once done is closed
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

func register(p *proc) {
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
}

func killAll() {
	procsMu.Lock()
	all := append([]*proc(nil), procs...)
	procsMu.Unlock()
	for _, p := range all {
		p.kill()
	}
}

// start runs a program from testdata with stdout and stderr going to a log
// file in t.TempDir (stdin is /dev/null) and kills it at the end of the test.
func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	exe := progs[name]
	if strings.HasSuffix(name, ".py") {
		python, err := exec.LookPath("python3")
		if err != nil {
			t.Fatal("python3 is needed:", err)
		}
		args = append([]string{exe}, args...)
		exe = python
	}
	return startExe(t, strings.TrimSuffix(name, ".py"), exe, args...)
}

// startExe is start for any executable (not only testdata programs): stdout
// and stderr go to a log file in t.TempDir, stdin is /dev/null.
func startExe(t *testing.T, name, exe string, args ...string) *proc {
	t.Helper()
	f, logPath := logFile(t, name)
	defer f.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = f, f
	p := startCmd(t, name, cmd, logPath)
	t.Logf("started %s %v: pid %d, log %s", exe, args, p.pid, logPath)
	return p
}

// logFile creates the log file of a program started by a test, in
// t.TempDir, and returns it open for writing and its path.
func logFile(t *testing.T, name string) (*os.File, string) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	return f, logPath
}

// startCmd starts cmd, set up by the caller with exactly the descriptors it
// means to test, watches it and kills it at the end of the test.
func startCmd(t *testing.T, name string, cmd *exec.Cmd, logPath string) *proc {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, pid: cmd.Process.Pid, cmd: cmd, log: logPath, done: make(chan struct{})}
	register(p)
	go func() {
		err := cmd.Wait()
		if err == nil {
			p.status = "exit status 0"
		} else {
			p.status = err.Error()
		}
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

// adopt watches a process chpox restored (it becomes our child once chpox
// exits, since we are a subreaper) and kills it at the end of the test.
func adopt(t *testing.T, name string, pid int, logPath string) *proc {
	t.Helper()
	p := &proc{name: name, pid: pid, log: logPath, done: make(chan struct{})}
	register(p)
	go func() {
		for {
			var ws unix.WaitStatus
			wpid, err := unix.Wait4(pid, &ws, unix.WNOHANG, nil)
			if wpid == pid {
				p.status = describeWait(syscall.WaitStatus(ws))
				break
			}
			// A zombie of another parent has ended too: waiting for its
			// parent to reap it would hold the test up.
			if errors.Is(err, unix.ECHILD) && (!pidExists(pid) || isZombie(pid)) {
				p.status = "gone (not our child)"
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p
}

func describeWait(ws syscall.WaitStatus) string {
	switch {
	case ws.Exited():
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	case ws.Signaled():
		return "killed by " + unix.SignalName(unix.Signal(ws.Signal()))
	}
	return fmt.Sprintf("wait status %#x", uint32(ws))
}

// kill sends SIGKILL and waits until the process is reaped.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	// Its descendants too (a restored shell's jobs): orphaned, they would
	// outlive the test.
	for _, d := range descendants(p.pid) {
		unix.Kill(d, unix.SIGKILL)
	}
	unix.Kill(p.pid, unix.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
	}
}

// closed tells whether ch is closed, without waiting.
func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func (p *proc) exited() bool {
	return closed(p.done)
}

// waitExit waits for the process to end by itself and returns how it ended.
func (p *proc) waitExit(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case <-p.done:
		return p.status
	case <-time.After(timeout):
		t.Fatalf("%s (pid %d) still runs after %v: %s", p.name, p.pid, timeout, procState(p.pid))
		return ""
	}
}

// signal sends sig to the process, failing the test if it is gone.
func (p *proc) signal(t *testing.T, sig unix.Signal) {
	t.Helper()
	if p.exited() {
		t.Fatalf("%s (pid %d) is gone (%s); log:\n%s", p.name, p.pid, p.status, tail(p.log))
	}
	if err := unix.Kill(p.pid, sig); err != nil {
		t.Fatalf("kill %d %v: %v", p.pid, sig, err)
	}
}

var failRE = regexp.MustCompile(`(?m)^.*FAIL.*$`)

// waitLog polls the log until pattern (a regexp) matches n times in total,
// and returns the last match's submatches. It fails at once if the program
// reported a FAIL or exited.
func (p *proc) waitLog(t *testing.T, pattern string, n int, timeout time.Duration) []string {
	t.Helper()
	re := regexp.MustCompile(pattern)
	deadline := time.Now().Add(timeout)
	for {
		data, _ := os.ReadFile(p.log)
		if bad := failRE.Find(data); bad != nil {
			t.Fatalf("%s (pid %d) reported %q; log:\n%s", p.name, p.pid, bad, tailOf(data))
		}
		if all := re.FindAllStringSubmatch(string(data), -1); len(all) >= n {
			return all[len(all)-1]
		}
		if p.exited() {
			// One more read: the last line may have come with the exit.
			data, _ = os.ReadFile(p.log)
			if all := re.FindAllStringSubmatch(string(data), -1); len(all) >= n {
				return all[len(all)-1]
			}
			t.Fatalf("%s (pid %d) ended (%s) before %d× %q; log:\n%s", p.name, p.pid, p.status, n, pattern, tailOf(data))
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s (pid %d) did not log %d× %q within %v; process: %s; log:\n%s",
				p.name, p.pid, n, pattern, timeout, procState(p.pid), tailOf(data))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lastInt returns the number in the last match of pattern (one group), or -1.
func lastInt(path, pattern string) int {
	data, _ := os.ReadFile(path)
	all := regexp.MustCompile(pattern).FindAllStringSubmatch(string(data), -1)
	if len(all) == 0 {
		return -1
	}
	n, _ := strconv.Atoi(all[len(all)-1][1])
	return n
}

// waitInt waits until the last number logged by pattern reaches at least min.
func (p *proc) waitInt(t *testing.T, pattern string, min int, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if n := lastInt(p.log, pattern); n >= min {
			return n
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s (pid %d): %q did not reach %d within %v (%s, process: %s); log:\n%s",
				p.name, p.pid, pattern, min, timeout, p.status, procState(p.pid), tail(p.log))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tailOf(data)
}

func tailOf(data []byte) string {
	lines := strings.SplitAfter(string(data), "\n")
	if len(lines) > 30 {
		lines = append([]string{fmt.Sprintf("[... %d lines ...]\n", len(lines)-30)}, lines[len(lines)-30:]...)
	}
	return strings.Join(lines, "")
}

func pidExists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

func isZombie(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(data, ')') // after the name, which may hold anything
	return i >= 0 && i+2 < len(data) && data[i+2] == 'Z'
}

// procState describes a process for failure messages: its state and tracer.
func procState(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "no such process"
	}
	var keep []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "Name:") || strings.HasPrefix(l, "State:") || strings.HasPrefix(l, "TracerPid:") ||
			strings.HasPrefix(l, "PPid:") || strings.HasPrefix(l, "Threads:") {
			keep = append(keep, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(keep, ", ")
}

// tracerOf is the process (thread group) tracing pid, 0 if none. The
// kernel's TracerPid is the tracing thread's ID, and chpox traces from a
// locked OS thread that is not always its main one.
func tracerOf(t *testing.T, pid int) int {
	t.Helper()
	tid, _ := strconv.Atoi(statusLines(t, pid)["TracerPid"])
	if tid == 0 {
		return 0
	}
	tgid, _ := strconv.Atoi(statusLines(t, tid)["Tgid"])
	return tgid
}

// waitPIDFree waits until no process holds pid. A zombie holds its PID; as a
// subreaper we reap our own, so this only waits for orphans of others.
func waitPIDFree(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for pidExists(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still taken after %v: %s", pid, timeout, procState(pid))
		}
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		time.Sleep(5 * time.Millisecond)
	}
}

// chpoxResult is what one chpox command did.
type chpoxResult struct {
	stdout, stderr string
	code           int
}

// runChpox runs chpox to completion (at most a minute).
func runChpox(t *testing.T, args ...string) chpoxResult {
	t.Helper()
	args = lazyArgs(args)
	cmd := exec.Command(chpoxBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		// Say where everything hangs before killing it: chpox's threads
		// and those of its children (a restored root is one).
		diag := threadsOf(cmd.Process.Pid)
		for _, c := range childrenOf(cmd.Process.Pid) {
			diag += threadsOf(c)
		}
		cmd.Process.Kill()
		<-done
		t.Fatalf("chpox %s: timed out after a minute; stderr:\n%s\nthreads:\n%s", strings.Join(args, " "), stderr.String(), diag)
	}
	r := chpoxResult{stdout: stdout.String(), stderr: stderr.String(), code: exitCode(err)}
	t.Logf("chpox %s: exit %d in %v; stdout %q; stderr %q", strings.Join(args, " "), r.code,
		time.Since(began).Round(time.Millisecond), r.stdout, r.stderr)
	return r
}

// childrenOf lists the children of pid.
func childrenOf(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// threadsOf describes every thread of pid: state, wait channel, syscall.
func threadsOf(pid int) string {
	var b strings.Builder
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		dir := fmt.Sprintf("/proc/%d/task/%s/", pid, task.Name())
		stat, _ := os.ReadFile(dir + "stat")
		wchan, _ := os.ReadFile(dir + "wchan")
		sc, _ := os.ReadFile(dir + "syscall")
		fmt.Fprintf(&b, "  %d/%s: %.60s | wchan %s | syscall %s\n", pid, task.Name(), stat, wchan, strings.TrimSpace(string(sc)))
	}
	return b.String()
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return -1
}

// mustChpox runs chpox and fails the test unless it exits 0.
func mustChpox(t *testing.T, args ...string) chpoxResult {
	t.Helper()
	r := runChpox(t, args...)
	if r.code != 0 {
		t.Fatalf("chpox %s: exit %d, want 0; stderr:\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// dump checkpoints p into a new image in t.TempDir and returns its path.
func dump(t *testing.T, p *proc, extra ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), p.name+".img")
	if os.Getenv("CHPOX_E2E_LIVE") != "" {
		// Live dumps are the default; this makes the --kill ones live too.
		extra = append(extra, "--live")
	}
	args := append([]string{"dump", strconv.Itoa(p.pid), "-o", img}, extra...)
	mustChpox(t, args...)
	return img
}

// dumpKill checkpoints p with --kill, checks the original died of SIGKILL
// and waits until its PID is free for the restore.
func dumpKill(t *testing.T, p *proc) string {
	t.Helper()
	img := dump(t, p, "--kill")
	if st := p.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --kill the original ended with %q, want signal: killed", st)
	}
	waitPIDFree(t, p.pid, 10*time.Second)
	return img
}

// restoreDetached restores img with --detach, checks that the printed PID is
// want, and returns the restored process, writing to logPath.
func restoreDetached(t *testing.T, img string, want *proc) *proc {
	t.Helper()
	r := mustChpox(t, "restore", "--detach", img)
	pid, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("restore --detach printed %q, want the PID on one line", r.stdout)
	}
	p := adopt(t, want.name+"(restored)", pid, want.log)
	if pid != want.pid {
		t.Fatalf("restored as pid %d, want the original pid %d", pid, want.pid)
	}
	return p
}

// killOriginal kills a process started by start and waits until its PID is free.
func killOriginal(t *testing.T, p *proc) {
	t.Helper()
	p.kill()
	if !p.exited() {
		t.Fatalf("%s (pid %d) survived SIGKILL: %s", p.name, p.pid, procState(p.pid))
	}
	waitPIDFree(t, p.pid, 10*time.Second)
}

// lazyArgs adds --lazy to a restore when CHPOX_E2E_LAZY is set: the suite's
// restores then run lazily (docs/architecture.md "Lazy restore").
func lazyArgs(args []string) []string {
	if os.Getenv("CHPOX_E2E_LAZY") == "" || len(args) == 0 || args[0] != "restore" {
		return args
	}
	return append([]string{"restore", "--lazy"}, args[1:]...)
}

// bgChpox is a chpox command running in the background.
type bgChpox struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	status         string // "exit status N" or "killed by SIG", once done is closed
}

func (b *bgChpox) exited() bool {
	return closed(b.done)
}

// startChpox starts chpox in the background; it is killed at the end of the test.
func startChpox(t *testing.T, args ...string) *bgChpox {
	t.Helper()
	args = lazyArgs(args)
	b := &bgChpox{cmd: exec.Command(chpoxBin, args...), done: make(chan struct{})}
	b.cmd.Stdout, b.cmd.Stderr = &b.stdout, &b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		b.cmd.Wait()
		b.status = describeWait(b.cmd.ProcessState.Sys().(syscall.WaitStatus))
		close(b.done)
	}()
	t.Cleanup(func() {
		if !b.exited() {
			b.cmd.Process.Kill()
			<-b.done
		}
		t.Logf("chpox %s: %s; stdout %q; stderr %q", strings.Join(args, " "), b.status, b.stdout.String(), b.stderr.String())
	})
	return b
}
