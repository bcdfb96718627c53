package dump

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/ptrace"
)

const (
	nsig            = 64
	sigactSize      = 32 // struct kernel_sigaction on x86_64
	scratchSize     = 4 * 4096
	prGetTIDAddress = 40 // PR_GET_TID_ADDRESS
	threadQueryOff  = (nsig + 1) * sigactSize
	threadQuerySize = 24 + 8 + 16 // stack_t, clear_child_tid, robust head+len
	semopOff        = 4096        // sembufs of the SEM_UNDO probes (pkg/objects/sysv)
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
// actions and brk (per process); the alternate signal stack, the
// clear_child_tid pointer and the robust futex list (per thread). The
// calls run through the trampoline, one thread at a time: a thread has
// every signal blocked only while it is in there, and it is back at its own
// registers and mask before the next one enters.
func inject(tr *ptrace.Trampoline, threads []*ptrace.Tracee, p *format.Process, sems sysv.Sets) (err error) {
	main := threads[0]
	in := func(t *ptrace.Tracee, f func() error) error {
		if err := t.Enter(tr); err != nil {
			return err
		}
		err := f()
		return errors.Join(err, t.Leave())
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
	for sig := uint64(1); sig <= nsig; sig++ {
		if sig == uint64(unix.SIGKILL) || sig == uint64(unix.SIGSTOP) {
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
	return nil
}
