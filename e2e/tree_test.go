package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
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

// startExe is start for any executable (not only testdata programs): stdout
// and stderr go to a log file in t.TempDir, stdin is /dev/null.
func startExe(t *testing.T, name, exe string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = f, f
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
	t.Logf("started %s %v: pid %d, log %s", exe, args, p.pid, logPath)
	return p
}

// stat is what /proc/PID/stat says about a process's place in the tree.
type stat struct {
	state                string
	ppid, pgid, sid, pid int
}

func (s stat) String() string {
	return fmt.Sprintf("pid %d state %s ppid %d pgid %d sid %d", s.pid, s.state, s.ppid, s.pgid, s.sid)
}

func readStat(pid int) (stat, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	i := strings.LastIndexByte(string(data), ')')
	if i < 0 {
		return stat{}, fmt.Errorf("/proc/%d/stat: no comm: %q", pid, data)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 4 {
		return stat{}, fmt.Errorf("/proc/%d/stat: short: %q", pid, data)
	}
	s := stat{state: f[0], pid: pid}
	s.ppid, _ = strconv.Atoi(f[1])
	s.pgid, _ = strconv.Atoi(f[2])
	s.sid, _ = strconv.Atoi(f[3])
	return s, nil
}

func mustStat(t *testing.T, pid int) stat {
	t.Helper()
	s, err := readStat(pid)
	if err != nil {
		t.Fatalf("pid %d: %v", pid, err)
	}
	return s
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// imgProc is one process of an image, from inspect --json.
type imgProc struct {
	PID        int    `json:"pid"`
	PPID       int    `json:"ppid"`
	PGID       int    `json:"pgid"`
	SID        int    `json:"sid"`
	Comm       string `json:"comm"`
	Zombie     bool   `json:"zombie"`
	WaitStatus int    `json:"wait_status"`
	VMAs       []struct {
		Start uint64 `json:"start"`
		End   uint64 `json:"end"`
		Kind  string `json:"kind"`
		Shm   int    `json:"shm"`
	} `json:"vmas"`
}

// imageProcs lists the processes of an image (inspect --json).
func imageProcs(t *testing.T, img string) []imgProc {
	t.Helper()
	out := mustChpox(t, "inspect", "--json", img).stdout
	var top struct {
		Header struct {
			Processes int `json:"processes"`
		} `json:"header"`
		Processes []imgProc `json:"processes"`
	}
	if err := json.Unmarshal([]byte(out), &top); err != nil {
		t.Fatalf("inspect --json: %v\n%.2000s", err, out)
	}
	if top.Header.Processes != len(top.Processes) {
		t.Errorf("inspect --json: header says %d processes, the list has %d", top.Header.Processes, len(top.Processes))
	}
	return top.Processes
}

func imagePIDs(ps []imgProc) []int {
	var pids []int
	for _, p := range ps {
		pids = append(pids, p.PID)
	}
	return pids
}

// killPIDs kills the processes with SIGKILL and waits until every PID is
// free. Orphans come to us (subreaper) and are reaped by waitPIDFree.
func killPIDs(t *testing.T, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		unix.Kill(pid, unix.SIGKILL)
	}
	for _, pid := range pids {
		waitPIDFree(t, pid, 10*time.Second)
	}
}

// killAtEnd kills the processes at the end of the test, whatever happened.
func killAtEnd(t *testing.T, pids ...int) {
	t.Cleanup(func() {
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		for _, pid := range pids {
			deadline := time.Now().Add(10 * time.Second)
			for pidExists(pid) && time.Now().Before(deadline) {
				var ws unix.WaitStatus
				unix.Wait4(pid, &ws, unix.WNOHANG, nil)
				time.Sleep(5 * time.Millisecond)
			}
		}
	})
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return -1
	}
	return fi.Size()
}

// tree.c's processes, by role.
type treePIDs struct{ parent, c1, c2, c3, gc int }

func (tp treePIDs) all() []int { return []int{tp.parent, tp.c1, tp.c2, tp.c3, tp.gc} }

func startTree(t *testing.T) (*proc, treePIDs) {
	t.Helper()
	p := start(t, "tree")
	m := p.waitLog(t, `(?m)^pids (\d+) (\d+) (\d+) (\d+)$`, 1, 10*time.Second)
	g := p.waitLog(t, `(?m)^gc (\d+)$`, 1, 10*time.Second)
	tp := treePIDs{atoi(m[1]), atoi(m[2]), atoi(m[3]), atoi(m[4]), atoi(g[1])}
	killAtEnd(t, tp.c1, tp.c2, tp.c3, tp.gc)
	if tp.parent != p.pid {
		t.Fatalf("tree reports parent pid %d, started as %d", tp.parent, p.pid)
	}
	for _, role := range []string{"parent", "c1", "c2", "gc"} {
		p.waitLog(t, `(?m)^alive `+role+` \d+$`, 3, 10*time.Second)
	}
	return p, tp
}

// wantTree checks the PIDs, parents, groups and sessions of tree.c's
// processes; c3 must be a zombie of the parent.
func wantTree(t *testing.T, tp treePIDs, when string) {
	t.Helper()
	want := map[int]stat{
		tp.c1: {ppid: tp.parent, pgid: tp.parent, sid: tp.parent},
		tp.c2: {ppid: tp.parent, pgid: tp.c2, sid: tp.parent},
		tp.c3: {ppid: tp.parent, pgid: tp.parent, sid: tp.parent, state: "Z"},
		tp.gc: {ppid: tp.c1, pgid: tp.parent, sid: tp.parent},
		// The parent leads its session (setsid), so its group too; its own
		// parent is whoever started or restored it.
		tp.parent: {pgid: tp.parent, sid: tp.parent},
	}
	for _, pid := range tp.all() {
		w := want[pid]
		got, err := readStat(pid)
		if err != nil {
			t.Errorf("%s: pid %d: %v", when, pid, err)
			continue
		}
		if (w.ppid != 0 && got.ppid != w.ppid) || got.pgid != w.pgid || got.sid != w.sid {
			t.Errorf("%s: %v, want ppid %d pgid %d sid %d", when, got, w.ppid, w.pgid, w.sid)
		}
		if w.state == "Z" && got.state != "Z" {
			t.Errorf("%s: c3 %v, want a zombie (Z)", when, got)
		}
		if w.state == "" && (got.state == "Z" || got.state == "X" || got.state == "T" || got.state == "t") {
			t.Errorf("%s: %v, want it running", when, got)
		}
	}
}

var treeLineRE = regexp.MustCompile(`^(pids \d+ \d+ \d+ \d+|gc \d+|alive (parent|c1|c2|gc) \d+|tree ok (parent|c1|c2|gc)|reaped 42|waited c2 signal 15)$`)

// checkTreeLog checks that every line of tree.c's log is whole and that
// each role's "alive N" numbers run 0, 1, 2, ... without a gap: lines from
// processes writing through one shared offset never overwrite each other.
func checkTreeLog(t *testing.T, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	lines = lines[:len(lines)-1] // the last is "" or still being written
	next := map[string]int{}
	for i, l := range lines {
		if !treeLineRE.MatchString(l) {
			t.Errorf("log line %d is %q: garbled (one offset not shared?); lines around it:\n%s",
				i+1, l, strings.Join(lines[max(0, i-5):min(len(lines), i+5)], "\n"))
			return
		}
		if f := strings.Fields(l); f[0] == "alive" {
			if n := atoi(f[2]); n != next[f[1]] {
				t.Errorf("log line %d is %q, want alive %s %d (lines lost or repeated)", i+1, l, f[1], next[f[1]])
				return
			}
			next[f[1]]++
		}
	}
}

// A tree (session leader, a child with its own group, a grandchild, a
// zombie) dumped at a random moment and killed comes back with the same
// PIDs, parents, groups and sessions; the zombie is still one and its
// parent reaps it with exit status 42; a restored parent waits for a
// restored live child; everything keeps going.
func TestTree(t *testing.T) {
	setup(t, "tree")
	p, tp := startTree(t)
	wantTree(t, tp, "original")
	p.signal(t, unix.SIGUSR2) // unrelated to c3: parent ignores it for now? no: it kills c2
	// (SIGUSR2 is kept for after the restore; undo: nothing was sent to the children)
	t.Fatal("unreachable")
}
