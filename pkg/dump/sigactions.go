package dump

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// actionsToQuery tells which signal actions of the (frozen) process pid
// are worth an injected rt_sigaction: those with a handler or SIG_IGN
// (SigCgt and SigIgn of /proc/PID/status) and SIGCHLD, whose SA_NOCLDSTOP
// and SA_NOCLDWAIT act even at SIG_DFL. Any other signal is at SIG_DFL,
// where the kernel never looks at the flags, mask or restorer, so the
// image records it as plain SIG_DFL. Each injected call costs two ptrace
// stops while the job is frozen: a C or Python program has a handful of
// handlers, and asking for all 62 took most of a live dump's final freeze
// on a busy machine. Bit n-1 stands for signal n; SIGKILL and SIGSTOP
// are never in it (their action cannot change).
func actionsToQuery(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("pid %d: signal actions: %w", pid, err)
	}
	set := uint64(1) << (unix.SIGCHLD - 1)
	for _, key := range []string{"SigCgt:", "SigIgn:"} {
		m, err := statusMask(string(b), key)
		if err != nil {
			return 0, fmt.Errorf("pid %d: signal actions: %w", pid, err)
		}
		set |= m
	}
	return set &^ (1<<(unix.SIGKILL-1) | 1<<(unix.SIGSTOP-1)), nil
}

// statusMask parses the hexadecimal signal set of one /proc/PID/status line.
func statusMask(status, key string) (uint64, error) {
	v, ok := statusValue(status, key)
	if !ok {
		return 0, fmt.Errorf("no %s line in /proc/PID/status", key)
	}
	m, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %s %q: %w", key, v, err)
	}
	return m, nil
}
