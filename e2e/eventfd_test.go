package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestEventfdState: eventfds come back with their counters (one beyond
// 32 bits), semaphore mode, O_NONBLOCK and close-on-exec, as
// /proc/PID/fdinfo shows them before the dump and after the restore.
func TestEventfdState(t *testing.T) {
	setup(t, "eventfds")
	p := start(t, "eventfds")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	read := func(pid int) map[int]string {
		m := map[int]string{}
		for fd := 3; fd <= 5; fd++ {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
			if err != nil {
				t.Fatal(err)
			}
			var keep []string
			for _, l := range strings.Split(string(b), "\n") {
				k, v, _ := strings.Cut(l, ":")
				switch k {
				case "flags", "eventfd-count", "eventfd-semaphore":
					keep = append(keep, k+" "+strings.TrimSpace(v))
				}
			}
			m[fd] = strings.Join(keep, ", ")
		}
		return m
	}
	before := read(p.pid)
	want := map[int]string{
		3: "flags 04002, eventfd-count 5, eventfd-semaphore 0",
		4: "flags 02, eventfd-count 3, eventfd-semaphore 1",
		5: "flags 02000002, eventfd-count 100000007, eventfd-semaphore 0",
	}
	for fd, w := range want {
		if before[fd] != w {
			t.Fatalf("the original's fd %d: %q, want %q: the test would prove nothing", fd, before[fd], w)
		}
	}
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.waitInt(t, `(?m)^tick (\d+)$`, lastInt(p.log, `(?m)^tick (\d+)$`)+3, 10*time.Second)
	after := read(r.pid)
	for fd := 3; fd <= 5; fd++ {
		if after[fd] != before[fd] {
			t.Errorf("fd %d after restore %q\n      before %q", fd, after[fd], before[fd])
		}
	}
}
