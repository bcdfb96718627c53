package objects

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Dup returns chpox's own copy of fd of process pid (pidfd_getfd(2)): the
// very same open file description, so the copy sees the socket or pipe the
// process holds, its queues and its options. The caller closes it.
func Dup(pid, fd int) (*os.File, error) {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	defer unix.Close(pidfd)
	cp, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return nil, fmt.Errorf("pid %d: fd %d: %w", pid, fd, os.NewSyscallError("pidfd_getfd", err))
	}
	return os.NewFile(uintptr(cp), fmt.Sprintf("pid %d fd %d", pid, fd)), nil
}

// SocketFamily returns the address family (AF_UNIX, AF_INET ...) and type
// (SOCK_STREAM ...) of a socket.
func SocketFamily(f *os.File) (family, typ int, err error) {
	fd := int(f.Fd())
	if family, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return 0, 0, os.NewSyscallError("getsockopt(SO_DOMAIN)", err)
	}
	if typ, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return 0, 0, os.NewSyscallError("getsockopt(SO_TYPE)", err)
	}
	return family, typ, nil
}

// FamilyName names an address family for messages.
func FamilyName(family int) string {
	names := map[int]string{
		unix.AF_UNIX: "UNIX", unix.AF_INET: "IPv4", unix.AF_INET6: "IPv6", unix.AF_NETLINK: "netlink",
		unix.AF_PACKET: "packet", unix.AF_VSOCK: "vsock", unix.AF_BLUETOOTH: "bluetooth", unix.AF_ALG: "AF_ALG",
		unix.AF_XDP: "XDP", unix.AF_CAN: "CAN", unix.AF_TIPC: "TIPC", unix.AF_KEY: "PF_KEY",
	}
	if n, ok := names[family]; ok {
		return n
	}
	return fmt.Sprintf("family %d", family)
}

// TypeName names a socket type for messages.
func TypeName(typ int) string {
	switch typ {
	case unix.SOCK_STREAM:
		return "stream"
	case unix.SOCK_DGRAM:
		return "datagram"
	case unix.SOCK_SEQPACKET:
		return "seqpacket"
	case unix.SOCK_RAW:
		return "raw"
	}
	return fmt.Sprintf("type %d", typ)
}
