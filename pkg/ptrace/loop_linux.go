package ptrace

import (
	"os"

	"golang.org/x/sys/unix"
)

// The requests below serve a tracing loop that waits for its tracees
// itself (`chpox run`), rather than through a Tracee.

// Cont resumes a stopped tracee, delivering sig (0: none).
func Cont(pid int, sig unix.Signal) error {
	return os.NewSyscallError("ptrace(PTRACE_CONT)", unix.PtraceCont(pid, int(sig)))
}

// Listen leaves a tracee in its group-stop, yet lets SIGCONT wake it.
func Listen(pid int) error {
	return ptraceRaw(unix.PTRACE_LISTEN, pid, 0, nil)
}

// DetachWith detaches, delivering sig.
func DetachWith(pid int, sig unix.Signal) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(pid), 0, uintptr(sig), 0, 0)
	if e != 0 {
		return os.NewSyscallError("ptrace(PTRACE_DETACH)", e)
	}
	return nil
}

// SeizeWith attaches to pid with PTRACE_SEIZE and the given options,
// without stopping it.
func SeizeWith(pid int, opts int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(pid), 0, uintptr(opts), 0, 0)
	if e != 0 {
		return os.NewSyscallError("ptrace(PTRACE_SEIZE)", e)
	}
	return nil
}
