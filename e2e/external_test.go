package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lineReader collects the lines a process writes into a pipe this test
// holds: the pipe's other end is outside the checkpointed tree.
type lineReader struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func readLines(r *os.File) *lineReader {
	lr := &lineReader{done: make(chan struct{})}
	go func() {
		defer close(lr.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lr.mu.Lock()
			lr.lines = append(lr.lines, sc.Text())
			lr.mu.Unlock()
		}
	}()
	return lr
}

func (lr *lineReader) snapshot() []string {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	return append([]string(nil), lr.lines...)
}

func pipeOrDie(t *testing.T) (*os.File, *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// linkOf reads the target of /proc/PID/fd/FD ("pipe:[INODE]").
func linkOf(pid, fd int) string {
	l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	return l
}

// TestOutsidePipes: `counter | reader` with the reader outside the tree, and
// a second pipe at fd 5 to this test (as a CI runner's inherited pipe):
// dump succeeds and records both as external; restore without a choice for
// fd 5 is refused before anything starts; restore with one gives stdout to
// chpox restore's own stdout (the counter goes on there, line after line,
// from where it was) and fd 5 to what was named.
func TestOutsidePipes(t *testing.T) {
	setup(t, "counter")
	outR, outW := pipeOrDie(t)
	extraR, _ := pipeOrDie(t)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	cmd := exec.Command(progs["counter"])
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, outW, outW
	cmd.ExtraFiles = []*os.File{nil, nil, extraR} // fd 5
	p := startCmd(t, "counter", cmd, "")
	outW.Close()
	extraR.Close()
	before := readLines(outR)
	waitFor(t, 10*time.Second, "counter output on the pipe", func() bool { return len(before.snapshot()) >= 10 })
	stdoutKey, fd5Key := linkOf(p.pid, 1), linkOf(p.pid, 5)

	img := filepath.Join(t.TempDir(), "counter.img")
	mustChpox(t, "dump", "--kill", strconv.Itoa(p.pid), "-o", img)
	if st := p.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --kill the original ended with %q", st)
	}
	<-before.done // the pipe's only writer is gone
	old := before.snapshot()
	last := old[len(old)-1]
	waitPIDFree(t, p.pid, 10*time.Second)

	// The image says what was shared, and with whom.
	var out struct {
		Objects struct {
			Externals []struct {
				Key  string `json:"key"`
				Peer int    `json:"peer"`
			} `json:"externals"`
		} `json:"objects"`
	}
	if err := json.Unmarshal([]byte(mustChpox(t, "inspect", "--json", img).stdout), &out); err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, e := range out.Objects.Externals {
		keys[e.Key] = e.Peer
	}
	if keys[stdoutKey] != os.Getpid() || keys[fd5Key] != os.Getpid() || len(keys) != 2 {
		t.Fatalf("image externals %v, want %s and %s held by pid %d", keys, stdoutKey, fd5Key, os.Getpid())
	}
	if text := mustChpox(t, "inspect", img).stdout; !strings.Contains(text, fd5Key) || !strings.Contains(text, "--external") {
		t.Errorf("inspect does not list %s with the --external hint:\n%s", fd5Key, text)
	}

	// No choice for fd 5: refused up front, naming it and the option.
	r := runChpox(t, "restore", "--detach", img)
	wantFailure(t, r, 2, "fd 5", fd5Key, "--external")
	if pidExists(p.pid) {
		t.Fatalf("the refused restore left pid %d: %s", p.pid, procState(p.pid))
	}

	// fd 5 gets chpox restore's fd 3 (a pipe of ours), stdout its stdout.
	newOutR, newOutW := pipeOrDie(t)
	giveR, giveW := pipeOrDie(t)
	rc := exec.Command(chpoxBin, "restore", "--detach", "--external", fd5Key+"=3", img)
	var stderr strings.Builder
	rc.Stdout, rc.Stderr = newOutW, &stderr
	rc.ExtraFiles = []*os.File{giveR}
	if err := rc.Run(); err != nil {
		t.Fatalf("restore: %v: %s", err, stderr.String())
	}
	newOutW.Close()
	after := readLines(newOutR)
	restored := adopt(t, "counter(restored)", p.pid, "")
	waitFor(t, 10*time.Second, "restored counter output on chpox's stdout", func() bool { return len(after.snapshot()) >= 5 })
	// chpox's own line (the PID) and the counter's share the pipe; the
	// counter's first line goes on from the last one before the dump.
	var counts []string
	pidSeen := false
	for _, l := range after.snapshot() {
		if l == strconv.Itoa(p.pid) {
			pidSeen = true
		} else {
			counts = append(counts, l)
		}
	}
	if !pidSeen {
		t.Errorf("restore --detach did not print the pid %d on its stdout", p.pid)
	}
	n, err := strconv.Atoi(strings.TrimPrefix(last, "count "))
	if err != nil {
		t.Fatalf("last line before the dump %q", last)
	}
	if want := fmt.Sprintf("count %d", n+1); counts[0] != want {
		t.Errorf("restored counter's first line %q, want %q (it goes on from %q)", counts[0], want, last)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(giveW.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if l := linkOf(restored.pid, 5); l != fmt.Sprintf("pipe:[%d]", st.Ino) {
		t.Errorf("restored fd 5 is %s, want the pipe chpox restore was given, pipe:[%d]", l, st.Ino)
	}
}

// TestOutsideStdin: `cat` reading a pipe held by this test. Restored, its
// stdin is chpox restore's stdin (what is written there comes out of cat);
// restored again with --external KEY=closed, it reads EOF and exits 0.
func TestOutsideStdin(t *testing.T) {
	setup(t)
	inR, inW := pipeOrDie(t)
	outPath := filepath.Join(t.TempDir(), "cat.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command("cat")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, out, out
	p := startCmd(t, "cat", cmd, outPath)
	inR.Close()
	fmt.Fprintln(inW, "before")
	p.waitLog(t, `(?m)^before$`, 1, 10*time.Second)
	key := linkOf(p.pid, 0)
	img := dumpKill(t, p)

	newInR, newInW := pipeOrDie(t)
	rc := exec.Command(chpoxBin, "restore", "--detach", img)
	var stdout, stderr strings.Builder
	rc.Stdin, rc.Stdout, rc.Stderr = newInR, &stdout, &stderr
	if err := rc.Run(); err != nil {
		t.Fatalf("restore: %v: %s", err, stderr.String())
	}
	newInR.Close()
	restored := adopt(t, "cat(restored)", p.pid, outPath)
	fmt.Fprintln(newInW, "after")
	restored.waitLog(t, `(?m)^after$`, 1, 10*time.Second)
	killOriginal(t, restored)

	r := mustChpox(t, "restore", "--detach", "--external", key+"=closed", img)
	again := adopt(t, "cat(restored, closed stdin)", p.pid, outPath)
	if st := again.waitExit(t, 10*time.Second); st != "exit status 0" {
		t.Errorf("cat with a closed stdin ended with %q, want exit status 0 (EOF); restore said %q", st, r.stderr)
	}
}

// openPTY opens a new pseudo-terminal: its master and its slave's path.
func openPTY(t *testing.T) (*os.File, string) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal("unlockpt:", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal("ptsname:", err)
	}
	return m, fmt.Sprintf("/dev/pts/%d", n)
}

// TestTerminalStdio: a program whose stdout is a terminal writes, once
// restored, to the terminal chpox restore runs in, as a shell job would;
// the image records the old terminal as external.
func TestTerminalStdio(t *testing.T) {
	setup(t, "counter")
	oldM, oldPath := openPTY(t)
	slave, err := os.OpenFile(oldPath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	devnull, _ := os.Open(os.DevNull)
	defer devnull.Close()
	cmd := exec.Command(progs["counter"])
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, slave, slave
	p := startCmd(t, "counter", cmd, "")
	slave.Close()
	old := readLines(oldM)
	waitFor(t, 10*time.Second, "counter output on the old terminal", func() bool { return len(old.snapshot()) >= 5 })
	img := filepath.Join(t.TempDir(), "counter.img")
	mustChpox(t, "dump", "--kill", strconv.Itoa(p.pid), "-o", img)
	p.waitExit(t, 10*time.Second)
	waitPIDFree(t, p.pid, 10*time.Second)
	if text := quietChpox(t, "inspect", img); !strings.Contains(text, oldPath+"  terminal") {
		t.Errorf("inspect does not list %s as an external terminal:\n%s", oldPath, text)
	}

	newM, newPath := openPTY(t)
	newSlave, err := os.OpenFile(newPath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	rc := exec.Command(chpoxBin, "restore", "--detach", img)
	var stderr strings.Builder
	rc.Stdin, rc.Stdout, rc.Stderr = devnull, newSlave, &stderr
	if err := rc.Run(); err != nil {
		t.Fatalf("restore: %v: %s", err, stderr.String())
	}
	newSlave.Close()
	adopt(t, "counter(restored)", p.pid, "")
	fresh := readLines(newM)
	waitFor(t, 10*time.Second, "the restored counter's output on the new terminal", func() bool {
		n := 0
		for _, l := range fresh.snapshot() {
			if strings.HasPrefix(l, "count ") {
				n++
			}
		}
		return n >= 5
	})
	if l := linkOf(p.pid, 1); l != newPath {
		t.Errorf("restored stdout is %s, want the new terminal %s", l, newPath)
	}
}
