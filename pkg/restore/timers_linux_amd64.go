package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/timerfd"
	"github.com/chpox/chpox/pkg/ptrace"
)

// prctl(PR_TIMER_CREATE_RESTORE_IDS) (include/uapi/linux/prctl.h, Linux
// 6.16): while on, timer_create takes the id to create from *timerid
// (kernel/time/posix-timers.c, do_timer_create).
const (
	prTimerCreateRestoreIDs = 77
	prTimerRestoreIDsOff    = 0
	prTimerRestoreIDsOn     = 1
)

const timerAbstime = 1 // TIMER_ABSTIME, include/uapi/linux/time.h

// maxTimerFillers bounds the timers made only to reach an id.
const maxTimerFillers = 1 << 16

// createTimers makes the process's POSIX timers again, unarmed, with their
// ids, clocks and notifications (after the threads: SIGEV_THREAD_ID names
// one). They are armed by armTimers, just before the process runs.
func (x *target) createTimers(p *format.Process) error {
	if len(p.PosixTimers) == 0 {
		return nil
	}
	byID := true
	if _, err := x.call("prctl(PR_TIMER_CREATE_RESTORE_IDS)", unix.SYS_PRCTL, prTimerCreateRestoreIDs, prTimerRestoreIDsOn, 0, 0, 0); err != nil {
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		// Before 6.16 a new process's timers get ids 0, 1, 2 ... in turn
		// (signal_struct.next_posix_timer_id): create in id order and
		// delete the ones that fill gaps.
		byID = false
	}
	timers := slices.Clone(p.PosixTimers)
	if !byID {
		slices.SortFunc(timers, func(a, b format.PosixTimer) int { return a.ID - b.ID })
	}
	var fillers []uint64
	next := 0
	for _, t := range timers {
		if !byID && t.ID-next > maxTimerFillers {
			return fmt.Errorf("posix timer %d: making its id would take %d timers created and deleted (kernel without PR_TIMER_CREATE_RESTORE_IDS)", t.ID, t.ID-next)
		}
		for ; !byID && next < t.ID; next++ {
			id, err := x.timerCreate(format.PosixTimer{ID: next, Clock: format.ClockMonotonic, Notify: format.SigevNone})
			if err != nil {
				return err
			}
			fillers = append(fillers, id)
		}
		id, err := x.timerCreate(t)
		if err != nil {
			return fmt.Errorf("posix timer %d: %w", t.ID, err)
		}
		if id != uint64(t.ID) {
			return fmt.Errorf("posix timer %d came back as %d (kernel without PR_TIMER_CREATE_RESTORE_IDS)", t.ID, id)
		}
		next = t.ID + 1
	}
	for _, id := range fillers {
		if _, err := x.call("timer_delete", unix.SYS_TIMER_DELETE, id); err != nil {
			return err
		}
	}
	if byID {
		_, err := x.call("prctl(PR_TIMER_CREATE_RESTORE_IDS, off)", unix.SYS_PRCTL, prTimerCreateRestoreIDs, prTimerRestoreIDsOff, 0, 0, 0)
		return err
	}
	return nil
}

// timerCreate injects timer_create with t's struct sigevent (x86_64:
// sigev_value, sigev_signo, sigev_notify, then _tid) and t.ID in *timerid.
func (x *target) timerCreate(t format.PosixTimer) (uint64, error) {
	x.resetScratch()
	ev := make([]byte, 64)
	le := binary.LittleEndian
	le.PutUint64(ev, t.Sival)
	le.PutUint32(ev[8:], uint32(t.Signal))
	le.PutUint32(ev[12:], uint32(t.Notify))
	le.PutUint32(ev[16:], uint32(t.TID))
	evAt, err := x.put(ev)
	if err != nil {
		return 0, err
	}
	idAt, err := x.put(u64s(uint64(t.ID)))
	if err != nil {
		return 0, err
	}
	if _, err := x.call(fmt.Sprintf("timer_create(clock %d)", t.Clock), unix.SYS_TIMER_CREATE, uint64(int64(t.Clock)), evAt, idAt); err != nil {
		return 0, err
	}
	b := make([]byte, 4)
	if err := ptrace.ReadMem(x.pid(), idAt, b); err != nil {
		return 0, err
	}
	return uint64(le.Uint32(b)), nil
}

// armTimers sets the interval timers and arms the POSIX timers, the last
// thing before the process's registers: a relative timer gets the time it
// had left (the time in the image does not count), an absolute
// CLOCK_REALTIME one its instant (if that passed, it fires at once, with
// the periods missed as overruns, as the kernel counts them).
func (x *target) armTimers(p *format.Process) error {
	for _, t := range p.ITimers {
		if t.ValueNS == 0 {
			// Expired, its SIGALRM pending (queued again above): it must
			// be armed for the kernel to arm it again when the signal is
			// taken, and expiring now only meets that pending signal.
			t.ValueNS = 1000
		}
		got, err := x.setitimer(t, t.ValueNS)
		if err != nil {
			return err
		}
		// The kernel adds a tick to a CPU-time timer's value
		// (kernel/time/itimer.c, set_cpu_itimer), which getitimer then
		// reports: take it off again, so the program reads what it read
		// before. CPU time does not pass here: the process is stopped.
		if extra := got - t.ValueNS; t.Which != format.ITimerReal && extra > 0 && extra < t.ValueNS {
			if _, err := x.setitimer(t, t.ValueNS-extra); err != nil {
				return err
			}
		}
	}
	for _, t := range p.PosixTimers {
		if t.ValueNS == 0 {
			continue
		}
		flags, value := uint64(0), t.ValueNS
		if t.AbsNS != 0 {
			flags, value = timerAbstime, t.AbsNS
		}
		if t.IntervalNS != 0 && signalPending(p, t.ID) {
			// Its own signal was pending: the kernel queues a timer's
			// signal once and counts further expiries as overruns until
			// it is taken (then rearms). A copy queued by chpox would
			// come on top of the timer's next one, so the timer expires
			// at once instead, to queue its own; on a clock chpox can
			// read, one period before its next expiry, so that that
			// stays where it was.
			flags, value = 0, 1
			if now, ok := clockNow(t.Clock); ok {
				flags, value = timerAbstime, now+t.ValueNS-t.IntervalNS
			}
		}
		x.resetScratch()
		at, err := x.put(u64s(uint64(t.IntervalNS/1e9), uint64(t.IntervalNS%1e9), uint64(value/1e9), uint64(value%1e9)))
		if err != nil {
			return err
		}
		if _, err := x.call(fmt.Sprintf("timer_settime(%d)", t.ID), unix.SYS_TIMER_SETTIME, uint64(t.ID), flags, at, 0); err != nil {
			return err
		}
	}
	return nil
}

// timerSignal tells whether si is the pending signal of one of p's
// periodic POSIX timers, which armTimers makes the timer queue again.
func timerSignal(p *format.Process, si []byte) bool {
	if len(si) < 20 || int32(binary.LittleEndian.Uint32(si[8:])) != siTimer {
		return false
	}
	id := int(int32(binary.LittleEndian.Uint32(si[16:])))
	for _, t := range p.PosixTimers {
		if t.ID == id {
			return t.IntervalNS != 0 && t.ValueNS != 0
		}
	}
	return false
}

const siTimer = -2 // SI_TIMER, include/uapi/asm-generic/siginfo.h

// signalPending tells whether a signal of timer id was pending in p.
func signalPending(p *format.Process, id int) bool {
	for _, si := range p.SharedPending {
		if timerSignalOf(si, id) {
			return true
		}
	}
	for _, th := range p.Threads {
		for _, si := range th.Pending {
			if timerSignalOf(si, id) {
				return true
			}
		}
	}
	return false
}

// timerSignalOf tells whether siginfo si was queued by timer id
// (si_code SI_TIMER at 8, si_timerid at 16).
func timerSignalOf(si []byte, id int) bool {
	le := binary.LittleEndian
	return len(si) >= 20 && int32(le.Uint32(si[8:])) == siTimer && int32(le.Uint32(si[16:])) == int32(id)
}

// clockNow reads a clock that reads the same in chpox as in the process
// and on which an absolute timer behaves as a relative one (it never
// jumps): CLOCK_MONOTONIC and CLOCK_BOOTTIME.
func clockNow(clock int) (int64, bool) {
	switch clock {
	case format.ClockMonotonic:
	case format.ClockBoottime, format.ClockBoottimeAlarm:
		clock = format.ClockBoottime
	default:
		return 0, false
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(int32(clock), &ts); err != nil {
		return 0, false
	}
	return ts.Nano(), true
}

// setitimer arms interval timer t with value ns and returns the value
// getitimer reads back.
func (x *target) setitimer(t format.ITimer, value int64) (int64, error) {
	x.resetScratch()
	// struct itimerval: it_interval, it_value (timevals); a value under a
	// microsecond must not become 0, which disarms.
	usec := func(ns int64) (uint64, uint64) { u := (ns + 999) / 1000; return uint64(u / 1e6), uint64(u % 1e6) }
	is, iu := usec(t.IntervalNS)
	vs, vu := usec(value)
	at, err := x.put(u64s(is, iu, vs, vu))
	if err != nil {
		return 0, err
	}
	if _, err := x.call(fmt.Sprintf("setitimer(%d)", t.Which), unix.SYS_SETITIMER, uint64(t.Which), at, 0); err != nil {
		return 0, err
	}
	if _, err := x.call(fmt.Sprintf("getitimer(%d)", t.Which), unix.SYS_GETITIMER, uint64(t.Which), at); err != nil {
		return 0, err
	}
	b := make([]byte, 32)
	if err := ptrace.ReadMem(x.pid(), at, b); err != nil {
		return 0, err
	}
	le := binary.LittleEndian
	return int64(le.Uint64(b[16:]))*1e9 + int64(le.Uint64(b[24:]))*1e3, nil
}

// timerfd returns chpox's timerfd for the description f names, created
// unarmed on first use; armTimerfds arms them all just before the run.
func (o *objects) timerfd(f format.File) (*timerfd.Timer, error) {
	if f.Timerfd == nil {
		return nil, fmt.Errorf("fd %d: timerfd without its state", f.FD)
	}
	t, err := timerfd.New(*f.Timerfd, f.Flags)
	if err != nil {
		return nil, err
	}
	o.timerfds = append(o.timerfds, t)
	o.descs[f.Desc] = t.File
	return t, nil
}

func (o *objects) armTimerfds() error {
	for _, t := range o.timerfds {
		if err := t.Arm(); err != nil {
			return err
		}
	}
	return nil
}
