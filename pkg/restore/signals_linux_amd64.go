package restore

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/ptrace"
)

// restoreSignals sets the process-wide signal state: actions, then the
// shared pending signals (after stray ones are drained). Per-thread state
// is in threadState, masks in finish.
func (x *target) restoreSignals(p *format.Process) error {
	for _, sa := range p.Sigactions {
		if sa.Signal == int(unix.SIGTRAP) {
			continue // set late, see lateTrap
		}
		x.resetScratch()
		at, err := x.put(u64s(sa.Handler, sa.Flags, sa.Restorer, sa.Mask))
		if err != nil {
			return err
		}
		if _, err := x.call(fmt.Sprintf("rt_sigaction(%d)", sa.Signal), unix.SYS_RT_SIGACTION, uint64(sa.Signal), at, 0, 8); err != nil {
			return err
		}
	}
	if err := x.drainSignals(); err != nil {
		return err
	}
	for _, si := range p.SharedPending {
		if timerSignal(p, si) || isTrap(si) {
			continue // the timer queues it again (armTimers); a trap comes late (lateTrap)
		}
		if err := x.queue(unix.SYS_RT_SIGQUEUEINFO, x.pid(), si); err != nil {
			return err
		}
	}
	return nil
}

// queue re-queues one pending signal with its siginfo: process-wide
// (rt_sigqueueinfo, from the main thread) or to the calling thread. Signals stay blocked
// until the final mask is set, so nothing is delivered early.
func (x *target) queue(nr uint64, tgid int, si []byte) error {
	x.resetScratch()
	at, err := x.put(si)
	if err != nil {
		return err
	}
	sig := uint64(binary.LittleEndian.Uint32(si))
	if nr == unix.SYS_RT_TGSIGQUEUEINFO {
		// To the calling thread itself: the kernel lets only a thread
		// queue a signal with kill/tgkill-style source info to itself
		// (kernel/signal.c, do_rt_tgsigqueueinfo).
		_, err = x.call("rt_tgsigqueueinfo", nr, uint64(tgid), uint64(x.pid()), sig, at)
	} else {
		_, err = x.call("rt_sigqueueinfo", nr, uint64(tgid), sig, at)
	}
	return err
}

func isTrap(si []byte) bool { return binary.LittleEndian.Uint32(si) == uint32(unix.SIGTRAP) }

// lateTrap sets the SIGTRAP action and queues pending SIGTRAPs once no
// injected call runs into the stub's int3 any more. Each int3 raises a
// SIGTRAP that the kernel forces through (kernel/signal.c,
// force_sig_info_to_task): blocked, it is unblocked; blocked or ignored,
// its action is reset to SIG_DFL. A handler set earlier would be lost, and
// a pending SIGTRAP would be taken for the int3's (and swallowed). These
// calls run under PTRACE_SYSCALL to their syscall-exit stop instead, with
// SIGTRAP blocked again in every thread, so it stays pending.
func (x *target) lateTrap(p *format.Process) error {
	var sa *format.Sigaction
	for i := range p.Sigactions {
		if p.Sigactions[i].Signal == int(unix.SIGTRAP) {
			sa = &p.Sigactions[i]
		}
	}
	type late struct {
		t  *target
		nr uint64
		si []byte
	}
	var queue []late
	for _, si := range p.SharedPending {
		if isTrap(si) {
			queue = append(queue, late{x, unix.SYS_RT_SIGQUEUEINFO, si})
		}
	}
	for i, t := range x.allThreads() {
		for _, si := range p.Threads[i].Pending {
			if isTrap(si) {
				queue = append(queue, late{t, unix.SYS_RT_TGSIGQUEUEINFO, si})
			}
		}
	}
	if sa == nil && len(queue) == 0 {
		return nil
	}
	for _, t := range x.allThreads() {
		if err := t.t.SetSigMask(ptrace.AllSignals); err != nil {
			return err
		}
	}
	x.resetScratch()
	if sa != nil {
		at, err := x.put(u64s(sa.Handler, sa.Flags, sa.Restorer, sa.Mask))
		if err != nil {
			return err
		}
		if _, err := x.t.SyscallLast(unix.SYS_RT_SIGACTION, uint64(unix.SIGTRAP), at, 0, 8); err != nil {
			return fmt.Errorf("injected rt_sigaction(SIGTRAP): %w", err)
		}
	}
	for _, q := range queue {
		at, err := x.put(q.si)
		if err != nil {
			return err
		}
		var args []uint64
		if q.nr == unix.SYS_RT_TGSIGQUEUEINFO {
			args = []uint64{uint64(x.pid()), uint64(q.t.pid()), uint64(unix.SIGTRAP), at}
		} else {
			args = []uint64{uint64(x.pid()), uint64(unix.SIGTRAP), at}
		}
		if _, err := q.t.t.SyscallLast(q.nr, args...); err != nil {
			return fmt.Errorf("thread %d: injected queue of a pending SIGTRAP: %w", q.t.pid(), err)
		}
	}
	return nil
}

// finish removes the scratch area and loads every thread's final
// registers and signal mask; the process stays stopped until the whole tree
// is ready.
func (x *target) finish(p *format.Process) error {
	if err := x.lateTrap(p); err != nil {
		return err
	}
	if _, err := x.t.SyscallLast(unix.SYS_MUNMAP, x.scratch, scratchSize); err != nil {
		return fmt.Errorf("injected munmap(scratch): %w", err)
	}
	for i, t := range x.allThreads() {
		th := p.Threads[i]
		if err := t.t.SetXState(th.XSave); err != nil {
			return fmt.Errorf("thread %d: the CPU here lacks state the image has: %w", th.TID, err)
		}
		regs := ptrace.FromFormat(th.Regs)
		restartSyscall(&regs)
		if err := t.t.SetRegs(&regs); err != nil {
			return err
		}
		if err := t.t.SetSigMask(th.SigMask); err != nil {
			return err
		}
		t.t.KeepSigMask()
	}
	return nil
}

// Kernel-internal syscall return codes (include/linux/errno.h).
const (
	errRestartSys          = 512
	errRestartNoIntr       = 513
	errRestartNoHand       = 514
	errRestartRestartBlock = 516
)

// restartSyscall does what the kernel does when a system call interrupted
// by a stop returns to user space with no signal handler to run
// (arch/x86/kernel/signal.c, arch_do_signal_or_restart): the call is made
// again. Calls that the kernel resumes through restart_block (state that
// lives in the kernel and is gone) are made again with their original
// arguments where that is safe: absolute sleeps and futex waits resume
// exactly, relative ones wait their whole time again (never less), and
// glibc's sleep(3) passes the remaining time back in as the request. Any
// other such call returns EINTR, as after a signal. chpox does this itself
// because the final stop need not pass through that kernel path.
func restartSyscall(r *unix.PtraceRegs) {
	if int64(r.Orig_rax) < 0 {
		return
	}
	switch -int64(r.Rax) {
	case errRestartSys, errRestartNoIntr, errRestartNoHand:
		r.Rax = r.Orig_rax
		r.Rip -= 2
	case errRestartRestartBlock:
		switch r.Orig_rax {
		case unix.SYS_NANOSLEEP, unix.SYS_CLOCK_NANOSLEEP, unix.SYS_FUTEX, unix.SYS_POLL:
			r.Rax = r.Orig_rax
			r.Rip -= 2
		default:
			r.Rax = ^uint64(unix.EINTR) + 1 // -EINTR
		}
	}
	r.Orig_rax = ^uint64(0)
}

// drainSignals discards signals the process got while it was being built
// (SIGCHLD from a child made a zombie, for one): only the image's pending
// signals may be pending when it runs.
func (x *target) drainSignals() error {
	x.resetScratch()
	at, err := x.put(u64s(ptrace.AllSignals, 0, 0)) // sigset, then a zero timespec
	if err != nil {
		return err
	}
	for i := 0; i < 1024; i++ {
		_, err := x.t.Syscall(unix.SYS_RT_SIGTIMEDWAIT, at, 0, at+8, 8)
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil {
			return fmt.Errorf("injected rt_sigtimedwait: %w", err)
		}
	}
	return fmt.Errorf("signals keep arriving while the process is built")
}

// becomeZombie ends a process that was a zombie at the checkpoint the way
// it ended then, so that its restored parent reaps the same status.
func (x *target) becomeZombie(p *format.Process) error {
	x.resetScratch()
	if name, err := x.cstring(p.Comm); err == nil {
		x.call("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, name)
	}
	ws := unix.WaitStatus(p.WaitStatus)
	if !ws.Signaled() {
		return x.t.Exit(0, unix.SYS_EXIT_GROUP, uint64(ws.ExitStatus()))
	}
	sig := ws.Signal()
	// No core file, and no crash report through a core_pattern pipe, for
	// a death that happened before the checkpoint.
	unix.Prlimit(x.pid(), unix.RLIMIT_CORE, &unix.Rlimit{}, nil)
	if _, err := x.call("prctl(PR_SET_DUMPABLE)", unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, 0); err != nil {
		return err
	}
	// SIGKILL and SIGSTOP always have the default action and rt_sigaction
	// refuses them with EINVAL (kernel/signal.c, do_sigaction): a child
	// killed with kill -9 is the most common zombie there is.
	if sig != unix.SIGKILL && sig != unix.SIGSTOP {
		at, err := x.put(u64s(0, 0, 0, 0)) // SIG_DFL
		if err != nil {
			return err
		}
		if _, err := x.call("rt_sigaction", unix.SYS_RT_SIGACTION, uint64(sig), at, 0, 8); err != nil {
			return err
		}
	}
	if err := x.t.SetSigMask(0); err != nil {
		return err
	}
	x.t.KeepSigMask()
	return x.t.Exit(int(sig), 0)
}
