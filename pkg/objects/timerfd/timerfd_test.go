package timerfd

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

func mkTimer(t *testing.T, clock, flags int, value, interval time.Duration) int {
	t.Helper()
	fd, err := unix.TimerfdCreate(clock, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	it := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(value)), Interval: unix.NsecToTimespec(int64(interval))}
	if err := unix.TimerfdSettime(fd, flags, &it, nil); err != nil {
		t.Fatal(err)
	}
	return fd
}

// TestDescribeArm: a periodic timer with unread expirations and an absolute
// realtime one are read (here, through a copy of chpox's own fd) and made
// again with the same clock, ticks, interval and time left.
func TestDescribeArm(t *testing.T) {
	per := mkTimer(t, unix.CLOCK_MONOTONIC, 0, 10*time.Millisecond, 10*time.Millisecond)
	at := time.Now().Add(time.Hour)
	abs := mkTimer(t, unix.CLOCK_REALTIME, unix.TFD_TIMER_ABSTIME|unix.TFD_TIMER_CANCEL_ON_SET, time.Duration(at.UnixNano()), 0)
	time.Sleep(35 * time.Millisecond)

	d, err := Describe(os.Getpid(), per)
	if err != nil {
		t.Fatal(err)
	}
	if d.Clock != unix.CLOCK_MONOTONIC || d.Ticks < 3 || d.IntervalNS != int64(10*time.Millisecond) || d.ValueNS <= 0 || d.ValueNS > d.IntervalNS || d.AbsNS != 0 {
		t.Errorf("periodic timer read as %+v", d)
	}
	a, err := Describe(os.Getpid(), abs)
	if err != nil {
		t.Fatal(err)
	}
	if a.Flags != format.TFDTimerAbstime|format.TFDTimerCancelOnSet || a.AbsNS < at.UnixNano()-int64(time.Millisecond) || a.AbsNS > at.UnixNano()+int64(time.Millisecond) {
		t.Errorf("absolute timer read as %+v, want it at %d", a, at.UnixNano())
	}

	n, err := New(*d, unix.O_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer n.File.Close()
	if err := n.Arm(); err != nil {
		t.Fatal(err)
	}
	var it unix.ItimerSpec
	unix.TimerfdGettime(int(n.File.Fd()), &it)
	b := make([]byte, 8)
	if _, err := unix.Read(int(n.File.Fd()), b); err != nil {
		t.Fatal(err)
	}
	if got := uint64(b[0]) | uint64(b[1])<<8; got < d.Ticks || it.Interval.Nano() != d.IntervalNS {
		t.Errorf("made again: %d ticks, interval %d; want at least %d, %d", got, it.Interval.Nano(), d.Ticks, d.IntervalNS)
	}

	// An absolute periodic timer whose instant passed counts what it missed.
	past := format.Timerfd{Clock: unix.CLOCK_REALTIME, Flags: format.TFDTimerAbstime, ValueNS: 1, IntervalNS: int64(100 * time.Millisecond),
		AbsNS: time.Now().Add(-450 * time.Millisecond).UnixNano(), Ticks: 2}
	m, err := New(past, unix.O_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer m.File.Close()
	if err := m.Arm(); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Read(int(m.File.Fd()), b); err != nil {
		t.Fatal(err)
	}
	if got := b[0]; got != 2+5 {
		t.Errorf("absolute timer 450 ms past, every 100 ms, 2 unread: %d ticks, want 7", got)
	}
}
