package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestResourceLimits: every resource limit, soft and hard, comes back as
// it was: set here on the running process to values that differ from
// the defaults chpox restore runs with, compared in /proc/PID/limits.
// Hard limits are only lowered (the test may lack CAP_SYS_RESOURCE).
func TestResourceLimits(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 3, 10*time.Second)
	limits := map[int]unix.Rlimit{
		unix.RLIMIT_CPU:        {Cur: 100000, Max: 200000},
		unix.RLIMIT_FSIZE:      {Cur: 1 << 30, Max: 1 << 31},
		unix.RLIMIT_DATA:       {Cur: 1 << 40, Max: 1 << 41},
		unix.RLIMIT_STACK:      {Cur: 4 << 20, Max: 16 << 20},
		unix.RLIMIT_CORE:       {Cur: 1 << 20, Max: 2 << 20},
		unix.RLIMIT_NPROC:      {Cur: 12345, Max: 23456},
		unix.RLIMIT_NOFILE:     {Cur: 555, Max: 666},
		unix.RLIMIT_MEMLOCK:    {Cur: 3 << 20, Max: 5 << 20},
		unix.RLIMIT_AS:         {Cur: 1 << 44, Max: 1 << 45},
		unix.RLIMIT_LOCKS:      {Cur: 1000, Max: 2000},
		unix.RLIMIT_SIGPENDING: {Cur: 3456, Max: 4567},
		unix.RLIMIT_MSGQUEUE:   {Cur: 123456, Max: 234567},
		unix.RLIMIT_RTTIME:     {Cur: 1000000, Max: 2000000},
	}
	for res, l := range limits {
		if err := unix.Prlimit(p.pid, res, &l, nil); err != nil {
			t.Fatalf("prlimit(%d, %d): %v", p.pid, res, err)
		}
	}
	read := func(pid int) string {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	before := read(p.pid)
	for _, w := range []string{"Max core file size        1048576              2097152", "Max realtime timeout      1000000              2000000"} {
		if !strings.Contains(before, w) {
			t.Fatalf("the original's limits lack %q: the test would prove nothing:\n%s", w, before)
		}
	}
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, lastInt(p.log, countRE)+3, 10*time.Second)
	if after := read(r.pid); after != before {
		t.Errorf("resource limits changed across the restore:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
