package e2e

import (
	"strings"
	"testing"
	"time"
)

// TestTimers: interval timers, POSIX timers of every notification kind
// (same ids, relative and absolute, armed and not) and timerfds (relative,
// absolute with cancel-on-set, periodic with unread ticks) survive a dump
// --kill, 1.5 s in the image and a restore. testdata/timers.c checks each
// against its own clocks: a relative timer fires its time left after the
// restore (not early, not lost), an absolute one at its instant (at once if
// that passed in the image), periodic ones go on at their rate.
func TestTimers(t *testing.T) {
	setup(t, "timers")
	p := start(t, "timers")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	insp := mustChpox(t, "inspect", img)
	for _, w := range []string{"itimer real", "posix timer 0", "timerfd"} {
		if !strings.Contains(insp.stdout, w) {
			t.Errorf("inspect does not show %q:\n%s", w, insp.stdout)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	r := restoreDetached(t, img, p)
	r.waitLog(t, `(?m)^timers done`, 1, 15*time.Second)
	log := tail(p.log)
	if strings.Contains(log, "FAIL") || !strings.Contains(log, "timers done, 0 failed") {
		t.Errorf("timers after restore:\n%s", log)
	}
	t.Logf("%s", log)
}
