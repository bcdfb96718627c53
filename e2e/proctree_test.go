package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// proctree.c's processes, by role.
type ptPIDs struct{ p, zk, zt, zl, g, sStop, sTstp, sTtin, sTtou, sWaited, tp int }

func (pp ptPIDs) all() []int {
	return []int{pp.p, pp.zk, pp.zt, pp.zl, pp.g, pp.sStop, pp.sTstp, pp.sTtin, pp.sTtou, pp.sWaited, pp.tp}
}

// checkProcTree has P, g and tp check themselves (none of the checks
// changes anything: P waits with WNOWAIT) and checks what /proc shows.
func checkProcTree(t *testing.T, r *proc, pp ptPIDs, round int, when string) {
	t.Helper()
	for _, pid := range []int{pp.p, pp.g, pp.tp} {
		if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
			t.Fatalf("%s: kill %d: %v", when, pid, err)
		}
	}
	r.waitLog(t, `(?m)^P ok$`, round, 10*time.Second)
	r.waitLog(t, `(?m)^g ok parent `+itoa(pp.p)+`$`, round, 10*time.Second)
	r.waitLog(t, `(?m)^tp ok$`, round, 10*time.Second)
	want := map[int]stat{
		pp.zk: {state: "Z", pgid: pp.p}, pp.zt: {state: "Z", pgid: pp.p}, pp.zl: {state: "Z", pgid: pp.zl},
		pp.g: {state: "S", pgid: pp.zl}, pp.tp: {state: "S", pgid: pp.p},
		pp.sStop: {state: "T", pgid: pp.p}, pp.sTstp: {state: "T", pgid: pp.p}, pp.sTtin: {state: "T", pgid: pp.p},
		pp.sTtou: {state: "T", pgid: pp.p}, pp.sWaited: {state: "T", pgid: pp.p},
	}
	// Both threads of sTTIN are in the group-stop.
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pp.sTtin))
	if len(tasks) != 2 {
		t.Errorf("%s: sTTIN has %d threads, want 2", when, len(tasks))
	}
	for _, task := range tasks {
		if st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pp.sTtin, task.Name())); !strings.Contains(string(st), ") T ") {
			t.Errorf("%s: sTTIN thread %s: %s, want stopped (T)", when, task.Name(), st)
		}
	}
	for pid, w := range want {
		got, err := readStat(pid)
		if err != nil {
			t.Errorf("%s: pid %d: %v", when, pid, err)
			continue
		}
		if got.state != w.state || got.ppid != pp.p || got.pgid != w.pgid {
			t.Errorf("%s: %v, want state %s ppid %d pgid %d", when, got, w.state, pp.p, w.pgid)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// A tree with every kind of process state a parent can wait for comes
// back exactly: zombies killed by SIGKILL and SIGTERM (their parent has
// handlers) and a zombie that leads a process group with a live member;
// that member, reparented to its subreaper grandparent when its parent
// died, is the subreaper's child again, in the zombie's group, and the
// subreaper is one again; children stopped by SIGSTOP, SIGTSTP, SIGTTIN
// and SIGTTOU are stopped again and their parent's waitid(WSTOPPED) sees
// each stop signal, while the stop the parent had already collected stays
// collected; a blocked pending SIGTRAP is still pending, once, with its
// siginfo. A plain dump changes none of it.
func TestProcTreeStates(t *testing.T) {
	setup(t, "proctree")
	p := start(t, "proctree")
	m := p.waitLog(t, `(?m)^pids(( \d+){11})$`, 1, 10*time.Second)
	f := strings.Fields(m[1])
	pp := ptPIDs{atoi(f[0]), atoi(f[1]), atoi(f[2]), atoi(f[3]), atoi(f[4]), atoi(f[5]), atoi(f[6]), atoi(f[7]), atoi(f[8]), atoi(f[9]), atoi(f[10])}
	killAtEnd(t, pp.all()...) // P first: its zombies then go
	checkProcTree(t, p, pp, 1, "original")

	dump(t, p) // a plain dump leaves every state as it was
	checkProcTree(t, p, pp, 2, "original after a dump")

	img, _ := dumpKillTree(t, p, 11)
	text := quietChpox(t, "inspect", img)
	for _, w := range []string{"(zombie, wait status 0x9)", "(zombie, wait status 0xf)", "(zombie, wait status 0x500)",
		"(stopped by SIGSTOP)", "(stopped by SIGTSTP)", "(stopped by SIGTTIN)", "(stopped by SIGTTOU)",
		"(stopped by SIGSTOP, stop already waited for)", "(child subreaper)"} {
		if !strings.Contains(text, w) {
			t.Errorf("inspect lacks %q:\n%.3000s", w, text)
		}
	}
	r := restoreDetached(t, img, p)
	checkProcTree(t, r, pp, 3, "restored")
	// And the parent can take it all down: SIGCONT, kill, reap everyone.
	r.signal(t, unix.SIGUSR2)
	r.waitLog(t, `(?m)^reaped 10$`, 1, 10*time.Second)
	re := `(?m)^alive P (\d+)$`
	r.waitInt(t, re, lastInt(p.log, re)+3, 10*time.Second)
}

// A process in a ptrace-stop of another tracer (here its own parent, which
// traces it) cannot be checkpointed: the dump is refused naming both, and
// both go on as they were.
func TestProcTracedByAnotherRefused(t *testing.T) {
	setup(t, "proctree")
	p := start(t, "proctree", "traced")
	c := atoi(p.waitLog(t, `(?m)^traced (\d+)$`, 1, 10*time.Second)[1])
	killAtEnd(t, p.pid, c)
	r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "x.img"))
	wantFailure(t, r, 6, fmt.Sprintf("pid %d is already traced by pid %d (proctree", c, p.pid), "detach that tracer first")
	if st := procState(c); !strings.Contains(st, "State: t") || !strings.Contains(st, "TracerPid: "+strconv.Itoa(p.pid)) {
		t.Errorf("the traced child after the refused dump: %s, want still in its ptrace-stop, traced by %d", st, p.pid)
	}
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") || p.exited() {
		t.Errorf("its parent after the refused dump: %s, want running untraced", st)
	}
}
