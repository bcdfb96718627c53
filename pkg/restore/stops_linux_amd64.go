package restore

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/ptrace"
)

// stopSignal is the signal that stopped p (SIGSTOP for images that
// predate StopSignal).
func stopSignal(p *format.Process) unix.Signal {
	if p.StopSignal == 0 {
		return unix.SIGSTOP
	}
	return unix.Signal(p.StopSignal)
}

// stopAgain puts a process that was in a job-control stop, its registers
// and masks final, into the group-stop of the same signal, so that its
// parent's waitpid(WUNTRACED) reports the same WSTOPSIG. Every other
// signal is blocked meanwhile: a pending one must wait for SIGCONT, as it
// did. The kernel ignores SIGTSTP, SIGTTIN and SIGTTOU in an orphaned
// process group (kernel/signal.c, get_signal); such a group is refused
// before the signal is sent, as the process would run instead.
func (x *target) stopAgain(p *format.Process) error {
	sig := stopSignal(p)
	if sig != unix.SIGSTOP {
		pgid, err := unix.Getpgid(x.pid()) // the image's, or chpox's (Decisions: process group)
		if err != nil {
			return err
		}
		orphaned, err := orphanedGroup(pgid)
		if err != nil {
			return err
		}
		if orphaned {
			return fmt.Errorf("it was stopped by %s, which the kernel ignores in an orphaned process group, as group %d is here (no member has a parent in another group of its session): restore it from a shell in the session, or stop it with SIGSTOP before the dump",
				unix.SignalName(sig), pgid)
		}
	}
	mask := p.Threads[0].SigMask
	if err := x.t.SetSigMask(ptrace.AllSignals &^ (1 << (sig - 1))); err != nil {
		return err
	}
	var others []*ptrace.Tracee
	for _, t := range x.threads {
		others = append(others, t.t)
	}
	if err := x.t.GroupStop(sig, others); err != nil {
		return fmt.Errorf("stop it again with %s: %w", unix.SignalName(sig), err)
	}
	if err := x.t.SetSigMask(mask); err != nil {
		return err
	}
	x.t.KeepSigMask()
	return nil
}

// afterChildStops runs in a parent whose stopped children were put back
// into their group-stops: a stop the parent had collected before the dump
// is collected again (wait4 WUNTRACED), and the SIGCHLD each stop sent is
// taken away, with the SIGCHLDs of the image queued again: nothing is
// pending that was not.
func (x *target) afterChildStops(p *format.Process, kids []*node) error {
	if len(kids) == 0 {
		return nil
	}
	for _, c := range kids {
		if !c.p.StopWaited {
			continue
		}
		got, err := x.call(fmt.Sprintf("wait4(%d, WUNTRACED)", c.p.PID), unix.SYS_WAIT4, uint64(c.p.PID), 0, unix.WUNTRACED|unix.WNOHANG, 0)
		if err != nil {
			return fmt.Errorf("collect the stop of child %d: %w", c.p.PID, err)
		}
		if int(got) != c.p.PID {
			return fmt.Errorf("collect the stop of child %d: wait4 returned %d", c.p.PID, got)
		}
	}
	x.resetScratch()
	at, err := x.put(u64s(1<<(unix.SIGCHLD-1), 0, 0)) // sigset, then a zero timespec
	if err != nil {
		return err
	}
	for i := 0; ; i++ {
		if _, err := x.t.Syscall(unix.SYS_RT_SIGTIMEDWAIT, at, 0, at+8, 8); err == unix.EAGAIN {
			break
		} else if err != nil {
			return fmt.Errorf("injected rt_sigtimedwait(SIGCHLD): %w", err)
		}
		if i == 64 {
			return fmt.Errorf("SIGCHLD keeps arriving while the process is built")
		}
	}
	for _, si := range p.SharedPending {
		if unix.Signal(si[0]) == unix.SIGCHLD {
			if err := x.queue(unix.SYS_RT_SIGQUEUEINFO, x.pid(), si); err != nil {
				return err
			}
		}
	}
	for _, si := range p.Threads[0].Pending {
		if unix.Signal(si[0]) == unix.SIGCHLD {
			if err := x.queue(unix.SYS_RT_TGSIGQUEUEINFO, x.pid(), si); err != nil {
				return err
			}
		}
	}
	return nil
}

// orphanedGroup tells whether process group pgid is orphaned as the kernel
// decides it (kernel/exit.c, will_become_orphaned_pgrp): no live member has
// a parent in another group of the same session, init not counting.
func orphanedGroup(pgid int) (bool, error) {
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return false, err
	}
	type ids struct {
		state            string
		ppid, pgid, sess int
	}
	read := func(path string) (ids, bool) {
		b, err := os.ReadFile(path)
		if err != nil {
			return ids{}, false
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			return ids{}, false
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 4 {
			return ids{}, false
		}
		ppid, _ := strconv.Atoi(f[1])
		pg, _ := strconv.Atoi(f[2])
		sess, _ := strconv.Atoi(f[3])
		return ids{f[0], ppid, pg, sess}, true
	}
	for _, path := range stats {
		m, ok := read(path)
		if !ok || m.pgid != pgid || m.state == "Z" || m.state == "X" || m.ppid <= 1 {
			continue
		}
		parent, ok := read(fmt.Sprintf("/proc/%d/stat", m.ppid))
		if ok && parent.pgid != pgid && parent.sess == m.sess {
			return false, nil
		}
	}
	return true, nil
}
