package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestTimersFastAlarm: a 1 ms ITIMER_REAL has expired with its SIGALRM
// pending when chpox reads it (time left 0: the kernel arms it again when
// the signal is taken); after restore the SIGALRMs go on.
func TestTimersFastAlarm(t *testing.T) {
	setup(t, "timers")
	p := start(t, "timers", "fast")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	time.Sleep(500 * time.Millisecond)
	r := restoreDetached(t, img, p)
	r.waitLog(t, `(?m)^timers done, 0 failed$`, 1, 10*time.Second)
	t.Logf("%s", tail(p.log))
}

// TestTimersRefused: an armed POSIX timer on CLOCK_TAI (whether it was set
// for an absolute time cannot be told) is refused by name at dump; the
// process runs on untraced with its timer still armed.
func TestTimersRefused(t *testing.T) {
	setup(t, "timers")
	p := start(t, "timers", "refuse")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := filepath.Join(t.TempDir(), "x.img")
	r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
	wantFailure(t, r, 6, "posix timer 0", "clock 11")
	if _, err := os.Stat(img); err == nil {
		t.Errorf("the refused dump left %s", img)
	}
	re := `(?m)^alive (\d+) tai armed 1$`
	p.waitInt(t, re, lastInt(p.log, re)+5, 10*time.Second)
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("after the refused dump: %s", st)
	}
}

// TestRunTimers: the same timers in a job under chpox run, checkpointed on
// its trigger while it keeps running (chpox run's own collection path);
// the job is killed and the image restored 1.5 s later.
func TestRunTimers(t *testing.T) {
	setup(t, "timers")
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--signal", "USR2", "-o", img, "--", progs["timers"])
	j.waitFile(t, j.stdout, `(?m)^ready$`, 1, 10*time.Second)
	unix.Kill(j.root, unix.SIGUSR2)
	j.waitCheckpoint(t, 1, 1, img)
	killPIDs(t, j.root)
	time.Sleep(1500 * time.Millisecond)
	r := restoreDetached(t, img, &proc{name: "timers", pid: j.root, log: j.stdout})
	r.waitLog(t, `(?m)^timers done`, 1, 15*time.Second)
	log := tail(j.stdout)
	if strings.Contains(log, "FAIL") || !strings.Contains(log, "timers done, 0 failed") {
		t.Errorf("timers after restore:\n%s", log)
	}
	t.Logf("%s", log)
}
