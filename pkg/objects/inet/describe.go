// Package inet checkpoints TCP and UDP sockets over IPv4 and IPv6: how a
// socket is described at dump (from a pidfd_getfd(2) copy: addresses,
// options, TCP repair state, queued bytes and datagrams) and how it is
// created again at restore, side by side.
//
// An established TCP connection is read and rebuilt in TCP repair mode
// (net/ipv4/tcp.c, do_tcp_setsockopt TCP_REPAIR*): its sequence numbers,
// negotiated options, window and both queues come back exactly, connect(2)
// sends no SYN, and the peer sees only a pause. This package must not leave
// a live process's socket in repair mode after a dump that lets it run, and
// must not touch the packet filter: the network lock is pkg/netlock's.
package inet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
	"github.com/chpox/chpox/pkg/procinfo"
)

// From include/uapi/linux/tcp.h and include/net/tcp_states.h, which
// x/sys/unix lacks.
const (
	tcpRepairWindow = 29 // TCP_REPAIR_WINDOW
	tcpNoQueue      = 0  // TCP_NO_QUEUE
	tcpRecvQueue    = 1  // TCP_RECV_QUEUE
	tcpSendQueue    = 2  // TCP_SEND_QUEUE

	optTimestamps = 1 // TCPI_OPT_TIMESTAMPS
	optSACK       = 2 // TCPI_OPT_SACK
	optWscale     = 4 // TCPI_OPT_WSCALE

	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

var tcpStates = map[int]string{1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
	6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING", 12: "NEW_SYN_RECV"}

// ErrUnsupported is returned (wrapped) for sockets chpox cannot rebuild.
var ErrUnsupported = procinfo.ErrUnsupported

// ErrAcceptQueue reports a listener with connections not yet accepted: a
// moment later the program has usually taken them (pkg/dump tries again).
var ErrAcceptQueue = errors.New("the accept queue is not empty")

// Socket is a TCP or UDP socket being checkpointed: chpox's copy of the
// process's socket and its record. Save fills the queues.
type Socket struct {
	Rec format.InetSocket
	// Queued bytes for the data section: the TCP send and receive queues,
	// and each datagram's payload.
	SendQ, RecvQ []byte
	Datagrams    [][]byte

	pid, fd int
	cp      *os.File
	repair  bool // the socket is in repair mode, set by Save
}

// Open describes the socket pid holds at fd: family, protocol, addresses,
// state and options. States chpox cannot rebuild are refused here, before
// anything is changed.
func Open(pid, fd int) (*Socket, error) {
	cp, err := objects.Dup(pid, fd)
	if err != nil {
		return nil, err
	}
	s := &Socket{pid: pid, fd: fd, cp: cp}
	if err := s.describe(); err != nil {
		cp.Close()
		return nil, fmt.Errorf("pid %d: fd %d: %w", pid, fd, err)
	}
	return s, nil
}

func (s *Socket) sock() int { return int(s.cp.Fd()) }

// File is chpox's copy of the socket.
func (s *Socket) File() *os.File { return s.cp }

// PID is the process that holds the socket.
func (s *Socket) PID() int { return s.pid }

func (s *Socket) describe() error {
	fd := s.sock()
	r := &s.Rec
	var err error
	if r.Family, r.Type, err = objects.SocketFamily(s.cp); err != nil {
		return err
	}
	if r.Protocol, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil {
		return os.NewSyscallError("getsockopt(SO_PROTOCOL)", err)
	}
	what := objects.FamilyName(r.Family) + " " + objects.TypeName(r.Type)
	tcp := r.Type == unix.SOCK_STREAM && r.Protocol == unix.IPPROTO_TCP
	udp := r.Type == unix.SOCK_DGRAM && r.Protocol == unix.IPPROTO_UDP
	if r.Protocol == unix.IPPROTO_MPTCP {
		return fmt.Errorf("an %s MPTCP socket, which chpox cannot checkpoint (TCP repair mode does not exist for MPTCP; Go programs since Go 1.24 listen with MPTCP by default: run them with GODEBUG=multipathtcp=0): %w", what, ErrUnsupported)
	}
	if !tcp && !udp {
		return fmt.Errorf("an %s socket of protocol %d (SCTP, UDP-Lite ...), which chpox cannot checkpoint: %w", what, r.Protocol, ErrUnsupported)
	}
	if sa, err := unix.Getsockname(fd); err == nil {
		r.Local = addrPort(sa)
	}
	if sa, err := unix.Getpeername(fd); err == nil {
		r.Peer = addrPort(sa)
	}
	if err := s.options(tcp); err != nil {
		return err
	}
	bound := r.Local.Port() != 0
	if udp {
		switch {
		case r.Peer.IsValid() && r.Peer.Port() != 0:
			r.State = format.InetConnected
		case bound:
			r.State = format.InetBound
		default:
			r.State = format.InetUnbound
		}
		return nil
	}
	info, err := objects.GetsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_INFO, 104)
	if err != nil {
		return err
	}
	state := int(info[0])
	switch state {
	case tcpListen:
		// tcp_get_info: for a listener tcpi_unacked is the accept queue,
		// tcpi_sacked the backlog (net/ipv4/tcp.c).
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return os.NewSyscallError("getsockopt(TCP_INFO)", err)
		}
		if ti.Unacked > 0 {
			return fmt.Errorf("a TCP socket listening on %s has %d connections waiting to be accepted, which would be lost: %w: %w", r.Local, ti.Unacked, ErrAcceptQueue, ErrUnsupported)
		}
		r.State, r.Backlog = format.InetListen, int(ti.Sacked)
	case tcpEstablished:
		r.State = format.InetEstablished
	case tcpClose:
		r.State = format.InetUnbound
		if bound {
			r.State = format.InetBound
		}
		r.Peer = netip.AddrPort{}
	default:
		return fmt.Errorf("a TCP connection %s -> %s in state %s, which chpox cannot checkpoint (only LISTEN, ESTABLISHED and unconnected sockets; dump again once the connection is set up or closed): %w",
			r.Local, r.Peer, tcpStates[state], ErrUnsupported)
	}
	return nil
}

func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return netip.AddrPort{}
}

// options reads the options kept; before repair mode, which overrides
// SO_REUSEADDR (sk_reuse = SK_FORCE_REUSE).
func (s *Socket) options(tcp bool) error {
	fd := s.sock()
	o := &s.Rec.Options
	flag := func(level, opt int, name string, to *bool) error {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			return os.NewSyscallError("getsockopt("+name+")", err)
		}
		*to = v != 0
		return nil
	}
	num := func(level, opt int, name string, to *int) error {
		v, err := unix.GetsockoptInt(fd, level, opt)
		if err != nil {
			return os.NewSyscallError("getsockopt("+name+")", err)
		}
		*to = v
		return nil
	}
	errs := []error{
		flag(unix.SOL_SOCKET, unix.SO_REUSEADDR, "SO_REUSEADDR", &o.ReuseAddr),
		flag(unix.SOL_SOCKET, unix.SO_REUSEPORT, "SO_REUSEPORT", &o.ReusePort),
		flag(unix.SOL_SOCKET, unix.SO_KEEPALIVE, "SO_KEEPALIVE", &o.KeepAlive),
	}
	if s.Rec.Family == unix.AF_INET6 {
		errs = append(errs, flag(unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, "IPV6_V6ONLY", &o.V6Only))
	}
	if tcp {
		errs = append(errs, flag(unix.IPPROTO_TCP, unix.TCP_NODELAY, "TCP_NODELAY", &o.NoDelay),
			num(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", &o.KeepIdle),
			num(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", &o.KeepIntvl),
			num(unix.IPPROTO_TCP, unix.TCP_KEEPCNT, "TCP_KEEPCNT", &o.KeepCnt))
	}
	return errors.Join(errs...)
}

// Conn returns the connection's local and peer address, for the network
// lock; ok is false for sockets that are not established TCP connections.
func (s *Socket) Conn() (local, peer netip.AddrPort, ok bool) {
	return s.Rec.Local, s.Rec.Peer, s.Rec.State == format.InetEstablished
}

// Save reads the queues: an established connection's state in repair mode
// (left on if keepRepair, so that the connection closes silently when the
// process is killed), or a UDP socket's datagrams.
func (s *Socket) Save(keepRepair bool) error {
	var err error
	switch {
	case s.Rec.State == format.InetEstablished:
		err = s.saveTCP(keepRepair)
	case s.Rec.Type == unix.SOCK_DGRAM:
		err = s.saveDatagrams()
	}
	if err != nil {
		return fmt.Errorf("pid %d: fd %d: %w", s.pid, s.fd, err)
	}
	return nil
}

func (s *Socket) saveTCP(keepRepair bool) (err error) {
	fd := s.sock()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return fmt.Errorf("%s -> %s: %w (TCP repair mode needs CAP_NET_ADMIN)", s.Rec.Local, s.Rec.Peer, os.NewSyscallError("setsockopt(TCP_REPAIR)", err))
	}
	s.repair = true
	defer func() {
		unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpNoQueue)
		if err != nil || !keepRepair {
			err = errors.Join(err, s.LeaveRepair())
		}
	}()
	objects.CrashPoint("inet-repair")
	r := &format.TCPRepair{}
	if r.SendSeq, r.RecvSeq, err = s.seqs(); err != nil {
		return err
	}
	outq, err := ioctlInt(fd, unix.SIOCOUTQ)
	if err != nil {
		return err
	}
	unsent, err := ioctlInt(fd, unix.SIOCOUTQNSD)
	if err != nil {
		return err
	}
	inq, err := ioctlInt(fd, unix.SIOCINQ)
	if err != nil {
		return err
	}
	if s.SendQ, err = s.peekQueue(tcpSendQueue, outq); err != nil {
		return fmt.Errorf("send queue: %w", err)
	}
	if s.RecvQ, err = s.peekQueue(tcpRecvQueue, inq); err != nil {
		return fmt.Errorf("receive queue: %w", err)
	}
	r.Unsent = uint32(unsent)
	// In repair mode TCP_MAXSEG reports mss_clamp, what the peer allowed
	// (tcp_getsockopt).
	mss, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_MAXSEG)
	if err != nil {
		return os.NewSyscallError("getsockopt(TCP_MAXSEG)", err)
	}
	r.MSS = uint32(mss)
	info, err := objects.GetsockoptBytes(fd, unix.IPPROTO_TCP, unix.TCP_INFO, 104)
	if err != nil {
		return err
	}
	// struct tcp_info: byte 5 tcpi_options, byte 6 snd_wscale:4 rcv_wscale:4.
	r.Timestamps, r.SACK, r.Wscale = info[5]&optTimestamps != 0, info[5]&optSACK != 0, info[5]&optWscale != 0
	r.SndWscale, r.RcvWscale = info[6]&0xf, info[6]>>4
	if r.Timestamps {
		ts, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_TIMESTAMP)
		if err != nil {
			return os.NewSyscallError("getsockopt(TCP_TIMESTAMP)", err)
		}
		r.Timestamp = uint32(ts)
	}
	w, err := objects.GetsockoptBytes(fd, unix.IPPROTO_TCP, tcpRepairWindow, 20)
	if err != nil {
		return fmt.Errorf("TCP_REPAIR_WINDOW: %w", err)
	}
	r.Window = format.TCPWindow{SndWl1: le32(w[0:]), SndWnd: le32(w[4:]), MaxWindow: le32(w[8:]), RcvWnd: le32(w[12:]), RcvWup: le32(w[16:])}
	s.Rec.Repair = r
	return nil
}

func le32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// seqs reads write_seq and rcv_nxt (TCP_QUEUE_SEQ on each queue).
func (s *Socket) seqs() (snd, rcv uint32, err error) {
	fd := s.sock()
	for _, q := range []struct {
		queue int
		to    *uint32
	}{{tcpSendQueue, &snd}, {tcpRecvQueue, &rcv}} {
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, q.queue); err != nil {
			return 0, 0, os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err)
		}
		v, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ)
		if err != nil {
			return 0, 0, os.NewSyscallError("getsockopt(TCP_QUEUE_SEQ)", err)
		}
		*q.to = uint32(v)
	}
	return snd, rcv, nil
}

// peekQueue copies n bytes of a queue without consuming them: in repair
// mode MSG_PEEK reads the selected queue, the send queue included
// (tcp_recvmsg_locked → tcp_peek_sndq). A peek offset the program set
// (SO_PEEK_OFF) would shift the read: it is lifted meanwhile.
func (s *Socket) peekQueue(queue, n int) ([]byte, error) {
	if n == 0 {
		return nil, nil
	}
	fd := s.sock()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, queue); err != nil {
		return nil, os.NewSyscallError("setsockopt(TCP_REPAIR_QUEUE)", err)
	}
	off, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err == nil && off >= 0 {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, -1)
		defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, off)
	}
	buf := make([]byte, n)
	got, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	if err != nil {
		return nil, os.NewSyscallError("recv(MSG_PEEK)", err)
	}
	if got != n {
		return nil, fmt.Errorf("peeked %d of %d queued bytes", got, n)
	}
	return buf, nil
}

// LeaveRepair turns repair mode off again without a window probe
// (TCP_REPAIR_OFF_NO_WP: the connection goes on as if nothing happened) and
// gives back SO_REUSEADDR, which leaving repair mode resets (sk_reuse =
// SK_NO_REUSE in do_tcp_setsockopt).
func (s *Socket) LeaveRepair() error {
	if !s.repair {
		return nil
	}
	fd := s.sock()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
		return fmt.Errorf("pid %d: fd %d: leave repair mode: %w", s.pid, s.fd, os.NewSyscallError("setsockopt(TCP_REPAIR)", err))
	}
	s.repair = false
	if s.Rec.Options.ReuseAddr {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("pid %d: fd %d: %w", s.pid, s.fd, os.NewSyscallError("setsockopt(SO_REUSEADDR)", err))
		}
	}
	return nil
}

// saveDatagrams walks the receive queue without dequeuing anything: with
// SO_PEEK_OFF set, each MSG_PEEK starts where the last ended (UDP supports
// it since Linux 6.9); the program's own peek offset is put back after.
func (s *Socket) saveDatagrams() error {
	fd := s.sock()
	if n, err := ioctlInt(fd, unix.SIOCINQ); err != nil || n == 0 {
		return err // SIOCINQ: the size of the first datagram, 0 if none
	}
	prev, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF)
	if err != nil {
		return os.NewSyscallError("getsockopt(SO_PEEK_OFF)", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return fmt.Errorf("walk the datagram queue: %w", os.NewSyscallError("setsockopt(SO_PEEK_OFF)", err))
	}
	defer unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEEK_OFF, prev)
	buf := make([]byte, 65536)
	for len(s.Datagrams) <= 1<<16 {
		n, from, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil {
			return os.NewSyscallError("recvfrom(MSG_PEEK)", err)
		}
		if n == 0 {
			// The peek offset cannot step over an empty datagram.
			return fmt.Errorf("a UDP socket on %s holds an empty datagram, which chpox cannot keep: %w", s.Rec.Local, ErrUnsupported)
		}
		src := addrPort(from)
		if err := checkLocal(src); err != nil {
			return fmt.Errorf("a UDP socket on %s holds a datagram from %s: %w", s.Rec.Local, src, err)
		}
		s.Rec.Datagrams = append(s.Rec.Datagrams, format.Datagram{From: src})
		s.Datagrams = append(s.Datagrams, append([]byte(nil), buf[:n]...))
	}
	return fmt.Errorf("a UDP socket on %s holds more than %d datagrams: %w", s.Rec.Local, 1<<16, ErrUnsupported)
}

// checkLocal refuses a datagram source restore could not send from: restore
// re-injects a datagram from a socket bound to its source address, which
// must therefore be an address of this machine.
func checkLocal(src netip.AddrPort) error {
	a := src.Addr().Unmap()
	family := unix.AF_INET
	var sa unix.Sockaddr
	if a.Is6() {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: a.As16()}
	} else {
		sa = &unix.SockaddrInet4{Addr: a.As4()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("not an address of this machine (chpox keeps datagrams from local senders only; dump again once the program read them): %w", ErrUnsupported)
	}
	return nil
}

// Close releases chpox's copy (a socket left in repair mode stays so: the
// process's close is then silent).
func (s *Socket) Close() { s.cp.Close() }

func ioctlInt(fd int, req uint) (int, error) {
	v, err := unix.IoctlGetInt(fd, req)
	if err != nil {
		return 0, os.NewSyscallError("ioctl", err)
	}
	return v, nil
}
