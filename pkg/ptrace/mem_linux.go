package ptrace

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// ReadMem fills buf from the process's memory at addr (process_vm_readv:
// no ptrace request, any thread may call it).
func ReadMem(pid int, addr uint64, buf []byte) error {
	return vm(pid, addr, buf, unix.ProcessVMReadv, "read")
}

// WriteMem writes b into the process's memory at addr.
func WriteMem(pid int, addr uint64, b []byte) error {
	return vm(pid, addr, b, unix.ProcessVMWritev, "write")
}

func vm(pid int, addr uint64, b []byte, f func(int, []unix.Iovec, []unix.RemoteIovec, uint) (int, error), what string) error {
	if len(b) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &b[0]}}
	local[0].SetLen(len(b))
	n, err := f(pid, local, []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}, 0)
	if err == nil && n != len(b) {
		err = fmt.Errorf("short %s: %d of %d bytes", what, n, len(b))
	}
	if err != nil {
		return fmt.Errorf("pid %d: %s %d bytes at %#x: %w", pid, what, len(b), addr, err)
	}
	return nil
}
