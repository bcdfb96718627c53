package dump

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/ptrace"
)

const (
	nsig        = 64
	sigactSize  = 32 // struct kernel_sigaction on x86_64
	stackTSize  = 24 // stack_t
	scratchSize = 4 * 4096
	allSignals  = ^uint64(0) &^ (1<<(unix.SIGKILL-1) | 1<<(unix.SIGSTOP-1))
)

// inject asks the process itself for what /proc does not show: signal
// actions, the alternate signal stack and the current brk. The calls run
// with every signal blocked so nothing is delivered in between.
func inject(t *ptrace.Tracee, p *format.Process) error {
	if err := t.SetSigMask(allSignals); err != nil {
		return err
	}
	if err := t.PokeStub(); err != nil {
		return err
	}
	scratch, err := t.Syscall(unix.SYS_MMAP, 0, scratchSize, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		return fmt.Errorf("dump %d: injected mmap: %w", t.PID, err)
	}
	err = queryScratch(t, p, scratch)
	if _, uerr := t.Syscall(unix.SYS_MUNMAP, scratch, scratchSize); uerr != nil && err == nil {
		err = fmt.Errorf("dump %d: injected munmap: %w", t.PID, uerr)
	}
	return err
}

func queryScratch(t *ptrace.Tracee, p *format.Process, scratch uint64) error {
	for sig := uint64(1); sig <= nsig; sig++ {
		if sig == uint64(unix.SIGKILL) || sig == uint64(unix.SIGSTOP) {
			continue
		}
		if _, err := t.Syscall(unix.SYS_RT_SIGACTION, sig, 0, scratch+sig*sigactSize, 8); err != nil {
			return fmt.Errorf("dump %d: injected rt_sigaction(%d): %w", t.PID, sig, err)
		}
	}
	altAt := scratch + (nsig+1)*sigactSize
	if _, err := t.Syscall(unix.SYS_SIGALTSTACK, 0, altAt); err != nil {
		return fmt.Errorf("dump %d: injected sigaltstack: %w", t.PID, err)
	}
	brk, err := t.Syscall(unix.SYS_BRK, 0)
	if err != nil {
		return fmt.Errorf("dump %d: injected brk: %w", t.PID, err)
	}
	p.MM.Brk = brk
	buf := make([]byte, altAt+stackTSize-scratch)
	if err := readMem(t.PID, scratch, buf); err != nil {
		return err
	}
	le := binary.LittleEndian
	for sig := 1; sig <= nsig; sig++ {
		b := buf[sig*sigactSize:]
		sa := format.Sigaction{Signal: sig, Handler: le.Uint64(b), Flags: le.Uint64(b[8:]), Restorer: le.Uint64(b[16:]), Mask: le.Uint64(b[24:])}
		if sa.Handler != 0 || sa.Flags != 0 || sa.Mask != 0 {
			p.Sigactions = append(p.Sigactions, sa)
		}
	}
	a := buf[altAt-scratch:]
	p.Threads[0].AltStack = format.AltStack{SP: le.Uint64(a), Flags: int32(le.Uint32(a[8:])), Size: le.Uint64(a[16:])}
	return nil
}

func readMem(pid int, addr uint64, buf []byte) error {
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	n, err := unix.ProcessVMReadv(pid, local, []unix.RemoteIovec{{Base: uintptr(addr), Len: len(buf)}}, 0)
	if err == nil && n != len(buf) {
		err = fmt.Errorf("short read: %d of %d bytes", n, len(buf))
	}
	if err != nil {
		return fmt.Errorf("dump %d: read scratch memory: %w", pid, err)
	}
	return nil
}

func fromPtrace(r *unix.PtraceRegs) format.Regs {
	return format.Regs{
		R15: r.R15, R14: r.R14, R13: r.R13, R12: r.R12, Rbp: r.Rbp, Rbx: r.Rbx, R11: r.R11, R10: r.R10,
		R9: r.R9, R8: r.R8, Rax: r.Rax, Rcx: r.Rcx, Rdx: r.Rdx, Rsi: r.Rsi, Rdi: r.Rdi,
		OrigRax: r.Orig_rax, Rip: r.Rip, Cs: r.Cs, Eflags: r.Eflags, Rsp: r.Rsp, Ss: r.Ss,
		FsBase: r.Fs_base, GsBase: r.Gs_base, Ds: r.Ds, Es: r.Es, Fs: r.Fs, Gs: r.Gs,
	}
}
