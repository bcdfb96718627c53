package procinfo

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/chpox/chpox/pkg/format"
)

// ThreadSeccomp is the seccomp mode of thread tid of pid
// (format.SeccompModeNone, Strict or Filter) and its number of filters,
// from /proc/PID/task/TID/status.
func ThreadSeccomp(pid, tid int) (mode, filters int, err error) {
	b, err := os.ReadFile(procPath(pid, fmt.Sprintf("task/%d/status", tid)))
	if err != nil {
		return 0, 0, fmt.Errorf("thread %d: %w", tid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, _ := strings.Cut(line, ":")
		switch key {
		case "Seccomp":
			mode, _ = strconv.Atoi(strings.TrimSpace(val))
		case "Seccomp_filters":
			filters, _ = strconv.Atoi(strings.TrimSpace(val))
		}
	}
	return mode, filters, nil
}

// Attrs reads the process attributes /proc shows: oom_score_adj, and the
// audit loginuid and session id where the kernel has audit support. The
// rest (prctl values) only the process itself can tell.
func Attrs(pid int) (*format.ProcessAttrs, error) {
	a := &format.ProcessAttrs{}
	b, err := os.ReadFile(procPath(pid, "oom_score_adj"))
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	if a.OOMScoreAdj, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
		return nil, fmt.Errorf("pid %d: oom_score_adj %q: %w", pid, b, err)
	}
	read := func(name string) *uint32 {
		b, err := os.ReadFile(procPath(pid, name))
		if err != nil {
			return nil // no CONFIG_AUDIT
		}
		v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return nil
		}
		u := uint32(v)
		return &u
	}
	a.LoginUID, a.SessionID = read("loginuid"), read("sessionid")
	return a, nil
}

// ThreadNice is the nice value of thread tid of pid (/proc/PID/task/TID/stat,
// field 19). Unlike sched_getattr it is there for real-time threads too,
// which keep it for when they return to SCHED_OTHER.
func ThreadNice(pid, tid int) (int32, error) {
	b, err := os.ReadFile(procPath(pid, fmt.Sprintf("task/%d/stat", tid)))
	if err != nil {
		return 0, fmt.Errorf("thread %d: %w", tid, err)
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 17 {
		return 0, fmt.Errorf("thread %d: short stat %q", tid, b)
	}
	n, err := strconv.ParseInt(f[16], 10, 32)
	return int32(n), err
}
