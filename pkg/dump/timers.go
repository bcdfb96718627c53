package dump

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/timerfd"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/ptrace"
)

// timerQueryOff is where in the scratch area the timer calls write.
const timerQueryOff = 8192

// timerTries bounds the reads of a timer state that a timer expiring
// in between keeps making inconsistent.
const timerTries = 5

// timerfds reads the state of every timerfd of the tree.
func (pl *plan) timerfds() error {
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind != format.FileTimerfd {
				continue
			}
			t, err := timerfd.Describe(p.Info.PID, f.FD)
			if err != nil {
				return fmt.Errorf("pid %d: fd %d: timerfd: %w", p.Info.PID, f.FD, err)
			}
			f.Timerfd = t
		}
	}
	return nil
}

// timerSnap is one reading of a process's timers: value and interval of
// each interval timer (0-2) and each POSIX timer, in ns.
type timerSnap struct {
	itimers [3][2]int64
	posix   [][2]int64
	posixAt []time.Time // just after each timer_gettime: its time left is as of then
	overrun []int
	at      time.Time // just after the last call
}

// queryTimers asks the process (main thread, in the trampoline) for its
// interval timers (getitimer) and the times of its POSIX timers
// (timer_gettime, timer_getoverrun; their ids and notifications come from
// /proc/PID/timers), and takes the pending signals again after them
// (repend). The timers run while the process is frozen: a timer that
// expired between the reading of the signals and of the timers, and
// queued a signal, would be lost or doubled. The process takes no signal
// while frozen, so the signals only grow: when they are the same before
// and after the timers were read, nothing queued a signal meanwhile, and
// an expiry then (its signal already pending, or none) is in the times
// read. Else again, a few times.
func queryTimers(t *ptrace.Tracee, p *format.Process, scratch uint64, repend func() error) error {
	posix, err := procinfo.PosixTimers(t.PID)
	if err != nil {
		return err
	}
	if err := timersSupported(p, posix, false); err != nil {
		return err
	}
	began := time.Now()
	var snap timerSnap
	before := pendingOfProcess(p)
	for try := 0; ; try++ {
		if try == timerTries {
			return fmt.Errorf("pid %d: timers expire faster than they can be read: %w", t.PID, ErrUnsupported)
		}
		if snap, err = readTimers(t, posix, scratch); err != nil {
			return err
		}
		if err := repend(); err != nil {
			return err
		}
		after := pendingOfProcess(p)
		if after == before {
			break
		}
		before = after
	}
	p.ITimers = nil
	for which, v := range snap.itimers {
		// Time left 0 with an interval: ITIMER_REAL expired and its
		// SIGALRM is pending; the kernel arms it again when the signal is
		// taken (kernel/signal.c, dequeue_signal).
		if v[0] != 0 || v[1] != 0 {
			p.ITimers = append(p.ITimers, format.ITimer{Which: which, ValueNS: v[0], IntervalNS: v[1]})
		}
	}
	for i := range posix {
		posix[i].ValueNS, posix[i].IntervalNS = snap.posix[i][0], snap.posix[i][1]
		posix[i].Overrun = snap.overrun[i]
	}
	if err := timersSupported(p, posix, true); err != nil {
		return err
	}
	if err := absoluteTimers(p, posix, snap.posixAt); err != nil {
		return err
	}
	p.PosixTimers = posix
	slog.Debug("timers read", "pid", t.PID, "posix timers", len(posix), "took", time.Since(began))
	return nil
}

// pendingOfProcess is every pending signal of p, for comparison.
func pendingOfProcess(p *format.Process) string {
	var b strings.Builder
	for _, si := range p.SharedPending {
		b.Write(si)
	}
	for _, th := range p.Threads {
		b.WriteString("|")
		for _, si := range th.Pending {
			b.Write(si)
		}
	}
	return b.String()
}

func readTimers(t *ptrace.Tracee, posix []format.PosixTimer, scratch uint64) (timerSnap, error) {
	var s timerSnap
	at := scratch + timerQueryOff
	le := binary.LittleEndian
	b := make([]byte, 32)
	for which := 0; which < 3; which++ {
		if _, err := t.Syscall(unix.SYS_GETITIMER, uint64(which), at); err != nil {
			return s, fmt.Errorf("pid %d: injected getitimer(%d): %w", t.PID, which, err)
		}
		if err := ptrace.ReadMem(t.PID, at, b); err != nil {
			return s, err
		}
		// struct itimerval: it_interval, it_value (timevals)
		tv := func(o int) int64 { return int64(le.Uint64(b[o:]))*1e9 + int64(le.Uint64(b[o+8:]))*1e3 }
		s.itimers[which] = [2]int64{tv(16), tv(0)}
	}
	for _, pt := range posix {
		if _, err := t.Syscall(unix.SYS_TIMER_GETTIME, uint64(pt.ID), at); err != nil {
			return s, fmt.Errorf("pid %d: injected timer_gettime(%d): %w", t.PID, pt.ID, err)
		}
		if err := ptrace.ReadMem(t.PID, at, b); err != nil {
			return s, err
		}
		// struct itimerspec: it_interval, it_value (timespecs)
		ts := func(o int) int64 { return int64(le.Uint64(b[o:]))*1e9 + int64(le.Uint64(b[o+8:])) }
		s.posix = append(s.posix, [2]int64{ts(16), ts(0)})
		s.posixAt = append(s.posixAt, time.Now())
		ov, err := t.Syscall(unix.SYS_TIMER_GETOVERRUN, uint64(pt.ID))
		if err != nil {
			return s, fmt.Errorf("pid %d: injected timer_getoverrun(%d): %w", t.PID, pt.ID, err)
		}
		s.overrun = append(s.overrun, int(int32(ov)))
	}
	s.at = time.Now()
	return s, nil
}

// timersSupported refuses the POSIX timers restore cannot make again:
// before their times are read (armed false), a thread CPU-time timer whose
// thread is unknown; after (armed true), an armed timer on a clock where an
// absolute timer cannot be told from a relative one.
func timersSupported(p *format.Process, posix []format.PosixTimer, armed bool) error {
	tids := map[int]bool{}
	for _, th := range p.Threads {
		tids[th.TID] = true
	}
	for _, t := range posix {
		switch {
		case !armed && t.Notify&format.SigevThreadID != 0 && !tids[t.TID]:
			// The kernel takes SIGEV_THREAD_ID only for a live thread of
			// the process (kernel/time/posix-timers.c, good_sigevent).
			return fmt.Errorf("pid %d: posix timer %d signals thread %d, which has exited: it cannot be created again: %w",
				p.PID, t.ID, t.TID, ErrUnsupported)
		case !armed && t.Clock == format.ClockThreadCPU && len(p.Threads) > 1:
			// It measures the thread that created it, which /proc does
			// not name.
			return fmt.Errorf("pid %d: posix timer %d on CLOCK_THREAD_CPUTIME_ID in a process of %d threads: the thread whose time it counts is not known: %w",
				p.PID, t.ID, len(p.Threads), ErrUnsupported)
		case !armed || t.ValueNS == 0:
		case t.Clock < 0, t.Clock == format.ClockRealtime, t.Clock == format.ClockMonotonic, t.Clock == format.ClockProcessCPU,
			t.Clock == format.ClockThreadCPU, t.Clock == format.ClockBoottime, t.Clock == format.ClockBoottimeAlarm:
		default:
			return fmt.Errorf("pid %d: posix timer %d, armed on clock %d: whether it was set for an absolute time cannot be told on this clock (CLOCK_REALTIME, MONOTONIC, BOOTTIME, BOOTTIME_ALARM and CPU-time clocks can be kept): %w",
				p.PID, t.ID, t.Clock, ErrUnsupported)
		}
	}
	return nil
}

// absoluteTimers finds the armed CLOCK_REALTIME timers that were set for
// an absolute time (TIMER_ABSTIME): the kernel keeps them on its realtime
// clock base, relative ones on the monotonic base (kernel/time/posix-timers.c,
// common_hrtimer_arm), and /proc/timer_list shows each base's timers with
// their time left. Two timers the list cannot show stay relative: a
// SIGEV_NONE one (never queued) and a periodic one whose signal is pending
// (queued again only when the signal is taken). Any other timer must be
// found on exactly one base, or the dump is refused.
//
// ats are the moments each timer's time left was read: under load the
// calls of a dump of many timers spread over tens of milliseconds, and a
// timer's place in the list is told by its time left then.
func absoluteTimers(p *format.Process, posix []format.PosixTimer, ats []time.Time) error {
	pid := p.PID
	need := false
	for _, t := range posix {
		need = need || t.Clock == format.ClockRealtime && t.ValueNS != 0 && t.Notify&^format.SigevThreadID != format.SigevNone
	}
	if !need {
		return nil
	}
	var rt, other []time.Duration
	var start time.Time
	read := func() error {
		var err error
		start = time.Now()
		if rt, other, err = hrtimerLeft(); err != nil {
			return fmt.Errorf("pid %d: armed CLOCK_REALTIME posix timer: telling absolute from relative needs /proc/timer_list: %w (%w)", pid, err, ErrUnsupported)
		}
		return nil
	}
	if err := read(); err != nil {
		return err
	}
	for i := range posix {
		t := &posix[i]
		if t.Clock != format.ClockRealtime || t.ValueNS == 0 || t.Notify&^format.SigevThreadID == format.SigevNone {
			continue
		}
		at := ats[i]
		for try := 0; ; try++ {
			tol := 2*time.Millisecond + time.Since(at)
			left := time.Duration(t.ValueNS) - start.Sub(at)
			inRT, inOther := near(rt, left, tol), near(other, left, tol)
			slog.Debug("posix timer on CLOCK_REALTIME", "pid", pid, "id", t.ID, "left", left, "tolerance", tol, "absolute", inRT, "relative", inOther)
			switch {
			case inRT && inOther:
				return fmt.Errorf("pid %d: posix timer %d: another timer expires at the same moment, absolute or relative cannot be told: dump again: %w", pid, t.ID, ErrUnsupported)
			case inRT:
				t.AbsNS = time.Now().UnixNano() - int64(time.Since(at)) + t.ValueNS
			case !inOther && !timerSignalPending(p, t.ID):
				if try < 2 {
					if err := read(); err != nil {
						return err
					}
					continue
				}
				return fmt.Errorf("pid %d: posix timer %d, armed on CLOCK_REALTIME, is not in /proc/timer_list: absolute or relative cannot be told: dump again: %w", pid, t.ID, ErrUnsupported)
			}
			break
		}
	}
	return nil
}

// timerSignalPending tells whether a signal of POSIX timer id is pending
// (siginfo: si_code SI_TIMER, -2, at 8; si_timerid at 16).
func timerSignalPending(p *format.Process, id int) bool {
	is := func(si []byte) bool {
		return int32(binary.LittleEndian.Uint32(si[8:])) == -2 && int32(binary.LittleEndian.Uint32(si[16:])) == int32(id)
	}
	for _, si := range p.SharedPending {
		if is(si) {
			return true
		}
	}
	for _, th := range p.Threads {
		for _, si := range th.Pending {
			if is(si) {
				return true
			}
		}
	}
	return false
}

func near(lefts []time.Duration, want, tol time.Duration) bool {
	for _, l := range lefts {
		if l > want-tol && l < want+tol {
			return true
		}
	}
	return false
}

// hrtimerLeft lists the time left of every posix timer hrtimer queued on a
// CLOCK_REALTIME base and on the other bases, from /proc/timer_list
// (kernel/time/timer_list.c: "clock N:" ... ".index: 1" ...
// " #0: <...>, posix_timer_fn, S:01" / " # expires at A-B nsecs [in X to Y nsecs]").
func hrtimerLeft() (rt, other []time.Duration, err error) {
	f, err := os.Open("/proc/timer_list")
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	realBase, posixFn := false, false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, ".index:"):
			// enum hrtimer_base_type: 1 HRTIMER_BASE_REALTIME, 5 its _SOFT twin
			n := strings.TrimSpace(strings.TrimPrefix(line, ".index:"))
			realBase = n == "1" || n == "5"
		case strings.HasPrefix(line, "#") && strings.Contains(line, ">, "):
			posixFn = strings.Contains(line, ", posix_timer_fn,")
		case strings.HasPrefix(line, "# expires at") && posixFn:
			_, rest, _ := strings.Cut(line, "[in ")
			n, _, _ := strings.Cut(rest, " ")
			ns, err := strconv.ParseInt(n, 10, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("timer_list line %q: %w", line, err)
			}
			if realBase {
				rt = append(rt, time.Duration(ns))
			} else {
				other = append(other, time.Duration(ns))
			}
			posixFn = false
		}
	}
	return rt, other, sc.Err()
}
