package dump

import (
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Background runs work, which must call no ptrace and hold no lock of the
// job (the image write, fsync and rename), on an OS thread of its own in
// the idle scheduling class (SCHED_IDLE): writing gigabytes while the job
// runs must not take the job's CPU. A CPU that runs only idle-class work
// counts as free when the job wakes, so the job gets it at once; at nice
// 10 it may wait behind other work on its own CPU (kdamond, here) while
// chpox holds the other.
//
// The idle class gets almost nothing on a busy machine, so a watchdog
// moves the thread to nice 10 once it has waited for a CPU half the time
// for half a second; where chpox may not leave the idle class again (no
// CAP_SYS_NICE, RLIMIT_NICE below 10) it uses nice 10 from the start. The
// thread ends with work (it stays locked), so its class never reaches
// another goroutine and nothing needs putting back.
func Background(work func() error) error { return onThread(background, work) }

// Nicely is Background at nice 10, for work that holds the job's memory
// map lock now and then (process_vm_readv, PAGEMAP_SCAN: the live copy's
// rounds). Preempted while holding it, an idle-class thread on a busy
// machine would keep a job that maps memory waiting until the watchdog
// noticed; at nice 10 it gets a CPU within milliseconds.
func Nicely(work func() error) error { return onThread(niceClass, work) }

// niceClass is the class of Nicely: nice 10, nothing to stop.
func niceClass(tid int) (stop func()) {
	renice(tid)
	return func() {}
}

// onThread runs work on a thread of its own set up by class (the returned
// func undoes what it started), and lets the thread end with it.
func onThread(class func(tid int) (stop func()), work func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see Background
		stop := class(unix.Gettid())
		err := work()
		stop()
		done <- err
	}()
	return <-done
}

// starvedWait: waiting this long for a CPU in one watchdog period means
// the machine is busy.
const (
	watchPeriod = 500 * time.Millisecond
	starvedWait = watchPeriod / 2
)

// background puts thread tid in the background class and starts its
// watchdog; the returned func stops the watchdog.
func background(tid int) (stop func()) {
	// Nice 10 first: the way back from the idle class is then open to
	// whoever may reach nice 10.
	stop = niceClass(tid)
	if !mayRenice() {
		return stop
	}
	if err := unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_IDLE, Nice: 10}, 0); err != nil {
		slog.Debug("background: idle class refused, nice 10", "err", err)
		return stop
	}
	quit := make(chan struct{})
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		watch(tid, quit)
	}()
	return func() { close(quit); <-ended }
}

// watch moves tid to nice 10 once it starves.
func watch(tid int, quit <-chan struct{}) {
	tick := time.NewTicker(watchPeriod)
	defer tick.Stop()
	last, err := waited(tid)
	for err == nil {
		select {
		case <-quit:
			return
		case <-tick.C:
		}
		var now time.Duration
		if now, err = waited(tid); err == nil && now-last >= starvedWait {
			slog.Debug("background: starved in the idle class, nice 10", "waited", now-last)
			renice(tid)
			return
		}
		last = now
	}
	slog.Debug("background: cannot watch, nice 10", "err", err)
	renice(tid)
}

// renice puts tid at nice 10, or leaves it nicer if chpox was started so.
func renice(tid int) {
	nice := int32(10)
	if v, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil {
		nice = max(nice, int32(20-v)) // the raw getpriority returns 20 - nice
	}
	err := unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_NORMAL, Nice: nice}, 0)
	if err != nil {
		slog.Debug("background: nice 10 refused", "err", err)
	}
}

// waited is how long thread tid has been runnable but not running
// (the second field of schedstat).
func waited(tid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/schedstat", tid))
	if err != nil {
		return 0, err
	}
	var run, wait, slices uint64
	if _, err := fmt.Sscan(string(b), &run, &wait, &slices); err != nil {
		return 0, fmt.Errorf("schedstat %q: %w", b, err)
	}
	return time.Duration(wait), nil
}

// mayRenice tells, once, whether a thread may leave the idle class for
// nice 10 again, by trying it on a thread of its own: the kernel asks for
// an RLIMIT_NICE of at least 20 - 10 or CAP_SYS_NICE in the first user
// namespace (capget shows the capability inside a user namespace too, where
// it does not count for this).
func mayRenice() bool {
	reniceOnce.Do(func() {
		reniceOK = onThread(niceClass, func() error {
			tid := unix.Gettid()
			if err := unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_IDLE, Nice: 10}, 0); err != nil {
				return err
			}
			return unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_NORMAL, Nice: 10}, 0)
		}) == nil
	})
	return reniceOK
}

var (
	reniceOnce sync.Once
	reniceOK   bool
)
