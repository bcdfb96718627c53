package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestSyscallsRestarted: system calls the checkpoint caught blocked (a
// pipe read, a relative clock_nanosleep, a futex wait) go on after the
// restore as the kernel restarts them after a stop: none returns EINTR
// to a program without signal handlers.
func TestSyscallsRestarted(t *testing.T) {
	setup(t, "restarts")
	p := start(t, "restarts")
	tickRE := `(?m)^tick (\d+)$`
	p.waitInt(t, tickRE, 10, 10*time.Second)
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	// Past the sleeper's 300 ms, so its restarted call has ended too.
	r.waitInt(t, tickRE, lastInt(p.log, tickRE)+25, 10*time.Second)
	if data, _ := os.ReadFile(p.log); strings.Contains(string(data), "FAIL") {
		t.Errorf("a blocked call returned across the checkpoint; log:\n%s", tailOf(data))
	}
}
