package objects

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GetsockoptBytes reads a socket option of up to n bytes (struct tcp_info,
// struct tcp_repair_window, a netlink membership bitmap), which x/sys/unix
// has no call for.
func GetsockoptBytes(fd, level, opt, n int) ([]byte, error) {
	b := make([]byte, n)
	l := uint32(n)
	_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&b[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return nil, os.NewSyscallError("getsockopt", e)
	}
	return b[:l], nil
}
