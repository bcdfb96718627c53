package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nsPIDs reads the NSpid line of /proc/PID/status: the process's PID in
// each PID namespace it is in, outermost first.
func nsPIDs(t *testing.T, pid int) []int {
	t.Helper()
	st := statusLines(t, pid)
	var out []int
	for _, f := range strings.Fields(st["NSpid"]) {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

// countsLogged counts how often each "count N" line is in the log.
func countsLogged(log string) map[int]int {
	data, _ := os.ReadFile(log)
	seen := map[int]int{}
	for _, m := range regexp.MustCompile(`(?m)^count (\d+)$`).FindAllStringSubmatch(string(data), -1) {
		n, _ := strconv.Atoi(m[1])
		seen[n]++
	}
	return seen
}

// checkCounts waits until count to was logged times times, then checks
// that every count from from to to was logged exactly that often: each
// copy went on from the checkpoint, none skipped or repeated a step.
func checkCounts(t *testing.T, log string, from, to, times int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for countsLogged(log)[to] < times && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	seen := countsLogged(log)
	for n := from; n <= to; n++ {
		if seen[n] != times {
			data, _ := os.ReadFile(log)
			t.Fatalf("count %d logged %d times, want %d (checked %d to %d); log:\n%s", n, seen[n], times, from, to, tailOf(data))
		}
	}
}

// TestRestoreAsUser: an ordinary user dumps their own process and restores
// it without any privilege: chpox restores it in a new user and PID
// namespace, where it has its PID again; outside it has another.
func TestRestoreAsUser(t *testing.T) {
	setup(t, "counter")
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed:", err)
	}
	user := func(args ...string) *exec.Cmd {
		return exec.Command(setpriv, append([]string{"--reuid=" + strconv.Itoa(testUID), "--regid=" + strconv.Itoa(testUID), "--clear-groups"}, args...)...)
	}
	p, dir := startAsUser(t, "counter")
	p.waitInt(t, `count (\d+)`, 20, 10*time.Second)

	img := filepath.Join(dir, "counter.chp")
	if out, err := user(chpoxBin, "dump", "--kill", strconv.Itoa(p.pid), "-o", img).CombinedOutput(); err != nil {
		t.Fatalf("dump as uid 1000: %v\n%s", err, out)
	}
	<-p.done
	cmd := user(chpoxBin, "restore", "--detach", img)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("restore as uid 1000: %v\n%s", err, stderr.String())
	}
	outer, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("restore --detach printed %q", out)
	}
	r := adopt(t, "counter(restored)", outer, p.log)
	if want := fmt.Sprintf("pid %d there is pid %d here", p.pid, outer); !strings.Contains(stderr.String(), want) {
		t.Errorf("restore said %q, want %q", stderr.String(), want)
	}
	if ns := nsPIDs(t, outer); len(ns) != 2 || ns[0] != outer || ns[1] != p.pid {
		t.Errorf("NSpid %v, want [%d %d]: its own PID inside its namespace", ns, outer, p.pid)
	}
	if st := statusLines(t, outer); st["Uid"] != "1000\t1000\t1000\t1000" || st["CapEff"] != "0000000000000000" {
		t.Errorf("restored with Uid %q CapEff %q, want uid 1000 and no capabilities", st["Uid"], st["CapEff"])
	}
	checkCounts(t, p.log, 1, lastInt(p.log, `count (\d+)`)+30, 1)
	if r.exited() {
		t.Errorf("the restored counter ended: %s", r.status)
	}
}

// TestRestoreCopies: root restores two copies of a running process's
// image beside the original, each in namespaces of its own with the
// original's PID; all three go on from the same count.
func TestRestoreCopies(t *testing.T) {
	setup(t, "counter")
	logPath := filepath.Join(t.TempDir(), "counter.log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(progs["counter"])
	cmd.Stdout, cmd.Stderr = f, f
	p := startCmd(t, "counter", cmd, logPath)
	f.Close()
	p.waitInt(t, `count (\d+)`, 20, 10*time.Second)
	img := dump(t, p)
	at := lastInt(logPath, `count (\d+)`)
	res := mustChpox(t, "restore", "--copies", "2", "--detach", img)
	lines := strings.Fields(res.stdout)
	if len(lines) != 2 {
		t.Fatalf("restore --copies 2 printed %q, want two PIDs", res.stdout)
	}
	for i, l := range lines {
		pid, err := strconv.Atoi(l)
		if err != nil || pid == p.pid {
			t.Fatalf("copy %d: pid %q", i+1, l)
		}
		adopt(t, fmt.Sprintf("copy%d", i+1), pid, logPath)
		if ns := nsPIDs(t, pid); len(ns) != 2 || ns[1] != p.pid {
			t.Errorf("copy %d: NSpid %v, want the original pid %d inside", i+1, ns, p.pid)
		}
	}
	// The original printed up to at before the copies began; from there
	// on all three print every count once.
	checkCounts(t, logPath, at+1, at+60, 3)
	if err := unix.Kill(p.pid, 0); err != nil {
		t.Errorf("the original: %v", err)
	}
}
