package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

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
// too), scheduling policy and priority with reset-on-fork, CPU affinity,
// I/O priority, timer slack, parent-death signal, oom_score_adj, child
// subreaper, THP disable, membarrier registration, audit loginuid and
// umask come back as they were: the program reports each as the kernel
// gives it to itself, before the dump and after the restore.
func TestAttributes(t *testing.T) {
	setup(t, "attrs")
	p := startExe(t, "attrs", "nice", "-n", "7", progs["attrs"])
	keys := []string{"A 0", "A 1", "A 2", "P"}
	before := lastLines(t, p, 0, 2, keys...)
	want := map[string]string{
		"A 0": "A 0 nice=7 pol=0 flags=0 prio=0",
		"A 1": "A 1 nice=3 pol=3 flags=1 prio=0 aff=2 io=24576 slack=123456 pdeath=28",
		"A 2": "A 2 nice=4 pol=1 flags=0 prio=5",
		"P":   "P oom=345 subreaper=1 thp=1 membarrier=16 loginuid=1234 umask=0037",
	}
	for k, w := range want {
		if !strings.HasPrefix(before[k], w) {
			t.Fatalf("the original reports %q, want %q...: the test would prove nothing", before[k], w)
		}
	}
	img := dumpKill(t, p)
	off := logSize(p.log)
	r := restoreDetached(t, img, p)
	after := lastLines(t, r, off, 2, keys...)
	for _, k := range keys {
		if after[k] != before[k] {
			t.Errorf("after restore %q\n               before %q", after[k], before[k])
		}
	}
	insp := mustChpox(t, "inspect", img).stdout
	for _, w := range []string{"nice 7", "oom_score_adj 345", "SCHED_FIFO 5", "loginuid 1234"} {
		if !strings.Contains(insp, w) {
			t.Errorf("inspect does not show %q:\n%s", w, insp)
		}
	}
}
