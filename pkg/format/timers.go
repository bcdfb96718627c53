package format

// Timers (version 3): setitimer(2) timers, timer_create(2) timers and
// timerfd state. Times are nanoseconds. A timer's Value is the time left
// until it next expires, as the kernel reported it at the dump (0: not
// armed); Interval its period (0: one-shot). Restore arms relative timers
// with Value, so the time the image spent on disk does not count; a timer
// set for an absolute CLOCK_REALTIME instant (AbsNS) is armed for that
// instant again, so it fires on time, or at once if the instant passed.

// ITimer kinds (include/uapi/linux/time.h).
const (
	ITimerReal    = 0 // ITIMER_REAL: wall time, SIGALRM
	ITimerVirtual = 1 // ITIMER_VIRTUAL: user CPU time, SIGVTALRM
	ITimerProf    = 2 // ITIMER_PROF: user+system CPU time, SIGPROF
)

// ITimer is one armed interval timer of a process (getitimer(2)). Value 0
// with an Interval is an ITIMER_REAL that expired with its SIGALRM still
// pending: the kernel arms it again when the signal is taken.
type ITimer struct {
	Which      int   `json:"which"`
	ValueNS    int64 `json:"value_ns"`
	IntervalNS int64 `json:"interval_ns,omitempty"`
}

// sigev_notify values (include/uapi/asm-generic/siginfo.h).
const (
	SigevSignal   = 0
	SigevNone     = 1
	SigevThread   = 2
	SigevThreadID = 4
)

// PosixTimer is one timer_create(2) timer of a process, with the id the
// program knows it by.
type PosixTimer struct {
	ID    int `json:"id"`    // timer_t value, 0 to 2^31 - 1
	Clock int `json:"clock"` // clockid_t as created (CLOCK_* or a CPU clock of a pid/tid)
	// Notify is sigev_notify as the kernel keeps it: SigevSignal, SigevNone,
	// SigevThread (a raw timer_create; glibc's SIGEV_THREAD is
	// SigevThreadID to its helper thread), optionally | SigevThreadID.
	Notify int    `json:"notify"`
	Signal int    `json:"signal,omitempty"` // sigev_signo
	Sival  uint64 `json:"sival,omitempty"`  // sigev_value
	TID    int    `json:"tid,omitempty"`    // SigevThreadID: the thread signalled
	// Value, Interval: timer_gettime(2) at the dump.
	ValueNS    int64 `json:"value_ns,omitempty"`
	IntervalNS int64 `json:"interval_ns,omitempty"`
	// AbsNS is set for a timer armed with TIMER_ABSTIME on CLOCK_REALTIME:
	// the CLOCK_REALTIME instant it expires at.
	AbsNS int64 `json:"abs_ns,omitempty"`
	// Overrun is timer_getoverrun(2) at the dump (informational: no call
	// sets it, so it reads 0 after restore until the next expiry).
	Overrun int `json:"overrun,omitempty"`
}

// timerfd settime flags (include/uapi/linux/timerfd.h).
const (
	TFDTimerAbstime     = 1
	TFDTimerCancelOnSet = 2
)

// Timerfd is the state of a timerfd_create(2) descriptor (File.Timerfd).
type Timerfd struct {
	Clock      int   `json:"clock"`           // CLOCK_REALTIME, MONOTONIC, BOOTTIME, *_ALARM
	Flags      int   `json:"flags,omitempty"` // settime flags: TFDTimerAbstime, TFDTimerCancelOnSet
	ValueNS    int64 `json:"value_ns,omitempty"`
	IntervalNS int64 `json:"interval_ns,omitempty"`
	// AbsNS: for TFD_TIMER_ABSTIME on CLOCK_REALTIME(_ALARM), the
	// CLOCK_REALTIME instant of the next expiry.
	AbsNS int64 `json:"abs_ns,omitempty"`
	// Ticks are expirations not read yet.
	Ticks uint64 `json:"ticks,omitempty"`
}

// Clock ids used by the timers' rules (include/uapi/linux/time.h).
const (
	ClockRealtime      = 0
	ClockMonotonic     = 1
	ClockProcessCPU    = 2
	ClockThreadCPU     = 3
	ClockBoottime      = 7
	ClockRealtimeAlarm = 8
	ClockBoottimeAlarm = 9
)

func (img *Image) validateTimers(p *Process) error {
	seen := map[int]bool{}
	for _, t := range p.ITimers {
		if t.Which < ITimerReal || t.Which > ITimerProf || seen[t.Which] {
			return corrupt("pid %d: interval timer %d unknown or twice", p.PID, t.Which)
		}
		seen[t.Which] = true
		if t.ValueNS < 0 || t.IntervalNS < 0 || t.ValueNS == 0 && t.IntervalNS == 0 {
			return corrupt("pid %d: interval timer %d: value %d, interval %d", p.PID, t.Which, t.ValueNS, t.IntervalNS)
		}
	}
	tids := map[int]bool{}
	for _, t := range p.Threads {
		tids[t.TID] = true
	}
	ids := map[int]bool{}
	for _, t := range p.PosixTimers {
		if t.ID < 0 || ids[t.ID] {
			return corrupt("pid %d: posix timer id %d negative or twice", p.PID, t.ID)
		}
		ids[t.ID] = true
		switch t.Notify &^ SigevThreadID {
		case SigevSignal, SigevNone, SigevThread:
		default:
			return corrupt("pid %d: posix timer %d: notify %d", p.PID, t.ID, t.Notify)
		}
		if t.Signal < 0 || t.Signal > 64 || t.ValueNS < 0 || t.IntervalNS < 0 || t.AbsNS < 0 {
			return corrupt("pid %d: posix timer %d: signal %d, times %d/%d/%d", p.PID, t.ID, t.Signal, t.ValueNS, t.IntervalNS, t.AbsNS)
		}
		if (t.Notify&SigevThreadID != 0) != (t.TID != 0) || t.TID != 0 && !tids[t.TID] {
			return corrupt("pid %d: posix timer %d: thread %d is not one of the process's", p.PID, t.ID, t.TID)
		}
		if t.AbsNS != 0 && (t.Clock != ClockRealtime || t.ValueNS == 0) {
			return corrupt("pid %d: posix timer %d: absolute time on clock %d or unarmed", p.PID, t.ID, t.Clock)
		}
	}
	return nil
}

func validateTimerfd(f File) error {
	t := f.Timerfd
	if (f.Kind == FileTimerfd) != (t != nil) {
		return corrupt("fd %d (%s): timerfd state present or missing", f.FD, f.Kind)
	}
	if t == nil {
		return nil
	}
	switch t.Clock {
	case ClockRealtime, ClockMonotonic, ClockBoottime, ClockRealtimeAlarm, ClockBoottimeAlarm:
	default:
		return corrupt("fd %d: timerfd clock %d", f.FD, t.Clock)
	}
	if t.Flags&^(TFDTimerAbstime|TFDTimerCancelOnSet) != 0 || t.ValueNS < 0 || t.IntervalNS < 0 || t.AbsNS < 0 {
		return corrupt("fd %d: timerfd flags %#x, times %d/%d/%d", f.FD, t.Flags, t.ValueNS, t.IntervalNS, t.AbsNS)
	}
	realtime := t.Clock == ClockRealtime || t.Clock == ClockRealtimeAlarm
	if t.AbsNS != 0 && (t.Flags&TFDTimerAbstime == 0 || !realtime || t.ValueNS == 0) {
		return corrupt("fd %d: timerfd absolute time without TFD_TIMER_ABSTIME on a realtime clock", f.FD)
	}
	return nil
}
