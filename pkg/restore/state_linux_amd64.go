package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/ptrace"
)

// sigaltstack flags (include/uapi/linux/signal.h).
const (
	ssOnStack = 1
	ssDisable = 2
)

func u64s(vals ...uint64) []byte {
	b := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

// setMM restores the mm fields, auxv and the exe link in one
// prctl(PR_SET_MM, PR_SET_MM_MAP): the single-field calls need
// CAP_SYS_RESOURCE, which restorers often lack.
func (x *target) setMM(p *format.Process) error {
	x.resetScratch()
	exeFD := ^uint64(0)
	if p.Exe != "" && !strings.HasSuffix(p.Exe, " (deleted)") {
		path, err := x.cstring(p.Exe)
		if err != nil {
			return err
		}
		if exeFD, err = x.call("openat "+p.Exe, unix.SYS_OPENAT, atFDCWD, path, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
		defer x.call("close", unix.SYS_CLOSE, exeFD)
	}
	auxv, err := x.put(p.Auxv)
	if err != nil {
		return err
	}
	m := p.MM
	b := u64s(m.StartCode, m.EndCode, m.StartData, m.EndData, m.StartBrk, m.Brk, m.StartStack,
		m.ArgStart, m.ArgEnd, m.EnvStart, m.EnvEnd, auxv)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Auxv)))
	b = binary.LittleEndian.AppendUint32(b, uint32(exeFD))
	at, err := x.put(b)
	if err != nil {
		return err
	}
	_, err = x.call("prctl(PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, at, uint64(len(b)), 0)
	return err
}

// credsDiffer tells whether the image ran with other ids than chpox has now.
func credsDiffer(c format.Creds) bool {
	r, e, s := unix.Getresuid()
	rg, eg, sg := unix.Getresgid()
	return c.UID != [4]uint32{uint32(r), uint32(e), uint32(s), uint32(e)} ||
		c.GID != [4]uint32{uint32(rg), uint32(eg), uint32(sg), uint32(eg)} ||
		!sameGroups(c.Groups)
}

// sameGroups compares the image's supplementary groups with chpox's: the
// process must not keep chpox's groups when its ids happen to match.
func sameGroups(want []uint32) bool {
	have, err := unix.Getgroups()
	if err != nil || len(have) != len(want) {
		return false
	}
	set := map[uint32]bool{}
	for _, g := range have {
		set[uint32(g)] = true
	}
	for _, g := range want {
		if !set[g] {
			return false
		}
	}
	return true
}

// setFSCreds makes file opens happen with the image's filesystem ids and
// groups, so no fd is opened with more rights than the process had.
func (x *target) setFSCreds(c format.Creds) error {
	if !credsDiffer(c) {
		return nil
	}
	x.resetScratch()
	groups := make([]byte, 0, 4*len(c.Groups))
	for _, g := range c.Groups {
		groups = binary.LittleEndian.AppendUint32(groups, g)
	}
	at := uint64(0)
	if len(groups) > 0 {
		var err error
		if at, err = x.put(groups); err != nil {
			return err
		}
	}
	if _, err := x.call("setgroups", unix.SYS_SETGROUPS, uint64(len(c.Groups)), at); err != nil {
		return err
	}
	if _, err := x.call("setfsgid", unix.SYS_SETFSGID, uint64(c.GID[3])); err != nil {
		return err
	}
	_, err := x.call("setfsuid", unix.SYS_SETFSUID, uint64(c.UID[3]))
	return err
}

// setThreadCreds switches one thread to the image's ids for good.
func (x *target) setThreadCreds(c format.Creds) error {
	if _, err := x.call("setresgid", unix.SYS_SETRESGID, uint64(c.GID[0]), uint64(c.GID[1]), uint64(c.GID[2])); err != nil {
		return err
	}
	if _, err := x.call("setresuid", unix.SYS_SETRESUID, uint64(c.UID[0]), uint64(c.UID[1]), uint64(c.UID[2])); err != nil {
		return err
	}
	x.call("setfsgid", unix.SYS_SETFSGID, uint64(c.GID[3]))
	x.call("setfsuid", unix.SYS_SETFSUID, uint64(c.UID[3]))
	return nil
}

// tmpIn stands in for a file that was deleted while open: an unlinked
// file (O_TMPFILE) in the same directory, or in $TMPDIR, that gets the saved
// content and that the process reopens through /proc/<chpox>/fd.
func tmpIn(dir string, mode uint32) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, mode)
	if err != nil {
		fd, err = unix.Open(os.TempDir(), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, mode)
	}
	if err != nil {
		return nil, os.NewSyscallError("open(O_TMPFILE)", err)
	}
	return os.NewFile(uintptr(fd), "deleted"), nil
}

// restoreFiles closes what the loader had and gives the process every fd
// of the image at its number. A description shared with fds seen before
// (in this process: dup3; in another: chpox's copy, through pidfd_getfd)
// is shared again, so offset and flags stay common.
func (x *target) restoreFiles(p *format.Process, o *objects) error {
	if _, err := x.call("close_range", unix.SYS_CLOSE_RANGE, 0, ^uint64(0)>>32, 0); err != nil {
		return err
	}
	here := map[int]int{} // desc -> fd in this process
	x.freeFD = 0
	for _, f := range p.Files {
		x.freeFD = max(x.freeFD, uint64(f.FD)+1)
	}
	// epoll instances last: the fds they watch must exist first.
	for _, epollPass := range []bool{false, true} {
		for _, f := range p.Files {
			if (f.Kind == format.FileEpoll) != epollPass {
				continue
			}
			if err := x.installFile(f, o, here); err != nil {
				return fmt.Errorf("fd %d (%s): %w", f.FD, f.Path, err)
			}
			here[f.Desc] = f.FD
		}
	}
	if x.supPidfd != 0 {
		x.call("close", unix.SYS_CLOSE, x.supPidfd)
	}
	return nil
}

func (x *target) installFile(f format.File, o *objects, here map[int]int) error {
	cloexec := uint64(f.Flags) & unix.O_CLOEXEC
	if fd, ok := here[f.Desc]; ok {
		_, err := x.call("dup3", unix.SYS_DUP3, uint64(fd), uint64(f.FD), cloexec)
		return err
	}
	sup := o.descs[f.Desc]
	if sup == nil && f.Kind == format.FilePipe {
		var err error
		if sup, err = o.pipeEnd(f); err != nil {
			return err
		}
	}
	if sup != nil {
		return x.fromChpox(sup, f.FD, cloexec)
	}
	var err error
	switch f.Kind {
	case format.FileEventfd:
		err = x.makeEventfd(f)
	case format.FileEpoll:
		err = x.makeEpoll(f)
	default:
		err = x.openFile(f, o)
	}
	if err != nil {
		return err
	}
	return o.keep(f.Desc, x.pid(), f.FD)
}

const efdSemaphore = 1 // EFD_SEMAPHORE

// makeEventfd creates an eventfd with the saved counter (written, as the
// initial value of eventfd2 is only 32 bits).
func (x *target) makeEventfd(f format.File) error {
	flags := uint64(f.Flags) & (unix.O_NONBLOCK | unix.O_CLOEXEC)
	if f.Semaphore {
		flags |= efdSemaphore
	}
	fd, err := x.call("eventfd2", unix.SYS_EVENTFD2, 0, flags)
	if err != nil {
		return err
	}
	if f.Count > 0 {
		x.resetScratch()
		at, err := x.put(u64s(f.Count))
		if err != nil {
			return err
		}
		if _, err := x.call("write(eventfd)", unix.SYS_WRITE, fd, at, 8); err != nil {
			return err
		}
	}
	return x.moveFD(fd, f.FD, uint64(f.Flags)&unix.O_CLOEXEC)
}

// makeEpoll creates an epoll instance watching the saved fds with their
// events and data.
func (x *target) makeEpoll(f format.File) error {
	fd, err := x.call("epoll_create1", unix.SYS_EPOLL_CREATE1, uint64(f.Flags)&unix.O_CLOEXEC)
	if err != nil {
		return err
	}
	if err := x.moveFD(fd, f.FD, uint64(f.Flags)&unix.O_CLOEXEC); err != nil {
		return err
	}
	for _, w := range f.Watches {
		x.resetScratch()
		ev := binary.LittleEndian.AppendUint32(nil, w.Events) // struct epoll_event is packed
		ev = binary.LittleEndian.AppendUint64(ev, w.Data)
		at, err := x.put(ev)
		if err != nil {
			return err
		}
		if _, err := x.call(fmt.Sprintf("epoll_ctl(ADD %d)", w.FD), unix.SYS_EPOLL_CTL, uint64(f.FD), unix.EPOLL_CTL_ADD, uint64(w.FD), at); err != nil {
			return err
		}
	}
	return nil
}

// fromChpox installs chpox's file sup at fd: pidfd_getfd(2) on chpox
// gives the process the very same open file description.
func (x *target) fromChpox(sup *os.File, fd int, cloexec uint64) error {
	if x.supPidfd == 0 {
		pfd, err := x.call("pidfd_open(chpox)", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
		if err != nil {
			return err
		}
		// Above every fd of the image, where installing them cannot hit it.
		high, err := x.call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, pfd, unix.F_DUPFD_CLOEXEC, x.freeFD)
		x.call("close", unix.SYS_CLOSE, pfd)
		if err != nil {
			return err
		}
		x.supPidfd = high
	}
	tmp, err := x.call("pidfd_getfd", unix.SYS_PIDFD_GETFD, x.supPidfd, uint64(sup.Fd()), 0)
	if err != nil {
		return err
	}
	return x.moveFD(tmp, fd, cloexec)
}

// moveFD puts the file at fd tmp at number fd with the given close-on-exec.
func (x *target) moveFD(tmp uint64, fd int, cloexec uint64) error {
	if tmp == uint64(fd) {
		flag := uint64(0)
		if cloexec != 0 {
			flag = unix.FD_CLOEXEC
		}
		_, err := x.call("fcntl(F_SETFD)", unix.SYS_FCNTL, tmp, unix.F_SETFD, flag)
		return err
	}
	if _, err := x.call("dup3", unix.SYS_DUP3, tmp, uint64(fd), cloexec); err != nil {
		return err
	}
	_, err := x.call("close", unix.SYS_CLOSE, tmp)
	return err
}

// openFile opens a file by path (a deleted one through chpox's stand-in)
// with the saved flags at the saved offset.
func (x *target) openFile(f format.File, o *objects) error {
	path := f.Path
	if t := o.deleted[f.Desc]; t != nil {
		path = fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), t.Fd())
	}
	x.resetScratch()
	at, err := x.cstring(path)
	if err != nil {
		return err
	}
	flags := uint64(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC)
	if f.Kind == format.FileChar {
		flags |= unix.O_NOCTTY
	}
	fd, err := x.call("openat", unix.SYS_OPENAT, atFDCWD, at, flags, 0)
	if err != nil {
		return err
	}
	if f.Kind != format.FileChar && f.Pos != 0 {
		if _, err := x.call("lseek", unix.SYS_LSEEK, fd, uint64(f.Pos), unix.SEEK_SET); err != nil {
			return err
		}
	}
	return x.moveFD(fd, f.FD, flags&unix.O_CLOEXEC)
}

// restoreMisc restores the per-process state that injected calls set.
func (x *target) restoreMisc(p *format.Process) error {
	x.resetScratch()
	cwd, err := x.cstring(p.Cwd)
	if err != nil {
		return err
	}
	if _, err := x.call("chdir "+p.Cwd, unix.SYS_CHDIR, cwd); err != nil {
		return err
	}
	x.call("umask", unix.SYS_UMASK, uint64(p.Umask))
	if _, err := x.call("personality", unix.SYS_PERSONALITY, uint64(p.Personality)); err != nil {
		return err
	}
	for _, r := range p.Rlimits {
		l := unix.Rlimit{Cur: r.Cur, Max: r.Max}
		if err := unix.Prlimit(x.pid(), r.Resource, &l, nil); err != nil {
			return fmt.Errorf("set resource limit %d: %w", r.Resource, err)
		}
	}
	if err := x.restoreSignals(p); err != nil {
		return err
	}
	name, err := x.cstring(p.Comm)
	if err != nil {
		return err
	}
	_, err = x.call("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, name)
	return err
}

func (x *target) restoreSignals(p *format.Process) error {
	for _, sa := range p.Sigactions {
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
		if err := x.queue(unix.SYS_RT_SIGQUEUEINFO, 0, si); err != nil {
			return err
		}
	}
	return nil
}

// queue re-queues one pending signal with its siginfo. Signals stay blocked
// until the final mask is set, so nothing is delivered early.
func (x *target) queue(nr uint64, tid uint64, si []byte) error {
	x.resetScratch()
	at, err := x.put(si)
	if err != nil {
		return err
	}
	sig := uint64(binary.LittleEndian.Uint32(si))
	pid := uint64(x.pid())
	if nr == unix.SYS_RT_TGSIGQUEUEINFO {
		_, err = x.call("rt_tgsigqueueinfo", nr, pid, tid, sig, at)
	} else {
		_, err = x.call("rt_sigqueueinfo", nr, pid, sig, at)
	}
	return err
}

// finish removes the scratch area and loads every thread's final
// registers and signal mask; the process stays stopped until the whole tree
// is ready.
func (x *target) finish(p *format.Process) error {
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
	at, err := x.put(u64s(0, 0, 0, 0)) // SIG_DFL
	if err != nil {
		return err
	}
	if _, err := x.call("rt_sigaction", unix.SYS_RT_SIGACTION, uint64(sig), at, 0, 8); err != nil {
		return err
	}
	if err := x.t.SetSigMask(0); err != nil {
		return err
	}
	x.t.KeepSigMask()
	return x.t.Exit(int(sig), 0)
}
