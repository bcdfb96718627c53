package ptrace

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The requests below are missing from x/sys/unix or need pointers it does not
// take; this file is the only one that touches unsafe.

func ptraceRaw(req, pid int, addr uintptr, data unsafe.Pointer) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(pid), addr, uintptr(data), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getRegSet(pid, note int, buf []byte) (int, error) {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	err := ptraceRaw(unix.PTRACE_GETREGSET, pid, uintptr(note), unsafe.Pointer(&iov))
	return int(iov.Len), os.NewSyscallError("ptrace(PTRACE_GETREGSET)", err)
}

func setRegSet(pid, note int, buf []byte) error {
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	err := ptraceRaw(unix.PTRACE_SETREGSET, pid, uintptr(note), unsafe.Pointer(&iov))
	return os.NewSyscallError("ptrace(PTRACE_SETREGSET)", err)
}

func getSigMask(pid int) (uint64, error) {
	var m uint64
	err := ptraceRaw(unix.PTRACE_GETSIGMASK, pid, 8, unsafe.Pointer(&m))
	return m, os.NewSyscallError("ptrace(PTRACE_GETSIGMASK)", err)
}

func setSigMask(pid int, m uint64) error {
	err := ptraceRaw(unix.PTRACE_SETSIGMASK, pid, 8, unsafe.Pointer(&m))
	return os.NewSyscallError("ptrace(PTRACE_SETSIGMASK)", err)
}

type peekSiginfoArgs struct {
	Off   uint64
	Flags uint32
	Nr    int32
}

// peekSiginfo reads up to len(buf)/128 queued siginfos starting at off
// without dequeuing them.
func peekSiginfo(pid int, off uint64, shared bool, buf []byte) (int, error) {
	a := peekSiginfoArgs{Off: off, Nr: int32(len(buf) / SiginfoSize)}
	if shared {
		a.Flags = unix.PTRACE_PEEKSIGINFO_SHARED
	}
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_PEEKSIGINFO, uintptr(pid), uintptr(unsafe.Pointer(&a)), uintptr(unsafe.Pointer(&buf[0])), 0, 0)
	if e != 0 {
		return 0, os.NewSyscallError("ptrace(PTRACE_PEEKSIGINFO)", e)
	}
	return int(r), nil
}

type rseqConfig struct {
	Addr  uint64
	Size  uint32
	Sig   uint32
	Flags uint32
	_     uint32
}

func getRseq(pid int) (rseqConfig, error) {
	var c rseqConfig
	err := ptraceRaw(unix.PTRACE_GET_RSEQ_CONFIGURATION, pid, unsafe.Sizeof(c), unsafe.Pointer(&c))
	return c, os.NewSyscallError("ptrace(PTRACE_GET_RSEQ_CONFIGURATION)", err)
}

func getSiginfo(pid int) ([]byte, error) {
	buf := make([]byte, SiginfoSize)
	err := ptraceRaw(unix.PTRACE_GETSIGINFO, pid, 0, unsafe.Pointer(&buf[0]))
	return buf, os.NewSyscallError("ptrace(PTRACE_GETSIGINFO)", err)
}

// seccompFilter reads the thread's index-th seccomp filter (0: the newest)
// into buf, or only returns its length in instructions when buf is nil.
func seccompFilter(pid, index int, buf []byte) (int, error) {
	var p unsafe.Pointer
	if len(buf) > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	r, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), uintptr(index), uintptr(p), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// seccompMetadata returns the SECCOMP_FILTER_FLAG_* of the index-th filter.
func seccompMetadata(pid, index int) (uint64, error) {
	md := struct{ Off, Flags uint64 }{Off: uint64(index)}
	err := ptraceRaw(unix.PTRACE_SECCOMP_GET_METADATA, pid, unsafe.Sizeof(md), unsafe.Pointer(&md))
	return md.Flags, err
}
