// Package timerfd checkpoints timerfd_create(2) descriptors: clock, settime
// flags, time left, interval and the expirations not read yet.
//
// Dump asks chpox's pidfd_getfd copy (the very same timer) with
// timerfd_gettime(2), which also counts the periods a periodic timer
// passed since its last expiry (fs/timerfd.c, do_timerfd_gettime: what a
// read would see, so nothing the program can tell changes), and takes the
// clock, flags and unread ticks from fdinfo. Restore creates the timer in
// chpox, unarmed; Arm sets it and its unread ticks just before the
// processes run, so the time spent building them does not count.
package timerfd

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
)

// Describe returns the state of the timerfd that pid holds at fd.
func Describe(pid, fd int) (*format.Timerfd, error) {
	cp, err := objects.Dup(pid, fd)
	if err != nil {
		return nil, err
	}
	defer cp.Close()
	// The timer runs while the process is frozen: an expiry between the
	// two reads would be counted in the ticks and again in the time left.
	// Read until the time left did not wrap (periodic) or reach 0
	// (one-shot) across the fdinfo read.
	for try := 0; try < 5; try++ {
		var a, b unix.ItimerSpec
		if err := unix.TimerfdGettime(int(cp.Fd()), &a); err != nil {
			return nil, os.NewSyscallError("timerfd_gettime", err)
		}
		t, err := fdinfo(pid, fd)
		if err != nil {
			return nil, err
		}
		if err := unix.TimerfdGettime(int(cp.Fd()), &b); err != nil {
			return nil, os.NewSyscallError("timerfd_gettime", err)
		}
		now := time.Now().UnixNano()
		va, vb := a.Value.Nano(), b.Value.Nano()
		if vb > va || va != 0 && vb == 0 {
			continue
		}
		t.ValueNS, t.IntervalNS = vb, b.Interval.Nano()
		if t.ValueNS != 0 && t.Flags&format.TFDTimerAbstime != 0 && realtime(t.Clock) {
			t.AbsNS = now + t.ValueNS
		}
		return t, nil
	}
	return nil, fmt.Errorf("timerfd expires faster than it can be read")
}

func realtime(clock int) bool {
	return clock == format.ClockRealtime || clock == format.ClockRealtimeAlarm
}

// fdinfo reads the clock, unread ticks and settime flags
// (fs/timerfd.c, timerfd_show).
func fdinfo(pid, fd int) (*format.Timerfd, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return nil, fmt.Errorf("read fdinfo: %w", err)
	}
	t := &format.Timerfd{}
	seen := 0
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		var err error
		switch k {
		case "clockid":
			t.Clock, err = strconv.Atoi(v)
			seen++
		case "ticks":
			t.Ticks, err = strconv.ParseUint(v, 10, 64)
			seen++
		case "settime flags":
			var f int64
			f, err = strconv.ParseInt(v, 8, 32)
			t.Flags = int(f)
			seen++
		}
		if err != nil {
			return nil, fmt.Errorf("timerfd fdinfo %q: %w", line, err)
		}
	}
	if seen != 3 {
		return nil, fmt.Errorf("timerfd fdinfo lacks clockid, ticks or settime flags: %q", b)
	}
	return t, nil
}

// Timer is a timerfd created again, in chpox, not armed yet.
type Timer struct {
	format.Timerfd
	File *os.File
}

// New creates the timer of t with the status flags (O_NONBLOCK) of its
// open file description.
func New(t format.Timerfd, flags int) (*Timer, error) {
	cflags := unix.TFD_CLOEXEC
	if flags&unix.O_NONBLOCK != 0 {
		cflags |= unix.TFD_NONBLOCK
	}
	fd, err := unix.TimerfdCreate(t.Clock, cflags)
	if err != nil {
		return nil, os.NewSyscallError(fmt.Sprintf("timerfd_create(clock %d)", t.Clock), err)
	}
	return &Timer{Timerfd: t, File: os.NewFile(uintptr(fd), "timerfd")}, nil
}

// Arm sets the timer and its unread expirations. A relative timer gets the
// time it had left; an absolute CLOCK_REALTIME one its instant, with the
// periods that passed while it was in the image counted as expirations
// (the kernel would have counted them), so it is neither early nor lost.
// An absolute timer on another clock gets the time it had left: those
// clocks start again at each boot.
func (t *Timer) Arm() error {
	fd := int(t.File.Fd())
	flags := 0
	ticks := t.Ticks
	var it unix.ItimerSpec
	it.Interval = unix.NsecToTimespec(t.IntervalNS)
	switch {
	case t.AbsNS != 0:
		flags = t.Flags // TFD_TIMER_ABSTIME, and CANCEL_ON_SET if it was set
		at := t.AbsNS
		if now := time.Now().UnixNano(); at <= now {
			if t.IntervalNS == 0 {
				ticks++
				at = 0
			} else {
				missed := (now-at)/t.IntervalNS + 1
				ticks += uint64(missed)
				at += missed * t.IntervalNS
			}
		}
		if at == 0 { // a one-shot that expired in the image: disarmed, one tick
			break
		}
		it.Value = unix.NsecToTimespec(at)
	case t.ValueNS != 0:
		it.Value = unix.NsecToTimespec(t.ValueNS)
	}
	if it.Value.Nano() != 0 || flags != 0 {
		if it.Value.Nano() == 0 {
			it.Interval = unix.Timespec{} // an unarmed timer keeps only its flags
		}
		if err := unix.TimerfdSettime(fd, flags, &it, nil); err != nil {
			return os.NewSyscallError("timerfd_settime", err)
		}
	}
	if ticks > 0 {
		if err := setTicks(fd, ticks); err != nil {
			return err
		}
	}
	return nil
}
