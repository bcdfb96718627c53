package dump

import (
	"encoding/binary"
	"fmt"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/ptrace"
)

const (
	nsig            = 64
	sigactSize      = 32 // struct kernel_sigaction on x86_64
	scratchSize     = 4 * 4096
	prGetTIDAddress = 40 // PR_GET_TID_ADDRESS
	threadQueryOff  = (nsig + 1) * sigactSize
	threadQuerySize = 24 + 8 + 16 // stack_t, clear_child_tid, robust head+len
	allSignals      = ^uint64(0) &^ (1<<(unix.SIGKILL-1) | 1<<(unix.SIGSTOP-1))
)

// stubAddress picks where the stub goes: over the current instruction, as
// long as that code is private to the process. In shared memory (a JIT's
// code in a MAP_SHARED memfd) the poke would reach every process mapping
// it, so the start of any private executable mapping serves instead.
func stubAddress(t *ptrace.Tracee) (uint64, error) {
	p, err := procfs.NewProc(t.PID)
	if err != nil {
		return 0, err
	}
	maps, err := p.ProcMaps()
	if err != nil {
		return 0, fmt.Errorf("pid %d: read maps: %w", t.PID, err)
	}
	rip := t.Regs.Rip
	var fallback uint64
	for _, m := range maps {
		if !m.Perms.Execute || !m.Perms.Private || m.Pathname == "[vsyscall]" {
			continue
		}
		if uint64(m.StartAddr) <= rip && rip+8 <= uint64(m.EndAddr) {
			return rip, nil
		}
		if fallback == 0 {
			fallback = uint64(m.StartAddr)
		}
	}
	if fallback == 0 {
		return 0, fmt.Errorf("pid %d has no private executable memory for the syscall stub: %w", t.PID, ErrUnsupported)
	}
	return fallback, nil
}

// inject asks the process itself for what /proc does not show: signal
// actions and brk (per process); the alternate signal stack, the
// clear_child_tid pointer and the robust futex list (per thread). All
// threads run the one stub poked into the main thread's code, with every
// signal blocked so nothing is delivered in between.
func inject(threads []*ptrace.Tracee, p *format.Process) error {
	main := threads[0]
	for _, t := range threads {
		if err := t.SetSigMask(ptrace.AllSignals); err != nil {
			return err
		}
	}
	at, err := stubAddress(main)
	if err != nil {
		return err
	}
	if err := main.PokeStubAt(at); err != nil {
		return err
	}
	for _, t := range threads[1:] {
		t.UseStub(main.Stub())
	}
	scratch, err := main.Syscall(unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("pid %d: injected mmap: %w", main.PID, err)
	}
	err = queryProcess(main, p, scratch)
	for i, t := range threads {
		if err == nil {
			err = queryThread(t, &p.Threads[i], scratch)
		}
	}
	if _, uerr := main.Syscall(unix.SYS_MUNMAP, scratch, scratchSize); uerr != nil && err == nil {
		err = fmt.Errorf("pid %d: injected munmap: %w", main.PID, uerr)
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
