package unixsock

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sock_diag for AF_UNIX (include/uapi/linux/unix_diag.h). x/sys/unix has
// the netlink basics but not these, so the bytes are built by hand.
const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY

	showName  = 0x01 // UDIAG_SHOW_NAME
	showVFS   = 0x02
	showPeer  = 0x04
	showIcons = 0x08
	showRQLen = 0x10

	attrName     = 0 // UNIX_DIAG_NAME
	attrVFS      = 1 // UNIX_DIAG_VFS
	attrPeer     = 2 // UNIX_DIAG_PEER
	attrIcons    = 3 // UNIX_DIAG_ICONS
	attrRQLen    = 4 // UNIX_DIAG_RQLEN
	attrShutdown = 6 // UNIX_DIAG_SHUTDOWN (always sent, net/unix/diag.c sk_diag_fill)

	stateListen      = 10 // TCP_LISTEN
	stateEstablished = 1  // TCP_ESTABLISHED
)

// Diag is what the kernel says of one UNIX socket.
type Diag struct {
	Ino   uint32
	Type  int
	State int
	// Name is the bound address as sun_path holds it: a path without its
	// NUL, or an abstract name with its leading NUL.
	Name   string
	HasVFS bool
	VFSIno uint32 // inode of the socket file a path-bound socket made
	Peer   uint32
	Icons  []uint32 // listener: connections waiting to be accepted, in queue order
	// RQueue, WQueue: for a listener the pending count and the backlog;
	// otherwise bytes in the receive queue and bytes sent not yet read
	// (net/unix/diag.c sk_diag_show_rqlen).
	RQueue, WQueue uint32
	Shutdown       int
}

// DiagAll asks the kernel for every UNIX socket of chpox's network
// namespace, once per dump.
func DiagAll() (map[uint32]*Diag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, os.NewSyscallError("socket(NETLINK_SOCK_DIAG)", err)
	}
	defer unix.Close(fd)
	// nlmsghdr (16) + unix_diag_req (24)
	req := make([]byte, 16+24)
	binary.LittleEndian.PutUint32(req[0:], uint32(len(req)))
	binary.LittleEndian.PutUint16(req[4:], sockDiagByFamily)
	binary.LittleEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.LittleEndian.PutUint32(req[8:], 1) // seq
	req[16] = unix.AF_UNIX
	binary.LittleEndian.PutUint32(req[20:], 0xffffffff) // all states
	binary.LittleEndian.PutUint32(req[28:], showName|showVFS|showPeer|showIcons|showRQLen)
	binary.LittleEndian.PutUint32(req[32:], 0xffffffff) // cookie: none
	binary.LittleEndian.PutUint32(req[36:], 0xffffffff)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, os.NewSyscallError("sendto(sock_diag)", err)
	}
	out := map[uint32]*Diag{}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, os.NewSyscallError("recvfrom(sock_diag)", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag: %w", err)
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(binary.LittleEndian.Uint32(m.Data)); e != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return out, nil
			}
			if d := parseDiag(m.Data); d != nil {
				out[d.Ino] = d
			}
		}
	}
}

// parseDiag reads a unix_diag_msg (16 bytes) and its attributes.
func parseDiag(b []byte) *Diag {
	if len(b) < 16 {
		return nil
	}
	d := &Diag{Type: int(b[1]), State: int(b[2]), Ino: binary.LittleEndian.Uint32(b[4:])}
	for a := b[16:]; len(a) >= 4; {
		l := int(binary.LittleEndian.Uint16(a[0:]))
		typ := binary.LittleEndian.Uint16(a[2:]) & 0x3fff
		if l < 4 || l > len(a) {
			break
		}
		v := a[4:l]
		switch typ {
		case attrName:
			d.Name = string(v)
			if len(v) > 0 && v[0] != 0 {
				for len(d.Name) > 0 && d.Name[len(d.Name)-1] == 0 {
					d.Name = d.Name[:len(d.Name)-1]
				}
			}
		case attrVFS:
			if len(v) >= 8 {
				d.HasVFS, d.VFSIno = true, binary.LittleEndian.Uint32(v)
			}
		case attrPeer:
			if len(v) >= 4 {
				d.Peer = binary.LittleEndian.Uint32(v)
			}
		case attrIcons:
			for i := 0; i+4 <= len(v); i += 4 {
				d.Icons = append(d.Icons, binary.LittleEndian.Uint32(v[i:]))
			}
		case attrRQLen:
			if len(v) >= 8 {
				d.RQueue, d.WQueue = binary.LittleEndian.Uint32(v), binary.LittleEndian.Uint32(v[4:])
			}
		case attrShutdown:
			if len(v) >= 1 {
				d.Shutdown = int(v[0])
			}
		}
		step := (l + 3) &^ 3 // attributes are 4-byte aligned
		if step > len(a) {
			break
		}
		a = a[step:]
	}
	return d
}
