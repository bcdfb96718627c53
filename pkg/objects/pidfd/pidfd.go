// Package pidfd checkpoints pidfds (pidfd_open(2), clone's CLONE_PIDFD).
//
// A pidfd refers to a process, not to a number: fdinfo shows its pid
// ("Pid:"), or -1 once the process has exited and been reaped. One to a
// process of the checkpoint is opened again on the restored process (the
// PID is the same); one to a process outside it is refused, since after a
// restore that number may be any process. One whose process was reaped is
// made on a short-lived child of chpox that exits and is reaped at once:
// it then polls readable (POLLIN|POLLHUP) and pidfd_send_signal fails with
// ESRCH, as before.
package pidfd

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/procinfo"
)

// Flags of pidfd_open(2) as they show in the file's flags.
const (
	pidfdNonblock = unix.O_NONBLOCK // PIDFD_NONBLOCK, include/uapi/linux/pidfd.h
	pidfdThread   = unix.O_EXCL     // PIDFD_THREAD, include/uapi/linux/pidfd.h
)

// Describe returns the process the pidfd with fdinfo info refers to: a PID
// or TID of the tree, or -1 for a reaped one. inTree tells the PIDs and
// TIDs being dumped.
func Describe(info string, flags int, inTree func(pid int) bool) (int, error) {
	pid := 0
	found := false
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(line, "Pid:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				return 0, fmt.Errorf("pidfd fdinfo %q: %w", line, err)
			}
			pid, found = n, true
		}
	}
	switch {
	case !found:
		return 0, fmt.Errorf("pidfd fdinfo has no Pid line")
	case pid == 0:
		return 0, fmt.Errorf("a pidfd of a process in another PID namespace: %w", procinfo.ErrUnsupported)
	case pid == -1:
		return -1, nil
	case !inTree(pid):
		return 0, fmt.Errorf("a pidfd of process %d, which is not in the checkpoint (after a restore its number may be another process): dump that process with it: %w", pid, procinfo.ErrUnsupported)
	}
	return pid, nil
}

// Create opens the pidfd in chpox: on the restored process pid (which
// exists), or on a child that is gone for -1. flags are the file's saved
// flags (O_NONBLOCK is PIDFD_NONBLOCK, O_EXCL PIDFD_THREAD).
func Create(pid, flags int) (*os.File, error) {
	if pid == -1 {
		return reaped(flags)
	}
	fd, err := unix.PidfdOpen(pid, flags&(pidfdNonblock|pidfdThread))
	if err != nil {
		return nil, fmt.Errorf("pidfd of process %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	return os.NewFile(uintptr(fd), "pidfd"), nil
}

// reaped returns a pidfd of a process that has exited and been reaped.
func reaped(flags int) (*os.File, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	pidfd := -1
	attr := &syscall.ProcAttr{Sys: &syscall.SysProcAttr{PidFD: &pidfd}}
	// "chpox __exit" is no command: the CLI exits at once; nothing runs.
	p, err := os.StartProcess(exe, []string{exe, "__pidfd-gone"}, &os.ProcAttr{Sys: attr.Sys})
	if err != nil {
		return nil, fmt.Errorf("pidfd of a reaped process: start a stand-in: %w", err)
	}
	p.Kill()
	if _, err := p.Wait(); err != nil {
		// A reaper of chpox's own (PID 1 of a restore namespace) may have
		// reaped it first: gone is all that counts.
		if e := unix.PidfdSendSignal(pidfd, 0, nil, 0); e != unix.ESRCH {
			unix.Close(pidfd)
			return nil, fmt.Errorf("pidfd of a reaped process: %w", err)
		}
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	if flags&pidfdNonblock != 0 {
		if err := unix.SetNonblock(pidfd, true); err != nil {
			f.Close()
			return nil, os.NewSyscallError("fcntl(F_SETFL)", err)
		}
	}
	return f, nil
}
