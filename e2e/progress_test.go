package e2e

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// chpoxOnTerminal runs chpox with stderr on a new pseudo-terminal and
// returns what it drew there.
func chpoxOnTerminal(t *testing.T, args ...string) string {
	t.Helper()
	m, slavePath := openPTY(t)
	slave, err := os.OpenFile(slavePath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(chpoxBin, args...)
	cmd.Stderr = slave
	cmd.Env = append(os.Environ(), "CHPOX_TEST_PROGRESS_DELAY=1ms")
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&out, m); close(copied) }()
	err = cmd.Run()
	slave.Close()
	time.Sleep(100 * time.Millisecond) // the master reads what is left
	m.Close()
	<-copied
	if err != nil {
		t.Fatalf("chpox %s: %v\n%q", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// TestProgress: on a terminal, a dump and a restore draw a progress line
// (bytes of the total, rate, time left) that they erase at the end; on a
// pipe they print only their summary, and with --quiet nothing.
func TestProgress(t *testing.T) {
	setup(t, "bigmem")
	p := start(t, "bigmem", "256")
	p.waitLog(t, `(?m)^ready$`, 1, 30*time.Second)
	img := t.TempDir() + "/bigmem.chp"
	pid := strconv.Itoa(p.pid)
	drawn := chpoxOnTerminal(t, "dump", pid, "-o", img)
	if !strings.Contains(drawn, "\r\033[Kchpox: dump "+pid+": ") || !strings.Contains(drawn, " of 256.") || !strings.Contains(drawn, " left") {
		t.Errorf("dump on a terminal drew %q, want a progress line", drawn)
	}
	if i, j := strings.LastIndex(drawn, "\r\033[K"), strings.Index(drawn, "chpox: checkpoint of pid"); i < 0 || j < i {
		t.Errorf("dump on a terminal: the progress line is not erased before the summary: %q", drawn)
	}
	piped := mustChpox(t, "dump", pid, "-o", img)
	if strings.Contains(piped.stderr, "\r") || !strings.HasPrefix(piped.stderr, "chpox: checkpoint of pid") {
		t.Errorf("dump to a pipe printed %q, want only its summary", piped.stderr)
	}
	if q := mustChpox(t, "dump", "--quiet", pid, "-o", img); q.stderr != "" || q.stdout != "" {
		t.Errorf("dump --quiet printed %q %q", q.stdout, q.stderr)
	}
	img = dumpKill(t, p)
	drawn = chpoxOnTerminal(t, "restore", "--detach", img)
	if !strings.Contains(drawn, "\r\033[Kchpox: restore "+img+": ") || !strings.Contains(drawn, " of 256.") {
		t.Errorf("restore on a terminal drew %q, want a progress line", drawn)
	}
	r := adopt(t, "bigmem(restored)", p.pid, p.log)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^bigmem ok$`, 1, 30*time.Second)
}
