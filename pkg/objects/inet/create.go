package inet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// New is a socket created again, in chpox, from its record. An established
// connection stays in repair mode until Resume, just before the processes
// run.
type New struct {
	Rec format.InetSocket
	// Filled from the data section before Fill.
	SendQ, RecvQ []byte
	Datagrams    [][]byte
	File         *os.File
	repair       bool
}

// Create makes the socket of rec: options, bind, listen or connect; an
// established connection in repair mode with its sequence numbers, so that
// connect(2) sends nothing and the connection is at once ESTABLISHED
// (tcp_connect: tcp_finish_connect when tp->repair). Listeners must be
// created before connections that share their port: a connection in repair
// mode binds whatever is bound (SK_FORCE_REUSE), a listener does not.
func Create(rec format.InetSocket) (*New, error) {
	n := &New{Rec: rec, Datagrams: make([][]byte, len(rec.Datagrams))}
	fd, err := unix.Socket(rec.Family, rec.Type|unix.SOCK_CLOEXEC, rec.Protocol)
	if err != nil {
		return nil, n.errorf("%w", os.NewSyscallError("socket", err))
	}
	n.File = os.NewFile(uintptr(fd), "inet")
	if err := n.create(fd); err != nil {
		n.File.Close()
		return nil, n.errorf("%w", err)
	}
	return n, nil
}

func (n *New) errorf(f string, a ...any) error {
	return fmt.Errorf("%s socket %d (%s -> %s): %s", map[int]string{unix.SOCK_STREAM: "TCP", unix.SOCK_DGRAM: "UDP"}[n.Rec.Type],
		n.Rec.ID, n.Rec.Local, n.Rec.Peer, fmt.Errorf(f, a...))
}

func (n *New) create(fd int) error {
	r := n.Rec
	if err := setOptions(fd, r); err != nil {
		return err
	}
	if r.State == format.InetEstablished {
		return n.repairConnect(fd)
	}
	if r.State != format.InetUnbound {
		if err := unix.Bind(fd, sockaddr(r.Family, r.Local)); err != nil {
			return os.NewSyscallError("bind", err)
		}
	}
	switch r.State {
	case format.InetListen:
		return os.NewSyscallError("listen", unix.Listen(fd, r.Backlog))
	case format.InetConnected:
		return os.NewSyscallError("connect", unix.Connect(fd, sockaddr(r.Family, r.Peer)))
	}
	return nil
}

func setOptions(fd int, r format.InetSocket) error {
	o := r.Options
	set := func(level, opt int, name string, v int) error {
		if err := unix.SetsockoptInt(fd, level, opt, v); err != nil {
			return os.NewSyscallError("setsockopt("+name+")", err)
		}
		return nil
	}
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	errs := []error{set(unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR", b(o.ReuseAddr)),
		set(unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT", b(o.ReusePort)),
		set(unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE", b(o.KeepAlive))}
	if r.Family == unix.AF_INET6 {
		errs = append(errs, set(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY", b(o.V6Only)))
	}
	if r.Type == unix.SOCK_STREAM {
		errs = append(errs, set(unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY", b(o.NoDelay)))
		for _, k := range []struct {
			opt  int
			name string
			v    int
		}{{unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", o.KeepIdle}, {unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", o.KeepIntvl}, {unix.TCP_KEEPCNT, "TCP_KEEPCNT", o.KeepCnt}} {
			if k.v > 0 {
				errs = append(errs, set(unix.IPPROTO_TCP, k.opt, k.name, k.v))
			}
		}
	}
	return errors.Join(errs...)
}

func sockaddr(family int, a netip.AddrPort) unix.Sockaddr {
	if family == unix.AF_INET {
		return &unix.SockaddrInet4{Addr: a.Addr().Unmap().As4(), Port: int(a.Port())}
	}
	return &unix.SockaddrInet6{Addr: a.Addr().As16(), Port: int(a.Port())}
}

// repairConnect is the first half of soccr's libsoccr_restore (CRIU): queue
// sequence numbers, bind, connect, then the options the handshake had
// negotiated and the clock. The queues and the window follow in Fill.
func (n *New) repairConnect(fd int) error {
	r := n.Rec.Repair
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return fmt.Errorf("%w (TCP repair mode needs CAP_NET_ADMIN)", os.NewSyscallError("setsockopt(TCP_REPAIR)", err))
	}
	n.repair = true
	// The queues are refilled from their first byte: the sequence numbers
	// are those of the queues' starts.
	sendLen, recvLen := uint32(format.Len(r.SendQueue)), uint32(format.Len(r.RecvQueue))
	for _, q := range []struct{ queue, seq uint32 }{{tcpSendQueue, r.SendSeq - sendLen}, {tcpRecvQueue, r.RecvSeq - recvLen}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, int(q.queue)); err != nil {
			return os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ, int(int32(q.seq))); err != nil {
			return os.NewSyscallError("setsockopt(TCP_QUEUE_SEQ)", err)
		}
	}
	if err := unix.Bind(fd, sockaddr(n.Rec.Family, n.Rec.Local)); err != nil {
		return os.NewSyscallError("bind", err)
	}
	if err := unix.Connect(fd, sockaddr(n.Rec.Family, n.Rec.Peer)); err != nil {
		if err == unix.EADDRNOTAVAIL {
			return fmt.Errorf("the connection exists already (does the dumped process still run?): %w", os.NewSyscallError("connect", err))
		}
		return os.NewSyscallError("connect", err)
	}
	// TCP_REPAIR_OPTIONS: an array of struct tcp_repair_opt {opt_code,
	// opt_val}; accepted only once ESTABLISHED and before any byte was
	// sent (tcp_repair_options_est).
	var opts []byte
	add := func(code, val uint32) {
		opts = binary.LittleEndian.AppendUint32(opts, code)
		opts = binary.LittleEndian.AppendUint32(opts, val)
	}
	add(unix.TCPOPT_MAXSEG, r.MSS)
	if r.Wscale {
		add(unix.TCPOPT_WINDOW, uint32(r.SndWscale)|uint32(r.RcvWscale)<<16)
	}
	if r.SACK {
		add(unix.TCPOPT_SACK_PERMITTED, 0)
	}
	if r.Timestamps {
		add(unix.TCPOPT_TIMESTAMP, 0)
	}
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_OPTIONS, string(opts)); err != nil {
		return os.NewSyscallError("setsockopt(TCP_REPAIR_OPTIONS)", err)
	}
	if r.Timestamps {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP, int(int32(r.Timestamp))); err != nil {
			return os.NewSyscallError("setsockopt(TCP_TIMESTAMP)", err)
		}
	}
	return nil
}

// Fill puts the saved bytes back before any process runs: a connection's
// receive queue and the sent-but-unacknowledged part of its send queue in
// repair mode (the kernel takes them as received, and as sent: it
// retransmits them when its timer fires), then its window; a UDP socket's
// datagrams, sent again from their source addresses. others are the
// sockets of the image, one of which may hold a datagram's source address.
func (n *New) Fill(others []*New) error {
	var err error
	switch {
	case n.Rec.Repair != nil:
		err = n.fillTCP()
	case len(n.Datagrams) > 0:
		err = n.fillDatagrams(others)
	}
	if err != nil {
		return n.errorf("%w", err)
	}
	return nil
}

func (n *New) fillTCP() error {
	fd := int(n.File.Fd())
	r := n.Rec.Repair
	sent := n.SendQ[:len(n.SendQ)-int(r.Unsent)]
	if err := growBuffer(fd, unix.SO_RCVBUF, len(n.RecvQ)); err != nil {
		return err
	}
	if err := growBuffer(fd, unix.SO_SNDBUF, len(n.SendQ)); err != nil {
		return err
	}
	for _, q := range []struct {
		queue int
		data  []byte
	}{{tcpRecvQueue, n.RecvQ}, {tcpSendQueue, sent}} {
		if len(q.data) == 0 {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q.queue); err != nil {
			return os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err)
		}
		if err := sendAll(fd, q.data); err != nil {
			return err
		}
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue); err != nil {
		return os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err)
	}
	w := r.Window
	var b []byte
	for _, v := range []uint32{w.SndWl1, w.SndWnd, w.MaxWindow, w.RcvWnd, w.RcvWup} {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	if err := unix.SetsockoptString(fd, unix.IPPROTO_TCP, tcpRepairWindow, string(b)); err != nil {
		return os.NewSyscallError("setsockopt(TCP_REPAIR_WINDOW)", err)
	}
	return nil
}

// growBuffer makes a socket buffer hold n bytes where the default would
// not (setting it turns off the kernel's autotuning, so only then).
func growBuffer(fd, opt, n int) error {
	have, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
	if err != nil || have/2 >= n { // the kernel doubles what is set, half is overhead
		return err
	}
	return os.NewSyscallError("setsockopt(SO_RCVBUF/SO_SNDBUF)", unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 2*n))
}

func sendAll(fd int, b []byte) error {
	for len(b) > 0 {
		k, err := unix.SendmsgN(fd, b, nil, nil, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err != nil {
			return fmt.Errorf("refill queue (%d bytes left): %w", len(b), os.NewSyscallError("send", err))
		}
		b = b[k:]
	}
	return nil
}

// fillDatagrams sends each saved datagram again from its source address:
// from the image's own socket bound there if there is one, else from a
// socket bound to it for the purpose (SO_REUSEADDR, IP_FREEBIND).
func (n *New) fillDatagrams(others []*New) error {
	to := sockaddr(n.Rec.Family, n.Rec.Local)
	if !n.Rec.Local.Addr().IsUnspecified() {
		// sent to the address it is bound to
	} else if n.Rec.Family == unix.AF_INET {
		to = &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: int(n.Rec.Local.Port())}
	} else {
		to = &unix.SockaddrInet6{Addr: netip.IPv6Loopback().As16(), Port: int(n.Rec.Local.Port())}
	}
	for i, d := range n.Rec.Datagrams {
		if err := sendFrom(d.From, to, n.Datagrams[i], others); err != nil {
			return fmt.Errorf("datagram %d from %s: %w", i, d.From, err)
		}
	}
	n.Datagrams = nil
	return nil
}

func sendFrom(from netip.AddrPort, to unix.Sockaddr, data []byte, others []*New) error {
	for _, o := range others {
		if o.Rec.Type == unix.SOCK_DGRAM && o.Rec.Local.Port() == from.Port() && o.Rec.Local.Addr().Unmap() == from.Addr().Unmap() {
			return os.NewSyscallError("sendto", unix.Sendto(int(o.File.Fd()), data, unix.MSG_DONTWAIT, to))
		}
	}
	family := unix.AF_INET6
	if _, ok := to.(*unix.SockaddrInet4); ok {
		family = unix.AF_INET
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, sockaddr(family, from)); err != nil {
		return fmt.Errorf("send from %s: %w (is the sender's port taken by a socket without SO_REUSEADDR?)", from, os.NewSyscallError("bind", err))
	}
	return os.NewSyscallError("sendto", unix.Sendto(fd, data, unix.MSG_DONTWAIT, to))
}

// Resume ends repair mode, the last step before the processes run:
// TCP_REPAIR_OFF sends a window probe, so the peer answers at once; the
// unsent part of the send queue, which the peer never saw, is then sent
// as ordinary data (as CRIU's soccr does); SO_REUSEADDR, which leaving
// repair mode clears, is set again. flags are the file status flags
// (O_NONBLOCK) of its open file description.
func (n *New) Resume(flags int) error {
	fd := int(n.File.Fd())
	if n.repair {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
			return n.errorf("leave repair mode: %w", os.NewSyscallError("setsockopt(TCP_REPAIR)", err))
		}
		n.repair = false
		if u := n.Rec.Repair.Unsent; u > 0 {
			if err := sendAll(fd, n.SendQ[len(n.SendQ)-int(u):]); err != nil {
				return n.errorf("unsent data: %w", err)
			}
		}
		if n.Rec.Options.ReuseAddr {
			if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
				return n.errorf("%w", os.NewSyscallError("setsockopt(SO_REUSEADDR)", err))
			}
		}
	}
	const settable = unix.O_APPEND | unix.O_ASYNC | unix.O_NONBLOCK
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags&settable); err != nil {
		return n.errorf("%w", os.NewSyscallError("fcntl(F_SETFL)", err))
	}
	return nil
}

// Close closes chpox's socket; the processes keep theirs.
func (n *New) Close() { n.File.Close() }
