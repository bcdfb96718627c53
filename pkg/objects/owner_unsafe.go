package objects

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fOwnerEx is struct f_owner_ex (include/uapi/asm-generic/fcntl.h).
type fOwnerEx struct {
	Type int32
	PID  int32
}

// Owner returns who gets SIGIO for the open file description f (fcntl
// F_GETOWN_EX: F_OWNER_TID, _PID or _PGRP and the number, 0 for none) and
// with which signal (F_GETSIG, 0 for SIGIO).
func Owner(f *os.File) (typ, pid, sig int, err error) {
	var ex fOwnerEx
	if _, _, e := unix.Syscall(unix.SYS_FCNTL, f.Fd(), unix.F_GETOWN_EX, uintptr(unsafe.Pointer(&ex))); e != 0 {
		return 0, 0, 0, os.NewSyscallError("fcntl(F_GETOWN_EX)", e)
	}
	s, _, e := unix.Syscall(unix.SYS_FCNTL, f.Fd(), unix.F_GETSIG, 0)
	if e != 0 {
		return 0, 0, 0, os.NewSyscallError("fcntl(F_GETSIG)", e)
	}
	return int(ex.Type), int(ex.PID), int(s), nil
}
