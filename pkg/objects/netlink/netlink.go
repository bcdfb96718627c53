// Package netlink checkpoints netlink sockets: protocol, type, bound port
// id, multicast groups, default destination and the options that change
// what the socket delivers.
//
// Netlink is the kernel talking: a queued message is a reply or a
// notification the kernel made for this socket, and there is no way to
// queue one again from user space. Dump therefore refuses a socket with
// unread messages (a moment later it is usually empty again), and what the
// kernel would have sent between dump and restore (a route or link change
// notification) is lost, as for any listener that was away. The package must
// not consume a message of the process: it only peeks.
package netlink

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
)

// ErrQueued reports a netlink socket with unread messages.
var ErrQueued = errors.New("has unread messages, which cannot be queued again")

// options are the boolean SOL_NETLINK options kept, with their record field.
func options(o *format.NetlinkOptions) []struct {
	opt int
	val *bool
} {
	return []struct {
		opt int
		val *bool
	}{
		{unix.NETLINK_PKTINFO, &o.PktInfo},
		{unix.NETLINK_BROADCAST_ERROR, &o.BroadcastError},
		{unix.NETLINK_NO_ENOBUFS, &o.NoENOBUFS},
		{unix.NETLINK_CAP_ACK, &o.CapAck},
		{unix.NETLINK_EXT_ACK, &o.ExtAck},
		{unix.NETLINK_GET_STRICT_CHK, &o.StrictCheck},
	}
}

// Describe returns the record of the netlink socket pid holds at fd.
func Describe(pid, fd int) (format.NetlinkSocket, error) {
	var rec format.NetlinkSocket
	f, err := objects.Dup(pid, fd)
	if err != nil {
		return rec, err
	}
	defer f.Close()
	s := int(f.Fd())
	if rec.Type, err = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return rec, os.NewSyscallError("getsockopt(SO_TYPE)", err)
	}
	if rec.Protocol, err = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil {
		return rec, os.NewSyscallError("getsockopt(SO_PROTOCOL)", err)
	}
	if err := queued(s); err != nil {
		return rec, err
	}
	sa, err := unix.Getsockname(s)
	if err != nil {
		return rec, os.NewSyscallError("getsockname", err)
	}
	if nl, ok := sa.(*unix.SockaddrNetlink); ok {
		rec.PortID = nl.Pid
	}
	if peer, err := unix.Getpeername(s); err == nil {
		if nl, ok := peer.(*unix.SockaddrNetlink); ok {
			rec.DstPort, rec.DstGroup = nl.Pid, nl.Groups
		}
	}
	if rec.Groups, err = groups(s); err != nil {
		return rec, err
	}
	o := &rec.Options
	if o.SndBuf, err = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_SNDBUF); err != nil {
		return rec, os.NewSyscallError("getsockopt(SO_SNDBUF)", err)
	}
	if o.RcvBuf, err = unix.GetsockoptInt(s, unix.SOL_SOCKET, unix.SO_RCVBUF); err != nil {
		return rec, os.NewSyscallError("getsockopt(SO_RCVBUF)", err)
	}
	for _, b := range options(o) {
		v, err := unix.GetsockoptInt(s, unix.SOL_NETLINK, b.opt)
		if err != nil {
			return rec, fmt.Errorf("getsockopt(SOL_NETLINK, %d): %w", b.opt, err)
		}
		*b.val = v != 0
	}
	return rec, nil
}

// queued fails if a message waits on the socket: a zero-byte peek reports
// the length of the first one (MSG_TRUNC) without taking it.
func queued(s int) error {
	n, _, err := unix.Recvfrom(s, nil, unix.MSG_PEEK|unix.MSG_DONTWAIT|unix.MSG_TRUNC)
	switch {
	case err == unix.EAGAIN:
		return nil
	case err != nil:
		return os.NewSyscallError("recvfrom(MSG_PEEK)", err)
	}
	return fmt.Errorf("%w (a message of %d bytes waits): dump again in a moment", ErrQueued, n)
}

// groups lists the multicast groups joined (NETLINK_LIST_MEMBERSHIPS gives
// a bitmap of u32 words; bit 0 of word 0 is group 1).
func groups(s int) ([]uint32, error) {
	b, err := objects.GetsockoptBytes(s, unix.SOL_NETLINK, unix.NETLINK_LIST_MEMBERSHIPS, 1024)
	if err != nil {
		return nil, err
	}
	var out []uint32
	for w := 0; w+4 <= len(b); w += 4 {
		word := binary.LittleEndian.Uint32(b[w:])
		for bit := uint32(0); bit < 32; bit++ {
			if word&(1<<bit) != 0 {
				out = append(out, uint32(w/4)*32+bit+1)
			}
		}
	}
	return out, nil
}

// Create makes the socket of rec in chpox: same protocol and type, bound to
// the same port id (free again once the original process is gone), joined
// to the same groups, connected to the same destination, same options.
func Create(rec format.NetlinkSocket) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, rec.Type|unix.SOCK_CLOEXEC, rec.Protocol)
	if err != nil {
		return nil, fmt.Errorf("netlink socket %d: %w", rec.ID, os.NewSyscallError("socket", err))
	}
	f := os.NewFile(uintptr(fd), "netlink")
	if err := configure(fd, rec); err != nil {
		f.Close()
		return nil, fmt.Errorf("netlink socket %d (protocol %d): %w", rec.ID, rec.Protocol, err)
	}
	return f, nil
}

func configure(fd int, rec format.NetlinkSocket) error {
	o := rec.Options
	// SO_*BUFFORCE: the sizes the process had, whatever rmem_max says now
	// (the kernel doubles the value set; the saved one is already doubled).
	if o.SndBuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, o.SndBuf/2); err != nil {
			return os.NewSyscallError("setsockopt(SO_SNDBUFFORCE)", err)
		}
	}
	if o.RcvBuf > 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, o.RcvBuf/2); err != nil {
			return os.NewSyscallError("setsockopt(SO_RCVBUFFORCE)", err)
		}
	}
	for _, b := range options(&o) {
		if *b.val {
			if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, b.opt, 1); err != nil {
				return fmt.Errorf("setsockopt(SOL_NETLINK, %d): %w", b.opt, err)
			}
		}
	}
	if rec.PortID != 0 {
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: rec.PortID}); err != nil {
			return fmt.Errorf("bind port id %d: %w", rec.PortID, err)
		}
	}
	for _, g := range rec.Groups {
		if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, int(g)); err != nil {
			return fmt.Errorf("join group %d: %w", g, err)
		}
	}
	if rec.DstPort != 0 || rec.DstGroup != 0 {
		if err := unix.Connect(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: rec.DstPort, Groups: rec.DstGroup}); err != nil {
			return os.NewSyscallError("connect", err)
		}
	}
	return nil
}
