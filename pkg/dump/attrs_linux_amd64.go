package dump

import (
	"errors"
	"fmt"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/ptrace"
	"github.com/chpox/chpox/pkg/seccomp"
)

const (
	ioprioWhoProcess  = 1      // IOPRIO_WHO_PROCESS (include/uapi/linux/ioprio.h)
	membarrierGetRegs = 1 << 9 // MEMBARRIER_CMD_GET_REGISTRATIONS (kernel 6.3)
	capSysAdmin       = 21
)

// threadAttrs reads what chpox can ask the kernel about another thread
// directly: scheduling, CPU affinity and I/O priority. Timer slack and the
// parent-death signal are asked by injection (queryThread).
func threadAttrs(pid, tid int) (*format.ThreadAttrs, error) {
	sa, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return nil, fmt.Errorf("thread %d: sched_getattr: %w", tid, err)
	}
	a := &format.ThreadAttrs{Policy: sa.Policy, Flags: sa.Flags, Nice: sa.Nice, Priority: sa.Priority,
		Runtime: sa.Runtime, Deadline: sa.Deadline, Period: sa.Period, UtilMin: sa.Util_min, UtilMax: sa.Util_max}
	// A fair thread's sched_runtime is its time slice (kernel 6.12,
	// EEVDF): custom if the thread asked for one, else the machine's
	// default, which the kernel does not tell apart. One equal to chpox's
	// own (the default, unless chpox was given another) is recorded as 0,
	// the default, so restore gives the default of its machine.
	if fair(sa.Policy) {
		if own, err := unix.SchedGetAttr(0, 0); err == nil && own.Runtime == sa.Runtime {
			a.Runtime = 0
		}
	}
	if a.Nice, err = procinfo.ThreadNice(pid, tid); err != nil {
		return nil, err
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return nil, fmt.Errorf("thread %d: sched_getaffinity: %w", tid, err)
	}
	n := len(set)
	for n > 0 && set[n-1] == 0 {
		n--
	}
	for _, w := range set[:n] {
		a.Affinity = append(a.Affinity, uint64(w))
	}
	prio, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if errno != 0 {
		return nil, fmt.Errorf("thread %d: ioprio_get: %w", tid, errno)
	}
	a.IOPrio = uint32(prio)
	return a, nil
}

// collectSeccomp reads every thread's seccomp filters into p.Seccomp, one
// record per distinct filter chain link, and guards every later injected
// call of each thread with its own filters: a call the sandbox would not
// let through is never made; the dump is refused, naming it, and the
// process runs on as it was.
func collectSeccomp(m *Member, p *format.Process) error {
	type link struct {
		parent int
		flags  uint64
		prog   string
	}
	ids := map[link]int{}
	p.Seccomp = nil
	for i, t := range m.Threads() {
		th := &p.Threads[i]
		t.Guard = nil
		mode, _, err := procinfo.ThreadSeccomp(m.Info.PID, t.PID)
		if err != nil {
			return err
		}
		th.SeccompMode, th.SeccompFilter = mode, 0
		switch mode {
		case format.SeccompModeNone:
			continue
		case format.SeccompModeStrict:
			// Strict mode lets no call chpox injects through: the thread's
			// sandbox is suspended for this tracer while it injects
			// (PTRACE_O_SUSPEND_SECCOMP, root only). The kernel drops it with
			// the tracer link, at detach or chpox's death, so the sandbox
			// is never lost. Without it the calls are checked and refused.
			if err := t.SuspendSeccomp(true); err != nil {
				t.Guard = strictGuard(m.Info.PID, t.PID, err)
			}
			continue
		case format.SeccompModeFilter:
		default:
			return fmt.Errorf("process %d: thread %d: unknown seccomp mode %d: %w", m.Info.PID, t.PID, mode, ErrUnsupported)
		}
		progs, flags, err := t.SeccompFilters()
		if err != nil {
			if unix.Geteuid() != 0 {
				err = fmt.Errorf("%w (reading seccomp filters needs CAP_SYS_ADMIN: dump as root)", err)
			}
			return fmt.Errorf("process %d: thread %d runs under seccomp: %w: %w", m.Info.PID, t.PID, err, ErrUnsupported)
		}
		if len(progs) == 0 {
			return fmt.Errorf("process %d: thread %d is in seccomp filter mode but the kernel lists no filter: %w", m.Info.PID, t.PID, ErrUnsupported)
		}
		parent := 0
		for j := range progs { // oldest first
			if listener, err := seccomp.NeedsListener(progs[j]); err != nil || listener {
				why := "it hands system calls to a user-space listener (SECCOMP_RET_USER_NOTIF), a descriptor chpox cannot recreate"
				if err != nil {
					why = err.Error()
				}
				return fmt.Errorf("process %d: thread %d: seccomp filter %d of %d: %s: %w", m.Info.PID, t.PID, j+1, len(progs), why, ErrUnsupported)
			}
			k := link{parent, flags[j], string(progs[j])}
			id, ok := ids[k]
			if !ok {
				p.Seccomp = append(p.Seccomp, format.SeccompFilter{ID: len(p.Seccomp) + 1, Parent: parent, Flags: flags[j], Prog: progs[j]})
				id = len(p.Seccomp)
				ids[k] = id
			}
			parent = id
		}
		th.SeccompFilter = parent
		newest := slices.Clone(progs)
		slices.Reverse(newest) // the order the kernel runs them
		t.Guard = filterGuard(m.Info.PID, t.PID, newest)
	}
	if len(p.Seccomp) == 0 {
		return nil
	}
	// Restore installs them again as the process's own ids: the kernel
	// takes a filter only with no_new_privs or CAP_SYS_ADMIN, and restore
	// gives neither where the process had it not.
	if !p.Creds.NoNewPrivs && p.Creds.CapEff&(1<<capSysAdmin) == 0 {
		return fmt.Errorf("process %d runs under a seccomp filter but has neither no_new_privs nor CAP_SYS_ADMIN (it installed the filter with privileges it has since dropped): the kernel would not let the restored process install it again, and restore never grants privilege: %w",
			p.PID, ErrUnsupported)
	}
	return checkInstallable(p)
}

// checkInstallable refuses, at dump time, filters that restore could not
// install again: restore installs each thread's filters as its last
// injected calls, the filters all threads share first (from the main
// thread, with SECCOMP_FILTER_FLAG_TSYNC), and each call must pass the
// filters installed before it.
func checkInstallable(p *format.Process) error {
	var chains [][]int
	for i := range p.Threads {
		chains = append(chains, p.SeccompChain(&p.Threads[i]))
	}
	common := seccomp.CommonPrefix(chains)
	if len(p.Threads) == 1 {
		common = 0
	}
	for i, chain := range chains {
		var under [][]byte
		for j, id := range chain {
			f := p.Seccomp[id-1]
			flags := f.Flags
			if j < common {
				if i > 0 {
					under = append([][]byte{f.Prog}, under...)
					continue // the main thread installs it
				}
				flags |= seccomp.FlagTSync
			}
			if _, _, err := seccomp.Installer(under, flags, 0); err != nil {
				return fmt.Errorf("process %d: thread %d: restore could not install its seccomp filter %d again: %s: %w",
					p.PID, p.Threads[i].TID, j+1, err, ErrUnsupported)
			}
			under = append([][]byte{f.Prog}, under...)
		}
	}
	return nil
}

func filterGuard(pid, tid int, progs [][]byte) func(nr uint64, args []uint64, ip uint64) error {
	return func(nr uint64, args []uint64, ip uint64) error {
		action, err := seccomp.RunChain(progs, seccomp.Call(nr, ip, args...))
		if err != nil {
			return fmt.Errorf("process %d: thread %d: %w: %w", pid, tid, err, ErrUnsupported)
		}
		if !seccomp.Allows(action) {
			return fmt.Errorf("process %d: thread %d runs under a seccomp filter that answers %s to system call %d, which chpox must inject to checkpoint it: %w",
				pid, tid, seccomp.ActionName(action), nr, ErrUnsupported)
		}
		return nil
	}
}

// strictGuard refuses what strict mode would kill the thread for, once
// suspending its sandbox failed (why).
func strictGuard(pid, tid int, why error) func(nr uint64, args []uint64, ip uint64) error {
	hint := ""
	if errors.Is(why, unix.EPERM) {
		hint = " (it needs CAP_SYS_ADMIN: dump as root)"
	}
	return func(nr uint64, _ []uint64, _ uint64) error {
		if seccomp.StrictAllows(nr) {
			return nil
		}
		return fmt.Errorf("process %d: thread %d runs in seccomp strict mode, which kills it on any system call but read, write, exit and sigreturn; chpox must inject others (system call %d) to checkpoint it, and could not suspend the sandbox for itself: %v%s: %w",
			pid, tid, nr, why, hint, ErrUnsupported)
	}
}

// clearGuards forgets the filters of every thread once the injected
// queries are done, and gives back the sandbox of any thread whose
// seccomp was suspended for them.
func clearGuards(ts []*ptrace.Tracee) error {
	var errs []error
	for _, t := range ts {
		t.Guard = nil
		errs = append(errs, t.SuspendSeccomp(false))
	}
	return errors.Join(errs...)
}

func fair(policy uint32) bool {
	return policy == format.SchedOther || policy == format.SchedBatch || policy == format.SchedIdle
}
