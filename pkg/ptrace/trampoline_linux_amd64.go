package ptrace

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The trampoline is where a dump's injected system calls run: code and one
// save block placed in the zero padding at the end of the process's [vdso]
// mapping, never over program code. Each injected call is `syscall`
// followed by recovery code that puts the thread back to the state saved
// in the block, so a thread orphaned at any ptrace-stop of an injection
// (chpox killed) returns to where it was on its own:
//
//	+0    syscall                       the injected call
//	+2    rt_sigprocmask(SIG_SETMASK, &block.all, NULL, 8)
//	      lea rsp, [block.flags]; popfq; mov rsp, [rsp]
//	      rt_sigprocmask(SIG_SETMASK, &block.mask, NULL, 8)
//	      mov every GPR from the block; jmp [block.rip]
//	+256  save block (tramBlockSize bytes)
//
// Signals are blocked while rsp points into the block (the first
// rt_sigprocmask), so no signal frame is ever written there; the original
// mask comes back on the thread's own stack. A system call keeps rflags
// (SYSRET reloads them from r11, IRET from pt_regs: arch/x86/entry/
// entry_64.S), so the popfq survives the second rt_sigprocmask. Syscalls do
// not touch FPU/vector state, so nothing of XSAVE needs saving. The
// written vdso page becomes a private copy in that process only (FOLL_FORCE
// write through /proc/PID/mem); the code stays there afterwards, a page the
// program never runs, and the next dump finds it in place.
var tramCode = []byte{
	0x0f, 0x05, // syscall
	0xb8, 0x0e, 0x00, 0x00, 0x00, // mov eax, 14 (rt_sigprocmask)
	0xbf, 0x02, 0x00, 0x00, 0x00, // mov edi, 2 (SIG_SETMASK)
	0x48, 0x8d, 0x35, 0x05, 0x01, 0x00, 0x00, // lea rsi, [rip+B+24] (all blocked)
	0xba, 0x00, 0x00, 0x00, 0x00, // mov edx, 0
	0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8
	0x0f, 0x05, // syscall
	0x48, 0x8d, 0x25, 0xd9, 0x00, 0x00, 0x00, // lea rsp, [rip+B]
	0x9d,                   // popfq
	0x48, 0x8b, 0x24, 0x24, // mov rsp, [rsp] (B+8)
	0xb8, 0x0e, 0x00, 0x00, 0x00, // mov eax, 14
	0xbf, 0x02, 0x00, 0x00, 0x00, // mov edi, 2
	0x48, 0x8d, 0x35, 0xd3, 0x00, 0x00, 0x00, // lea rsi, [rip+B+16] (original mask)
	0xba, 0x00, 0x00, 0x00, 0x00, // mov edx, 0 (not xor: flags are restored)
	0x41, 0xba, 0x08, 0x00, 0x00, 0x00, // mov r10d, 8
	0x0f, 0x05, // syscall
	0x48, 0x8b, 0x05, 0xd7, 0x00, 0x00, 0x00, // mov rax, [rip+B+40]
	0x48, 0x8b, 0x1d, 0xd8, 0x00, 0x00, 0x00, // mov rbx, [rip+B+48]
	0x48, 0x8b, 0x0d, 0xd9, 0x00, 0x00, 0x00, // mov rcx, [rip+B+56]
	0x48, 0x8b, 0x15, 0xda, 0x00, 0x00, 0x00, // mov rdx, [rip+B+64]
	0x48, 0x8b, 0x35, 0xdb, 0x00, 0x00, 0x00, // mov rsi, [rip+B+72]
	0x48, 0x8b, 0x3d, 0xdc, 0x00, 0x00, 0x00, // mov rdi, [rip+B+80]
	0x48, 0x8b, 0x2d, 0xdd, 0x00, 0x00, 0x00, // mov rbp, [rip+B+88]
	0x4c, 0x8b, 0x05, 0xde, 0x00, 0x00, 0x00, // mov r8, [rip+B+96]
	0x4c, 0x8b, 0x0d, 0xdf, 0x00, 0x00, 0x00, // mov r9, [rip+B+104]
	0x4c, 0x8b, 0x15, 0xe0, 0x00, 0x00, 0x00, // mov r10, [rip+B+112]
	0x4c, 0x8b, 0x1d, 0xe1, 0x00, 0x00, 0x00, // mov r11, [rip+B+120]
	0x4c, 0x8b, 0x25, 0xe2, 0x00, 0x00, 0x00, // mov r12, [rip+B+128]
	0x4c, 0x8b, 0x2d, 0xe3, 0x00, 0x00, 0x00, // mov r13, [rip+B+136]
	0x4c, 0x8b, 0x35, 0xe4, 0x00, 0x00, 0x00, // mov r14, [rip+B+144]
	0x4c, 0x8b, 0x3d, 0xe5, 0x00, 0x00, 0x00, // mov r15, [rip+B+152]
	0xff, 0x25, 0x67, 0x00, 0x00, 0x00, // jmp qword [rip+B+32]
}

const (
	tramBlockOff  = 256 // the rip-relative offsets above point here
	tramBlockSize = 160
	tramSize      = 512 // reserved at the end of [vdso], block included
	// Offsets in the save block.
	blkFlags = 0
	blkRsp   = 8
	blkMask  = 16
	blkAll   = 24
	blkRip   = 32
	blkGPRs  = 40 // rax rbx rcx rdx rsi rdi rbp r8 ... r15
)

// ErrNoTrampoline reports a process whose vdso has no room for the
// trampoline; injection refuses rather than touch program code.
var ErrNoTrampoline = errors.New("no room for the injection trampoline in [vdso]")

// Trampoline is the injection area of one process (one address space).
type Trampoline struct {
	PID   int
	Code  uint64 // the `syscall` of every injected call
	Block uint64 // the save block
}

// Contains tells whether rip lies in the trampoline's code.
func (tr *Trampoline) Contains(rip uint64) bool {
	return rip >= tr.Code && rip < tr.Code+uint64(len(tramCode))
}

// vdsoRange returns the [vdso] mapping of pid.
func vdsoRange(pid int) (start, end uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != "[vdso]" {
			continue
		}
		lo, hi, _ := strings.Cut(fields[0], "-")
		s, err1 := strconv.ParseUint(lo, 16, 64)
		e, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return 0, 0, fmt.Errorf("parse maps line %q", sc.Text())
		}
		return s, e, nil
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	return 0, 0, fmt.Errorf("no [vdso] mapping")
}

// elfContentEnd is the end of everything an ELF image describes: its
// headers, program and section header tables, and every section and
// segment with file content. Bytes past it are padding.
func elfContentEnd(img []byte) (uint64, error) {
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		return 0, err
	}
	if f.Class != elf.ELFCLASS64 || len(img) < 64 {
		return 0, fmt.Errorf("not a 64-bit ELF image")
	}
	le := binary.LittleEndian
	phoff, shoff := le.Uint64(img[0x20:]), le.Uint64(img[0x28:])
	phentsize, phnum := uint64(le.Uint16(img[0x36:])), uint64(le.Uint16(img[0x38:]))
	shentsize, shnum := uint64(le.Uint16(img[0x3a:])), uint64(le.Uint16(img[0x3c:]))
	end := max(uint64(64), phoff+phentsize*phnum, shoff+shentsize*shnum)
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS {
			end = max(end, s.Offset+s.FileSize)
		}
	}
	for _, p := range f.Progs {
		end = max(end, p.Off+p.Filesz)
	}
	return end, nil
}

// VdsoIdentity names the code of pid's [vdso]: a SHA-256 of its ELF
// content (the padding past it may hold a dump's trampoline). Programs
// keep pointers into the vDSO (glibc caches its functions' addresses), so
// a restored process needs the very same vDSO, and a kernel that gives
// another one cannot run it.
func VdsoIdentity(pid int) (string, error) {
	start, end, err := vdsoRange(pid)
	if err != nil {
		return "", err
	}
	img := make([]byte, end-start)
	if err := ReadMem(pid, start, img); err != nil {
		return "", fmt.Errorf("read [vdso]: %w", err)
	}
	content, err := elfContentEnd(img)
	if err != nil {
		return "", fmt.Errorf("parse [vdso]: %w", err)
	}
	sum := sha256.Sum256(img[:min(content, uint64(len(img)))])
	return hex.EncodeToString(sum[:]), nil
}

// VdsoPadding tells how many bytes at the end of pid's [vdso] lie past its
// ELF content, and how many the trampoline needs there.
func VdsoPadding(pid int) (padding, need uint64, err error) {
	start, end, err := vdsoRange(pid)
	if err != nil {
		return 0, tramSize, err
	}
	img := make([]byte, end-start)
	if err := ReadMem(pid, start, img); err != nil {
		return 0, tramSize, fmt.Errorf("read [vdso]: %w", err)
	}
	content, err := elfContentEnd(img)
	if err != nil {
		return 0, tramSize, fmt.Errorf("parse [vdso]: %w", err)
	}
	return uint64(len(img)) - min(content, uint64(len(img))), tramSize, nil
}

// PlaceTrampoline finds room at the end of pid's [vdso] and writes the
// trampoline code there unless it is there already (a previous dump left
// it). It fails, without writing anything, when the padding is too small
// or holds bytes that are neither zero nor the trampoline.
func PlaceTrampoline(pid int) (*Trampoline, error) {
	start, end, err := vdsoRange(pid)
	if err != nil {
		return nil, fmt.Errorf("pid %d: find [vdso]: %w", pid, err)
	}
	img := make([]byte, end-start)
	if err := ReadMem(pid, start, img); err != nil {
		return nil, fmt.Errorf("pid %d: read [vdso]: %w", pid, err)
	}
	content, err := elfContentEnd(img)
	if err != nil {
		return nil, fmt.Errorf("pid %d: parse [vdso]: %w", pid, err)
	}
	at := uint64(len(img)) - tramSize
	if content > at {
		return nil, fmt.Errorf("pid %d: [vdso] has %d bytes of padding, %d needed: %w",
			pid, uint64(len(img))-min(content, uint64(len(img))), tramSize, ErrNoTrampoline)
	}
	code := img[at : at+uint64(len(tramCode))]
	present := bytes.Equal(code, tramCode)
	if !present && !allZero(img[content:]) {
		return nil, fmt.Errorf("pid %d: the padding of [vdso] holds unknown bytes: %w", pid, ErrNoTrampoline)
	}
	tr := &Trampoline{PID: pid, Code: start + at, Block: start + at + tramBlockOff}
	if !present {
		if err := pokeMem(pid, tr.Code, tramCode); err != nil {
			return nil, fmt.Errorf("pid %d: write the trampoline: %w", pid, err)
		}
	}
	return tr, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// pokeMem writes through /proc/PID/mem, which writes read-only and
// executable private pages too (FOLL_FORCE makes a private copy: the
// change stays in this process).
func pokeMem(pid int, addr uint64, b []byte) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/mem", pid), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(addr)); err != nil {
		return err
	}
	return nil
}

// Kernel return values of an interrupted system call (include/linux/errno.h).
const (
	errRestartSys     = 512
	errRestartNoIntr  = 513
	errRestartNoHand  = 514
	errRestartBlock   = 516
	sysRestartSyscall = 219
	syscallInsnLen    = 2
)

// resumeRegs is where a thread stopped at r goes when it returns to user
// space with no signal handler to run: an interrupted call is restarted as
// the kernel would (arch/x86/kernel/signal.c, arch_do_signal_or_restart):
// rip back over the syscall instruction, rax = the call, or restart_syscall
// for -ERESTART_RESTARTBLOCK (the restart_block lives on in the task).
func resumeRegs(r unix.PtraceRegs) unix.PtraceRegs {
	if int64(r.Orig_rax) < 0 {
		return r
	}
	switch -int64(r.Rax) {
	case errRestartSys, errRestartNoIntr, errRestartNoHand:
		r.Rax = r.Orig_rax
		r.Rip -= syscallInsnLen
	case errRestartBlock:
		r.Rax = sysRestartSyscall
		r.Rip -= syscallInsnLen
	}
	return r
}

// saveBlock lays out what the recovery code needs to return a thread with
// registers r and blocked mask mask to where it was.
func saveBlock(r unix.PtraceRegs, mask uint64) []byte {
	r = resumeRegs(r)
	b := make([]byte, tramBlockSize)
	le := binary.LittleEndian
	le.PutUint64(b[blkFlags:], r.Eflags)
	le.PutUint64(b[blkRsp:], r.Rsp)
	le.PutUint64(b[blkMask:], mask)
	le.PutUint64(b[blkAll:], AllSignals)
	le.PutUint64(b[blkRip:], r.Rip)
	for i, v := range []uint64{r.Rax, r.Rbx, r.Rcx, r.Rdx, r.Rsi, r.Rdi, r.Rbp, r.R8, r.R9, r.R10, r.R11, r.R12, r.R13, r.R14, r.R15} {
		le.PutUint64(b[blkGPRs+8*i:], v)
	}
	return b
}
