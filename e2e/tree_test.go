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
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

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

// quietChpox runs chpox like mustChpox but logs only the start of its
// stdout (inspect prints a lot) and returns the stdout.
func quietChpox(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(chpoxBin, args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	err := cmd.Run()
	timer.Stop()
	t.Logf("chpox %s: exit %d; stdout %.300q...; stderr %q", strings.Join(args, " "), exitCode(err), stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("chpox %s: %v; stderr:\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
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
	out := quietChpox(t, "inspect", "--json", img)
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
	// The parent first: its children then come to us, and we reap them.
	killAtEnd(t, tp.parent, tp.c1, tp.c2, tp.c3, tp.gc)
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
	time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // a random moment (not an assertion)
	img := dump(t, p)
	checkTreeImage(t, img, tp)

	// The original tree was not harmed by the dump.
	for _, role := range []string{"parent", "c1", "c2", "gc"} {
		re := `(?m)^alive ` + role + ` (\d+)$`
		p.waitInt(t, re, lastInt(p.log, re)+5, 10*time.Second)
	}
	wantTree(t, tp, "original after the dump")
	for _, pid := range tp.all() {
		if st := procState(pid); !strings.Contains(st, "TracerPid: 0") {
			t.Errorf("pid %d after the dump: %s, want untraced", pid, st)
		}
	}

	for _, pid := range tp.all() {
		unix.Kill(pid, unix.SIGKILL)
	}
	killOriginal(t, p)
	for _, pid := range tp.all() {
		waitPIDFree(t, pid, 10*time.Second)
	}
	sizeAtKill := fileSize(p.log)

	r := restoreDetached(t, img, p)
	// Before any signal: the same tree, c3 still a zombie of the parent.
	wantTree(t, tp, "restored")
	waitFor(t, 10*time.Second, "the restored tree writes beyond where the original stopped", func() bool {
		return fileSize(p.log) > sizeAtKill || r.exited()
	})
	for _, pid := range []int{tp.parent, tp.c1, tp.c2, tp.gc} {
		if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
	}
	r.waitLog(t, `(?m)^reaped 42$`, 1, 10*time.Second)
	for _, role := range []string{"parent", "c1", "c2", "gc"} {
		r.waitLog(t, `(?m)^tree ok `+role+`$`, 1, 10*time.Second)
	}
	waitFor(t, 5*time.Second, "c3 reaped by its restored parent", func() bool { return !pidExists(tp.c3) })
	// The whole tree keeps running.
	for _, role := range []string{"parent", "c1", "c2", "gc"} {
		re := `(?m)^alive ` + role + ` (\d+)$`
		r.waitInt(t, re, lastInt(p.log, re)+10, 10*time.Second)
	}
	// The restored parent waits for a restored live child.
	r.signal(t, unix.SIGUSR2)
	r.waitLog(t, `(?m)^waited c2 signal 15$`, 1, 10*time.Second)
	waitFor(t, 5*time.Second, "c2 reaped by its restored parent", func() bool { return !pidExists(tp.c2) })
	for _, role := range []string{"parent", "c1", "gc"} {
		re := `(?m)^alive ` + role + ` (\d+)$`
		r.waitInt(t, re, lastInt(p.log, re)+5, 10*time.Second)
	}
	if s := mustStat(t, tp.gc); s.ppid != tp.c1 {
		t.Errorf("grandchild at the end: %v, want ppid %d", s, tp.c1)
	}
	checkTreeLog(t, p.log)
}

// checkTreeImage checks what inspect says about tree.c's image: the five
// processes with their parents, groups and sessions, c3 a zombie with
// exit status 42.
func checkTreeImage(t *testing.T, img string, tp treePIDs) {
	t.Helper()
	ps := imageProcs(t, img)
	if len(ps) != 5 {
		t.Errorf("the image holds %d processes (%v), want 5: %v", len(ps), imagePIDs(ps), tp.all())
	}
	parentOf := map[int]int{tp.parent: os.Getpid(), tp.c1: tp.parent, tp.c2: tp.parent, tp.c3: tp.parent, tp.gc: tp.c1}
	groupOf := map[int]int{tp.parent: tp.parent, tp.c1: tp.parent, tp.c2: tp.c2, tp.c3: tp.parent, tp.gc: tp.parent}
	seen := map[int]bool{}
	for _, ip := range ps {
		seen[ip.PID] = true
		if want, ok := parentOf[ip.PID]; !ok {
			t.Errorf("the image holds pid %d (%s), not part of the tree %v", ip.PID, ip.Comm, tp.all())
		} else if ip.PPID != want || ip.PGID != groupOf[ip.PID] || ip.SID != tp.parent || ip.Comm != "tree" {
			t.Errorf("image: pid %d (%s) ppid %d pgid %d sid %d, want (tree) ppid %d pgid %d sid %d",
				ip.PID, ip.Comm, ip.PPID, ip.PGID, ip.SID, want, groupOf[ip.PID], tp.parent)
		}
		if zombie := ip.PID == tp.c3; ip.Zombie != zombie {
			t.Errorf("image: pid %d zombie=%v, want %v", ip.PID, ip.Zombie, zombie)
		}
		if ip.PID == tp.c3 {
			if ws := syscall.WaitStatus(ip.WaitStatus); !ws.Exited() || ws.ExitStatus() != 42 {
				t.Errorf("image: zombie c3 has wait status %#x, want exit 42 (%#x)", ip.WaitStatus, 42<<8)
			}
		}
	}
	for _, pid := range tp.all() {
		if !seen[pid] {
			t.Errorf("the image lacks pid %d", pid)
		}
	}
	// The text form names every process with its parent, group and session.
	text := quietChpox(t, "inspect", img)
	for pid, ppid := range parentOf {
		line := fmt.Sprintf("process %d (tree) parent %d, group %d, session %d,", pid, ppid, groupOf[pid], tp.parent)
		if !strings.Contains(text, line) {
			t.Errorf("inspect output lacks %q:\n%s", line, text)
		}
	}
	// The tree section draws children under their parent (in any order
	// among siblings) and marks the zombie with its wait status.
	for _, line := range []string{
		fmt.Sprintf("\ntree:\n  %d tree\n", tp.parent),
		fmt.Sprintf("\n    %d tree\n", tp.c1),
		fmt.Sprintf("\n    %d tree\n", tp.c2),
		fmt.Sprintf("\n    %d tree  (zombie, wait status 0x2a00)\n", tp.c3),
		fmt.Sprintf("\n      %d tree\n", tp.gc),
	} {
		if !strings.Contains(text, line) {
			t.Errorf("inspect output lacks %q:\n%.1500s", line, text)
		}
	}
	if i, j := strings.Index(text, fmt.Sprintf("\n    %d tree\n", tp.c1)), strings.Index(text, fmt.Sprintf("\n      %d tree\n", tp.gc)); i < 0 || j < i {
		t.Errorf("inspect tree does not show grandchild %d under c1 %d:\n%.1500s", tp.gc, tp.c1, text)
	}
	// All five write to one stdout description: inspect says who shares it.
	if !strings.Contains(text, "shared with") {
		t.Errorf("inspect output has no \"shared with\" column:\n%.800s", text)
	}
	for _, pid := range []int{tp.c1, tp.c2, tp.gc} {
		if !strings.Contains(text, fmt.Sprintf(" %d:1", pid)) {
			t.Errorf("inspect does not show fd 1 of pid %d as shared:\n%.2500s", pid, text)
		}
	}
	if !strings.Contains(text, "processes: 5,") {
		t.Errorf("inspect output does not say processes: 5:\n%.500s", text)
	}
}

// dumpKillTree checkpoints p and its descendants with --kill and waits until
// every PID of the image is free (the orphans come to us and are reaped).
func dumpKillTree(t *testing.T, p *proc, wantProcs int) (string, []imgProc) {
	t.Helper()
	img := dump(t, p, "--kill")
	ps := imageProcs(t, img)
	if len(ps) != wantProcs {
		t.Errorf("the image holds %d processes %v, want %d", len(ps), imagePIDs(ps), wantProcs)
	}
	if st := p.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --kill the original ended with %q, want signal: killed", st)
	}
	for _, ip := range ps {
		waitPIDFree(t, ip.PID, 10*time.Second)
	}
	return img, ps
}

// Pipes between the processes of a tree keep their unread bytes and their
// ends: the reader gets exactly the 10 KiB written before the dump and then
// what the parent writes after the restore; two writers holding one write
// end still feed one pipe, their sequences unbroken; a file opened before
// fork keeps one offset for the parent and a child.
func TestPipes(t *testing.T) {
	setup(t, "pipes")
	dir := t.TempDir()
	p := start(t, "pipes", dir)
	m := p.waitLog(t, `(?m)^pids (\d+) (\d+) (\d+) (\d+)$`, 1, 10*time.Second)
	parent, reader, w1, w2 := atoi(m[1]), atoi(m[2]), atoi(m[3]), atoi(m[4])
	killAtEnd(t, reader, w1, w2)
	p.waitLog(t, `(?m)^alive reader \d+$`, 5, 10*time.Second)
	p.waitLog(t, `(?m)^alive parent \d+$`, 10, 10*time.Second) // the writers have filled pipe B a little

	img, _ := dumpKillTree(t, p, 4)
	r := restoreDetached(t, img, p)
	for _, pid := range []int{reader, w1, w2} {
		if s := mustStat(t, pid); s.ppid != parent {
			t.Errorf("restored %v, want ppid %d", s, parent)
		}
	}

	// Pipe A: exactly the pattern, nothing more, nothing lost.
	if err := unix.Kill(reader, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	r.waitLog(t, `(?m)^reader pattern ok 10240$`, 1, 10*time.Second)
	sharedOffset := int64(len("start\nw1 start\n"))
	for round := 1; round <= 2; round++ {
		r.signal(t, unix.SIGUSR1)
		if round == 1 {
			r.waitLog(t, `(?m)^reader got ping$`, 1, 10*time.Second)
		}
		b := r.waitLog(t, `(?m)^pipeB ok w1 (\d+) w2 (\d+)$`, round, 10*time.Second)
		if n1, n2 := atoi(b[1]), atoi(b[2]); n1 < 5 || n2 < 5 {
			t.Errorf("round %d: pipe B gave w1 %d and w2 %d messages in all, want some of each", round, n1, n2)
		}
		// One offset: the parent's record ends where w1's begins.
		po := atoi(r.waitLog(t, `(?m)^parent offset (\d+)$`, round, 10*time.Second)[1])
		wo := atoi(r.waitLog(t, `(?m)^w1 offset (\d+)$`, round, 10*time.Second)[1])
		wa := atoi(r.waitLog(t, `(?m)^w1 after (\d+)$`, round, 10*time.Second)[1])
		sharedOffset += 16
		if int64(po) != sharedOffset || int64(wo) != sharedOffset || int64(wa) != sharedOffset+16 {
			t.Errorf("round %d: parent offset after its record %d, w1 offset before its record %d and after %d; want %d, %d, %d (one shared offset)",
				round, po, wo, wa, sharedOffset, sharedOffset, sharedOffset+16)
		}
		sharedOffset += 16
	}
	want := "start\nw1 start\n" + strings.Repeat("parent record..\nw1 record......\n", 2)
	if data, _ := os.ReadFile(filepath.Join(dir, "shared.txt")); string(data) != want {
		t.Errorf("shared.txt is %q, want %q", data, want)
	}
	// The kernel agrees: fd 3 of the parent and of w1 are at one position.
	for _, pid := range []int{parent, w1} {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/3", pid))
		if !strings.HasPrefix(string(data), fmt.Sprintf("pos:\t%d\n", sharedOffset)) {
			t.Errorf("pid %d fd 3: %q, want pos %d", pid, data, sharedOffset)
		}
	}
	// Everything goes on.
	re := `(?m)^alive parent (\d+)$`
	r.waitInt(t, re, lastInt(p.log, re)+10, 10*time.Second)
}

// A MAP_SHARED|MAP_ANONYMOUS area (8 MiB) and a MAP_SHARED file mapping
// stay shared between parent and child after restore, with their content.
func TestSharedMemory(t *testing.T) {
	setup(t, "shm")
	p := start(t, "shm", t.TempDir())
	m := p.waitLog(t, `(?m)^pids (\d+) (\d+)$`, 1, 10*time.Second)
	child := atoi(m[2])
	killAtEnd(t, child)
	// The checks pass before any checkpoint.
	p.signal(t, unix.SIGUSR1)
	unix.Kill(child, unix.SIGUSR1)
	p.waitLog(t, `(?m)^shm ok parent .*$`, 1, 10*time.Second)
	p.waitLog(t, `(?m)^shm ok child .*$`, 1, 10*time.Second)

	img, ps := dumpKillTree(t, p, 2)
	if size := fileSize(img); size > 14<<20 {
		t.Errorf("image is %d bytes: the 8 MiB shared area is stored more than once", size)
	}
	shm := map[int]bool{}
	for _, ip := range ps {
		for _, v := range ip.VMAs {
			if v.Kind == "shared-anon" && v.End-v.Start == 8<<20 {
				shm[ip.PID] = true
			}
		}
	}
	if !shm[p.pid] || !shm[child] {
		t.Errorf("inspect: the 8 MiB shared-anon area is in %v, want in %d and %d", shm, p.pid, child)
	}
	r := restoreDetached(t, img, p)
	if s := mustStat(t, child); s.ppid != p.pid {
		t.Errorf("restored child: %v, want ppid %d", s, p.pid)
	}
	r.signal(t, unix.SIGUSR1)
	unix.Kill(child, unix.SIGUSR1)
	r.waitLog(t, `(?m)^shm ok parent .*$`, 2, 10*time.Second)
	r.waitLog(t, `(?m)^shm ok child .*$`, 2, 10*time.Second)
	// The counters go on from where they were, not from zero.
	before := lastInt(p.log, `(?m)^parent \d+ (\d+)$`)
	r.waitInt(t, `(?m)^parent \d+ (\d+)$`, before+20, 10*time.Second)
}

// A real shell pipeline, caught half way and killed, finishes after a
// foreground restore with the same result as an uninterrupted run.
func TestShellPipeline(t *testing.T) {
	setup(t)
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Fatal("bash is needed:", err)
	}
	script := func(out string) string {
		return `for i in $(seq 1 1500); do echo "line $i"; sleep 0.002; done | tr a-z A-Z | sort -r | md5sum > ` + out
	}
	dir := t.TempDir()
	ref, out := filepath.Join(dir, "ref"), filepath.Join(dir, "out")

	began := time.Now()
	p := startExe(t, "pipeline-ref", bash, "-c", script(ref))
	if st := p.waitExit(t, 60*time.Second); st != "exit status 0" {
		t.Fatalf("reference pipeline: %s; log:\n%s", st, tail(p.log))
	}
	refData, _ := os.ReadFile(ref)
	if len(refData) < 32 {
		t.Fatalf("reference output is %q", refData)
	}
	t.Logf("reference run took %v: %s", time.Since(began).Round(time.Millisecond), refData)

	p = startExe(t, "pipeline", bash, "-c", script(out))
	time.Sleep(1500 * time.Millisecond) // half way (the assertion below checks it did not end yet)
	if p.exited() {
		t.Fatalf("the pipeline ended within 1.5s (%s): the test proves nothing", p.status)
	}
	img := dump(t, p, "--kill")
	ps := imageProcs(t, img)
	if got := fileSize(out); got != 0 {
		t.Fatalf("md5sum wrote %d bytes before the dump: the pipeline had ended; the test proves nothing", got)
	}
	comms := map[string]bool{}
	for _, ip := range ps {
		comms[ip.Comm] = true
	}
	for _, c := range []string{"bash", "tr", "sort", "md5sum"} {
		if !comms[c] {
			t.Errorf("the image has no %s process: %v", c, comms)
		}
	}
	if st := p.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --kill the original ended with %q", st)
	}
	for _, ip := range ps {
		waitPIDFree(t, ip.PID, 10*time.Second)
	}
	killAtEnd(t, imagePIDs(ps)...)
	res := runChpox(t, "restore", img)
	if res.code != 0 {
		t.Fatalf("chpox restore exited %d, want 0 (the pipeline's status); stderr:\n%s\nlog:\n%s", res.code, res.stderr, tail(p.log))
	}
	got, _ := os.ReadFile(out)
	if string(got) != string(refData) {
		t.Errorf("restored pipeline wrote %q, the uninterrupted one %q", got, refData)
	}
	if data, _ := os.ReadFile(p.log); len(data) > 0 {
		t.Errorf("the pipeline wrote to stdout/stderr:\n%s", tailOf(data))
	}
}

// --no-children dumps the parent alone and says which children it leaves
// out; the tree goes on untouched.
func TestDumpNoChildren(t *testing.T) {
	setup(t, "tree")
	p, tp := startTree(t)
	img := filepath.Join(t.TempDir(), "parent.img")
	r := mustChpox(t, "dump", "--no-children", strconv.Itoa(p.pid), "-o", img)
	if !strings.Contains(r.stderr, "left out") {
		t.Errorf("dump --no-children stderr %q does not say the children are left out", r.stderr)
	}
	for _, c := range []int{tp.c1, tp.c2} {
		if !strings.Contains(r.stderr, strconv.Itoa(c)) {
			t.Errorf("dump --no-children stderr %q does not name child %d", r.stderr, c)
		}
	}
	ps := imageProcs(t, img)
	if len(ps) != 1 || ps[0].PID != p.pid {
		t.Errorf("the image holds %v, want only %d", imagePIDs(ps), p.pid)
	}
	for _, role := range []string{"parent", "c1", "c2", "gc"} {
		re := `(?m)^alive ` + role + ` (\d+)$`
		p.waitInt(t, re, lastInt(p.log, re)+5, 10*time.Second)
	}
	wantTree(t, tp, "after dump --no-children")
	for _, pid := range tp.all() {
		if st := procState(pid); !strings.Contains(st, "TracerPid: 0") {
			t.Errorf("pid %d after the dump: %s, want untraced", pid, st)
		}
	}
}

// TestDumpBusyTree: a shell that forks, execs and reaps a child all the
// time is dumped again and again: children are caught being born, execing
// and dying. Every dump succeeds or fails with a message, the shell runs on
// untraced, and the image taken with --kill goes on counting.
func TestDumpBusyTree(t *testing.T) {
	setup(t)
	p := startExe(t, "busy", "/bin/sh", "-c", `i=0; while :; do /bin/true; i=$((i+1)); [ $((i % 20)) -eq 0 ] && echo "round $i"; done`)
	several := 0
	for _, r := range dumpWhileChanging(t, p, "a busy shell", `(?m)^round (\d+)$`, 20, 100) {
		if strings.Contains(r.stderr, ": 2 processes") {
			several++ // a child was caught on its way
		}
	}
	t.Logf("%d dumps caught a child", several)
}

// TestDumpExecing: a process that replaces itself by exec every 3 ms is
// dumped 20 times, caught before, during and after its execs: every dump
// succeeds or says why, it goes on untraced, and the --kill image goes on
// counting generations.
func TestDumpExecing(t *testing.T) {
	setup(t, "reexec")
	dumpWhileChanging(t, start(t, "reexec"), "an execing process", `(?m)^gen (\d+)$`, 20, 50)
}

// dumpWhileChanging dumps p, which changes all the time, 20 times: each
// dump succeeds or fails with chpox's message (19 of 20 must succeed), p
// goes on untraced by `step` more counts of re, and an image taken with
// --kill restores and counts on. It returns the successful dumps.
func dumpWhileChanging(t *testing.T, p *proc, what, re string, first, step int) []chpoxResult {
	t.Helper()
	p.waitInt(t, re, first, 10*time.Second)
	img := filepath.Join(t.TempDir(), p.name+".img")
	var ok []chpoxResult
	for range 20 {
		r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
		switch {
		case r.code == 0:
			ok = append(ok, r)
		case r.code >= 128 || !strings.Contains(r.stderr, "chpox: "):
			t.Fatalf("dump of %s: exit %d, %q", what, r.code, r.stderr)
		}
	}
	if len(ok) < 19 {
		t.Errorf("only %d of 20 dumps of %s succeeded", len(ok), what)
	}
	p.waitInt(t, re, lastInt(p.log, re)+step, 10*time.Second) // its own checks hold
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("%s after the dumps: %s", what, st)
	}
	img = dumpKill(t, p)
	waitImagePIDsFree(t, img)
	r := restoreDetached(t, img, p)
	r.waitInt(t, re, lastInt(p.log, re)+step, 10*time.Second)
	return ok
}

// waitImagePIDsFree waits until every PID of the image is free: a child
// killed by --kill is an orphan zombie of this subreaper until reaped.
func waitImagePIDsFree(t *testing.T, img string) {
	t.Helper()
	var top struct{ Processes []struct{ PID int } }
	if err := json.Unmarshal([]byte(quietChpox(t, "inspect", "--json", img)), &top); err != nil {
		t.Fatal(err)
	}
	for _, q := range top.Processes {
		waitPIDFree(t, q.PID, 10*time.Second)
	}
}
