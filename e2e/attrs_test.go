package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sameAfterRestore checkpoints p with --kill, restores it detached and
// checks that it reports each of keys as it did before (lastLines); it
// returns the image and the restored process.
func sameAfterRestore(t *testing.T, p *proc, before map[string]string, keys ...string) (string, *proc) {
	t.Helper()
	img := dumpKill(t, p)
	return img, restoredSame(t, img, p, before, keys...)
}

// restoredSame restores img (of p) detached and checks that it reports
// each of keys as p did before; it returns the restored process.
func restoredSame(t *testing.T, img string, p *proc, before map[string]string, keys ...string) *proc {
	t.Helper()
	off := logSize(p.log)
	r := restoreDetached(t, img, p)
	after := lastLines(t, r, off, 2, keys...)
	for _, k := range keys {
		if after[k] != before[k] {
			t.Errorf("after restore %q\n               before %q", after[k], before[k])
		}
	}
	return r
}

// lastLines waits until the log, from byte off on, holds at least n lines
// starting with each of keys, and returns the last such line per key.
func lastLines(t *testing.T, p *proc, off int, n int, keys ...string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		data, _ := os.ReadFile(p.log)
		if failRE.Match(data) {
			t.Fatalf("%s reported a failure; log:\n%s", p.name, tailOf(data))
		}
		last, count := map[string]string{}, map[string]int{}
		if off <= len(data) {
			for _, l := range strings.Split(string(data[off:]), "\n") {
				for _, k := range keys {
					if strings.HasPrefix(l, k+" ") {
						last[k], count[k] = l, count[k]+1
					}
				}
			}
		}
		done := true
		for _, k := range keys {
			done = done && count[k] >= n
		}
		if done {
			return last
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s (pid %d, %s) did not report %v %d times; log:\n%s", p.name, p.pid, p.status, keys, n, tailOf(data))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func logSize(path string) int {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return int(st.Size())
}

// TestAttributes: nice (per thread, the one a process was started with
// too), scheduling policy and priority with reset-on-fork, a custom time
// slice and the SCHED_DEADLINE parameters, CPU affinity,
// I/O priority, timer slack, parent-death signal, rdtsc faulting,
// machine-check kill policy, oom_score_adj, child
// subreaper, THP disable, membarrier registration, audit loginuid, umask
// and each thread's GS base come back as they were: the program reports
// each as the kernel gives it to itself, before the dump and after the
// restore.
func TestAttributes(t *testing.T) {
	setup(t, "attrs")
	p := startExe(t, "attrs", "nice", "-n", "7", progs["attrs"])
	keys := []string{"A 0", "A 1", "A 2", "A 3", "G 0", "G 1", "G 2", "G 3", "P"}
	before := lastLines(t, p, 0, 2, keys...)
	want := map[string]string{
		"A 0": "A 0 nice=7 pol=0 flags=0 prio=0",
		"A 1": "A 1 nice=3 pol=3 flags=1 prio=0 dl=3000000/0/0 aff=2 io=24576 slack=123456 pdeath=28 tsc=2 mce=1",
		"A 2": "A 2 nice=4 pol=1 flags=0 prio=5",
		"A 3": "A 3 nice=7 pol=6 flags=0 prio=0 dl=2000000/50000000/100000000",
		"G 0": "G 0 gs=700000000000",
		"G 3": "G 3 gs=700000003000",
		"P":   "P oom=345 subreaper=1 thp=1 membarrier=16 loginuid=1234 umask=0037",
	}
	for k, w := range want {
		if !strings.HasPrefix(before[k], w) {
			t.Fatalf("the original reports %q, want %q...: the test would prove nothing", before[k], w)
		}
	}
	if !strings.HasSuffix(before["A 2"], " tsc=1 mce=0") || !strings.HasSuffix(before["A 0"], " tsc=1 mce=2") {
		t.Fatalf("the original's machine-check kill policies: %q, %q", before["A 0"], before["A 2"])
	}
	img, _ := sameAfterRestore(t, p, before, keys...)
	insp := mustChpox(t, "inspect", img).stdout
	for _, w := range []string{"nice 7", "oom_score_adj 345", "SCHED_FIFO 5", "SCHED_DEADLINE runtime 2000000", "loginuid 1234"} {
		if !strings.Contains(insp, w) {
			t.Errorf("inspect does not show %q:\n%s", w, insp)
		}
	}
}

// TestAttributesUserImage: the scheduling a user's process had comes back
// as far as the user may give it. From an image the user owns, root
// restores it with the user's rights only: a nice value root had lowered
// (-3) is refused there (a forged image must gain its owner nothing), and
// comes back from the same image once root owns it.
func TestAttributesUserImage(t *testing.T) {
	setup(t, "counter")
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed:", err)
	}
	if err := os.Chmod(workDir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := startExe(t, "counter", setpriv, "--reuid=1000", "--regid=1000", "--clear-groups", progs["counter"])
	os.Chmod(filepath.Dir(filepath.Dir(p.log)), 0o755)
	os.Chmod(filepath.Dir(p.log), 0o755)
	os.Chmod(p.log, 0o666)
	p.waitInt(t, countRE, 3, 10*time.Second)
	if err := unix.Setpriority(unix.PRIO_PROCESS, p.pid, -3); err != nil {
		t.Fatal(err)
	}
	img := dumpKill(t, p)
	if err := os.Chown(img, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	r := runChpox(t, "restore", "--detach", img)
	if r.code == 0 {
		killPIDs(t, p.pid)
		t.Fatalf("root restored nice -3 from an image uid 1000 owns")
	}
	wantFailure(t, r, 5, "sched_setattr", "nice -3", "operation not permitted", "image not trusted", "as root only images root wrote")
	assertPIDFree(t, p.pid)
	if err := os.Chown(img, 0, 0); err != nil {
		t.Fatal(err)
	}
	rp := restoreDetached(t, img, p)
	rp.waitInt(t, countRE, lastInt(p.log, countRE)+3, 10*time.Second)
	if n, err := unix.Getpriority(unix.PRIO_PROCESS, rp.pid); err != nil || 20-n != -3 {
		t.Errorf("restored from root's image with nice %d (%v), want -3", 20-n, err)
	}
}

// TestPdeathSigDetach: a root process with a parent-death signal it does
// not ignore (here SIGTERM, set by setpriv) is not restored with --detach,
// whose chpox, the root's parent after restore, would exit at once and so
// send it; a foreground restore brings it back, the signal still set.
func TestPdeathSigDetach(t *testing.T) {
	setup(t, "counter")
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed:", err)
	}
	p := startExe(t, "counter", setpriv, "--pdeathsig", "TERM", progs["counter"])
	p.waitInt(t, countRE, 3, 10*time.Second)
	img := dumpKill(t, p)
	if insp := mustChpox(t, "inspect", img).stdout; !strings.Contains(insp, "pdeathsig 15") {
		t.Fatalf("inspect does not show pdeathsig 15:\n%s", insp)
	}
	wantFailure(t, runChpox(t, "restore", "--detach", img), 5, "parent-death signal 15", "restore in the foreground")
	assertPIDFree(t, p.pid)
	fg := startChpox(t, "restore", img)
	waitFor(t, 10*time.Second, "the restored counter", func() bool { return pidExists(p.pid) })
	adopted := adopt(t, "counter(restored)", p.pid, p.log)
	adopted.waitInt(t, countRE, lastInt(p.log, countRE)+5, 10*time.Second)
	// Its parent-death signal came back: dumped again, the image says so.
	if insp := mustChpox(t, "inspect", dump(t, adopted)).stdout; !strings.Contains(insp, "pdeathsig 15") {
		t.Errorf("the restored process, dumped again, has lost its parent-death signal:\n%s", insp)
	}
	adopted.kill()
	select {
	case <-fg.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the foreground restore did not end with its process")
	}
}
