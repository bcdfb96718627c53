package procinfo

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/chpox/chpox/pkg/format"
)

// PosixTimers lists the timer_create(2) timers of pid from
// /proc/PID/timers (CONFIG_CHECKPOINT_RESTORE): id, signal and sigev_value,
// notification and its thread, clock. Their times are asked by injected
// timer_gettime (pkg/dump).
func PosixTimers(pid int) ([]format.PosixTimer, error) {
	b, err := os.ReadFile(procPath(pid, "timers"))
	if err != nil {
		return nil, fmt.Errorf("pid %d: read timers: %w", pid, err)
	}
	ts, err := ParseTimers(string(b))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	return ts, nil
}

// ParseTimers reads the records of /proc/PID/timers (fs/proc/base.c,
// show_timer):
//
//	ID: 2
//	signal: 10/0000000000001234
//	notify: signal/tid.29839
//	ClockID: 7
func ParseTimers(s string) ([]format.PosixTimer, error) {
	var out []format.PosixTimer
	var t *format.PosixTimer
	for _, line := range strings.Split(s, "\n") {
		k, v, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		bad := func(err error) error { return fmt.Errorf("timers line %q: %w", line, err) }
		if k == "ID" {
			id, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return nil, bad(err)
			}
			out = append(out, format.PosixTimer{ID: int(id)})
			t = &out[len(out)-1]
			continue
		}
		if t == nil {
			return nil, bad(fmt.Errorf("before the first ID"))
		}
		switch k {
		case "signal":
			sig, val, _ := strings.Cut(v, "/")
			n, err := strconv.Atoi(sig)
			if err != nil {
				return nil, bad(err)
			}
			if t.Sival, err = strconv.ParseUint(val, 16, 64); err != nil {
				return nil, bad(err)
			}
			t.Signal = n
		case "notify":
			how, who, _ := strings.Cut(v, "/")
			switch how {
			case "signal":
				t.Notify = format.SigevSignal
			case "none":
				t.Notify = format.SigevNone
			case "thread":
				t.Notify = format.SigevThread
			default:
				return nil, bad(fmt.Errorf("unknown notification"))
			}
			kind, id, _ := strings.Cut(who, ".")
			if kind == "tid" {
				t.Notify |= format.SigevThreadID
				n, err := strconv.Atoi(id)
				if err != nil {
					return nil, bad(err)
				}
				t.TID = n
			}
		case "ClockID":
			n, err := strconv.ParseInt(v, 10, 32)
			if err != nil {
				return nil, bad(err)
			}
			t.Clock = int(n)
		}
	}
	return out, nil
}
