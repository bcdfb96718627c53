package dump

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/ptrace"
	"github.com/chpox/chpox/pkg/vmadump"
)

const (
	nsig            = 64
	sigactSize      = 32 // struct kernel_sigaction on x86_64
	scratchSize     = 4 * 4096
	prGetTIDAddress = 40 // PR_GET_TID_ADDRESS
	threadQueryOff  = (nsig + 1) * sigactSize
	threadQuerySize = 24 + 8 + 16 + 8 + 8 // stack_t, clear_child_tid, robust head+len, pdeathsig, tsc
	processQueryOff = threadQueryOff + threadQuerySize
	waitidOff       = 4096       // a siginfo_t for waitid
	semopOff        = 4096 + 128 // sembufs of the SEM_UNDO probes (pkg/objects/sysv)
)

// trampoline places the injection code of m's process in its [vdso]
// padding (never in program code) and lets any thread that an earlier,
// killed chpox left on its way back through it finish its recovery.
func trampoline(threads []*ptrace.Tracee) (*ptrace.Trampoline, error) {
	tr, err := ptrace.PlaceTrampoline(threads[0].PID)
	if errors.Is(err, ptrace.ErrNoTrampoline) {
		return nil, fmt.Errorf("%w; chpox never writes its injected calls into program code: %w", err, ErrUnsupported)
	}
	if err != nil {
		return nil, err
	}
	for _, t := range threads {
		if err := t.StepOut(tr); err != nil {
			return nil, err
		}
	}
	return tr, nil
}

// inject asks the process itself for what /proc does not show: signal
// actions, brk and timers (per process; the pending signals are read again
// after the timers by repend); the alternate signal stack, the
// clear_child_tid pointer and the robust futex list (per thread). The
// calls run through the trampoline, one thread at a time: a thread has
// every signal blocked only while it is in there, and it is back at its own
// registers and mask before the next one enters.
//
// stopped lists the process's children that are in a group-stop: the
// process is asked (waitid with WNOWAIT, which changes nothing) whether it
// has collected each stop already; waited gets those it has.
func inject(tr *ptrace.Trampoline, threads []*ptrace.Tracee, p *format.Process, repend func() error, stopped []int, waited map[int]bool, sems sysv.Sets) (err error) {
	main := threads[0]
	in := func(t *ptrace.Tracee, f func() error) error {
		if err := t.Enter(tr); err != nil {
			return err
		}
		err := f()
		return errors.Join(err, t.Leave())
	}
	// A thread orphaned in an injected call (chpox killed) gets back to
	// its own mask by itself with two rt_sigprocmask calls (the
	// trampoline's recovery code): its sandbox must let them through.
	for _, t := range threads {
		if t.Guard == nil {
			continue
		}
		for _, ip := range []uint64{tr.Code + 32, tr.Code + 74} {
			if err := t.Guard(unix.SYS_RT_SIGPROCMASK, []uint64{unix.SIG_SETMASK, 0, 0, 8}, ip); err != nil {
				return err
			}
		}
	}
	var scratch uint64
	defer func() {
		if scratch == 0 {
			return
		}
		uerr := in(main, func() error {
			_, err := main.Syscall(unix.SYS_MUNMAP, scratch, scratchSize)
			return err
		})
		if uerr != nil && err == nil {
			err = fmt.Errorf("pid %d: injected munmap: %w", main.PID, uerr)
		}
	}()
	err = in(main, func() error {
		// The scratch area must go again: a sandbox that would keep it is
		// refused before it is made.
		if main.Guard != nil {
			if err := main.Guard(unix.SYS_MUNMAP, []uint64{0, scratchSize}, tr.Code+2); err != nil {
				return err
			}
		}
		var err error
		scratch, err = main.Syscall(unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			scratch = 0
			return fmt.Errorf("pid %d: injected mmap: %w", main.PID, err)
		}
		if err := queryProcess(main, p, scratch); err != nil {
			return err
		}
		if p.Memory, err = vmadump.MMState(main.PID, scratch); err != nil {
			return err
		}
		if err := queryTimers(main, p, scratch, repend); err != nil {
			return err
		}
		for _, c := range stopped {
			uncollected, err := stopPending(main, c, scratch+waitidOff)
			if err != nil {
				return err
			}
			waited[c] = !uncollected
		}
		if len(sems) > 0 {
			c := sysv.Caller{Call: main.Syscall, Addr: scratch + semopOff,
				Write: func(at uint64, b []byte) error { return ptrace.WriteMem(main.PID, at, b) }}
			if p.SemUndo, err = sems.Adjustments(c); err != nil {
				return fmt.Errorf("pid %d: %w", main.PID, err)
			}
		}
		return queryThread(main, &p.Threads[0], scratch)
	})
	for i, t := range threads[1:] {
		if err != nil {
			break
		}
		err = in(t, func() error { return queryThread(t, &p.Threads[i+1], scratch) })
	}
	return err
}

func queryProcess(t *ptrace.Tracee, p *format.Process, scratch uint64) error {
	set, err := actionsToQuery(t.PID)
	if err != nil {
		return err
	}
	for sig := uint64(1); sig <= nsig; sig++ {
		if set&(1<<(sig-1)) == 0 {
			continue
		}
		if _, err := t.Syscall(unix.SYS_RT_SIGACTION, sig, 0, scratch+sig*sigactSize, 8); err != nil {
			return fmt.Errorf("pid %d: injected rt_sigaction(%d): %w", t.PID, sig, err)
		}
	}
	brk, err := t.Syscall(unix.SYS_BRK, 0)
	if err != nil {
		return fmt.Errorf("pid %d: injected brk: %w", t.PID, err)
	}
	p.MM.Brk = brk
	dumpable, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_DUMPABLE)
	if err != nil {
		return fmt.Errorf("pid %d: injected prctl(PR_GET_DUMPABLE): %w", t.PID, err)
	}
	d := uint8(dumpable)
	p.Creds.Dumpable = &d
	bits, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_SECUREBITS)
	if err != nil {
		return fmt.Errorf("pid %d: injected prctl(PR_GET_SECUREBITS): %w", t.PID, err)
	}
	sb := uint32(bits)
	p.Creds.SecureBits = &sb
	if err := queryProcessAttrs(t, p, scratch+processQueryOff); err != nil {
		return err
	}
	buf := make([]byte, (nsig+1)*sigactSize)
	if err := ptrace.ReadMem(t.PID, scratch, buf); err != nil {
		return err
	}
	le := binary.LittleEndian
	p.Sigactions = nil
	for sig := 1; sig <= nsig; sig++ {
		b := buf[sig*sigactSize:]
		sa := format.Sigaction{Signal: sig, Handler: le.Uint64(b), Flags: le.Uint64(b[8:]), Restorer: le.Uint64(b[16:]), Mask: le.Uint64(b[24:])}
		if sa.Handler != 0 || sa.Flags != 0 || sa.Mask != 0 {
			p.Sigactions = append(p.Sigactions, sa)
		}
	}
	return nil
}

func queryThread(t *ptrace.Tracee, th *format.Thread, scratch uint64) error {
	at := scratch + threadQueryOff
	calls := []struct {
		name string
		nr   uint64
		args []uint64
	}{
		{"sigaltstack", unix.SYS_SIGALTSTACK, []uint64{0, at}},
		{"prctl(PR_GET_TID_ADDRESS)", unix.SYS_PRCTL, []uint64{prGetTIDAddress, at + 24}},
		{"get_robust_list", unix.SYS_GET_ROBUST_LIST, []uint64{0, at + 32, at + 40}},
		{"prctl(PR_GET_PDEATHSIG)", unix.SYS_PRCTL, []uint64{unix.PR_GET_PDEATHSIG, at + 48}},
	}
	for _, c := range calls {
		if _, err := t.Syscall(c.nr, c.args...); err != nil {
			return fmt.Errorf("thread %d: injected %s: %w", t.PID, c.name, err)
		}
	}
	b := make([]byte, threadQuerySize)
	if err := ptrace.ReadMem(t.PID, at, b); err != nil {
		return err
	}
	le := binary.LittleEndian
	th.AltStack = format.AltStack{SP: le.Uint64(b), Flags: int32(le.Uint32(b[8:])), Size: le.Uint64(b[16:])}
	th.ClearTID = le.Uint64(b[24:])
	th.RobustHead, th.RobustLen = le.Uint64(b[32:]), le.Uint64(b[40:])
	if th.Attrs != nil {
		th.Attrs.PdeathSig = int(int32(le.Uint32(b[48:])))
		slack, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_TIMERSLACK)
		if err != nil {
			return fmt.Errorf("thread %d: injected prctl(PR_GET_TIMERSLACK): %w", t.PID, err)
		}
		th.Attrs.TimerSlack = slack
		switch _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_TSC, at+56); {
		case err == unix.EINVAL: // not on this CPU
		case err != nil:
			return fmt.Errorf("thread %d: injected prctl(PR_GET_TSC): %w", t.PID, err)
		default:
			tsc := make([]byte, 4)
			if err := ptrace.ReadMem(t.PID, at+56, tsc); err != nil {
				return err
			}
			th.Attrs.TSC = int(le.Uint32(tsc))
		}
		mce, err := t.Syscall(unix.SYS_PRCTL, unix.PR_MCE_KILL_GET, 0, 0, 0, 0)
		if err != nil {
			return fmt.Errorf("thread %d: injected prctl(PR_MCE_KILL_GET): %w", t.PID, err)
		}
		th.Attrs.MCEKill = map[uint64]string{unix.PR_MCE_KILL_EARLY: "early", unix.PR_MCE_KILL_LATE: "late"}[mce]
	}
	return nil
}

// queryProcessAttrs asks the process for its prctl attributes and its
// membarrier registrations; at is 8 free bytes of scratch.
func queryProcessAttrs(t *ptrace.Tracee, p *format.Process, at uint64) error {
	a := p.Attrs
	if a == nil {
		return nil
	}
	if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_CHILD_SUBREAPER, at); err != nil {
		return fmt.Errorf("pid %d: injected prctl(PR_GET_CHILD_SUBREAPER): %w", t.PID, err)
	}
	b := make([]byte, 4)
	if err := ptrace.ReadMem(t.PID, at, b); err != nil {
		return err
	}
	a.ChildSubreaper = binary.LittleEndian.Uint32(b) != 0
	thp, err := t.Syscall(unix.SYS_PRCTL, unix.PR_GET_THP_DISABLE, 0, 0, 0, 0)
	if err != nil {
		return fmt.Errorf("pid %d: injected prctl(PR_GET_THP_DISABLE): %w", t.PID, err)
	}
	a.THPDisable = uint32(thp)
	regs, err := t.Syscall(unix.SYS_MEMBARRIER, membarrierGetRegs, 0, 0)
	switch {
	case err == unix.EINVAL || err == unix.ENOSYS:
		// Before kernel 6.3 nobody can tell: Membarrier stays nil.
	case err != nil:
		return fmt.Errorf("pid %d: injected membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS): %w", t.PID, err)
	default:
		r := uint32(regs)
		a.Membarrier = &r
	}
	return nil
}

// stopPending asks the process whether its stopped child c has a stop it
// has not collected yet: waitid(P_PID, c, WSTOPPED|WNOHANG|WNOWAIT) fills
// in si_pid only then, and WNOWAIT leaves it to be collected.
func stopPending(t *ptrace.Tracee, c int, at uint64) (bool, error) {
	if err := ptrace.WriteMem(t.PID, at, make([]byte, 128)); err != nil {
		return false, err
	}
	if _, err := t.Syscall(unix.SYS_WAITID, unix.P_PID, uint64(c), at, unix.WSTOPPED|unix.WNOHANG|unix.WNOWAIT, 0); err != nil {
		return false, fmt.Errorf("pid %d: injected waitid(%d): %w", t.PID, c, err)
	}
	si := make([]byte, 24)
	if err := ptrace.ReadMem(t.PID, at, si); err != nil {
		return false, err
	}
	return int(binary.LittleEndian.Uint32(si[16:])) == c, nil // si_pid
}
