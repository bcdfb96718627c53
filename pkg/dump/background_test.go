package dump

import (
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func policy(t *testing.T) (int, int) {
	t.Helper()
	a, err := unix.SchedGetAttr(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return int(a.Policy), int(a.Nice)
}

// TestBackgroundIdle: work runs in the idle class on a thread of its own;
// the caller's thread keeps its class.
func TestBackgroundIdle(t *testing.T) {
	if !mayRenice() {
		t.Skip("needs CAP_SYS_NICE or RLIMIT_NICE >= 10")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	callerTid := unix.Gettid()
	var pol, tid int
	if err := Background(func() error {
		pol, _ = policy(t)
		tid = unix.Gettid()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pol != unix.SCHED_IDLE {
		t.Errorf("work ran in policy %d, want SCHED_IDLE (%d)", pol, unix.SCHED_IDLE)
	}
	if tid == callerTid {
		t.Errorf("work ran on the caller's thread %d", tid)
	}
	if p, n := policy(t); p != unix.SCHED_NORMAL || n != 0 {
		t.Errorf("caller's thread now policy %d nice %d, want SCHED_NORMAL nice 0", p, n)
	}
}

// TestNicely: work that may hold the job's memory map lock runs at nice
// 10, not in the idle class, on a thread of its own.
func TestNicely(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	callerTid := unix.Gettid()
	var pol, nice, tid int
	if err := Nicely(func() error {
		pol, nice = policy(t)
		tid = unix.Gettid()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pol != unix.SCHED_NORMAL || nice != 10 || tid == callerTid {
		t.Errorf("work ran in policy %d nice %d on thread %d (caller %d), want SCHED_NORMAL nice 10 on another", pol, nice, tid, callerTid)
	}
}

// TestBackgroundStarved: on a machine busy on every CPU, work leaves the
// idle class for nice 10 instead of crawling.
func TestBackgroundStarved(t *testing.T) {
	if !mayRenice() {
		t.Skip("needs CAP_SYS_NICE or RLIMIT_NICE >= 10")
	}
	for range runtime.NumCPU() {
		spin := exec.Command("sh", "-c", "while :; do :; done")
		spin.Stdin, spin.Stdout, spin.Stderr = nil, nil, nil
		if err := spin.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { spin.Process.Kill(); spin.Wait() })
	}
	var pol, nice int
	if err := Background(func() error {
		for end := time.Now().Add(10 * watchPeriod); time.Now().Before(end); {
			if pol, nice = policy(t); pol == unix.SCHED_NORMAL {
				return nil
			}
			for i := 0; i < 1e6; i++ { // stay runnable
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if pol != unix.SCHED_NORMAL || nice != 10 {
		t.Errorf("starved work ended in policy %d nice %d, want SCHED_NORMAL nice 10", pol, nice)
	}
}

// TestWaited: schedstat is read (else the watchdog gives up on the idle
// class at once, and TestBackgroundStarved would pass for that reason).
func TestWaited(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if _, err := waited(unix.Gettid()); err != nil {
		t.Fatal(err)
	}
}
