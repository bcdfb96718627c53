package unixsock

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// Sock is one UNIX socket created again in chpox.
type Sock struct {
	format.UnixSocket
	// Data receives the saved receive queue from the data section.
	Data []byte
	f    *os.File
	// partner is a temporary other end for a socket whose peer was
	// closed: it sends the queue, then is closed like the peer was.
	partner    *os.File
	uid, gid   int
	flags      int  // file status flags of the description
	hasFlags   bool // flags were set by SetFlags
	connectLag bool // a datagram connect that waits until the queues are filled
}

// Set is every UNIX socket of an image.
type Set struct {
	socks map[int]*Sock
	order []*Sock
}

// Owner returns the fs ids of a process that holds socket id: a socket
// file is created with them.
type Owner func(id int) (uid, gid int)

// Create makes every socket of recs in chpox, bound, listening and
// connected (streams and pairs); queues come with Fill.
func Create(recs []format.UnixSocket, owner Owner) (*Set, error) {
	s := &Set{socks: map[int]*Sock{}}
	for _, r := range recs {
		k := &Sock{UnixSocket: r}
		k.uid, k.gid = owner(r.ID)
		s.socks[r.ID] = k
		s.order = append(s.order, k)
	}
	if err := s.create(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Set) create() error {
	// Pairs and lone sockets first; an accepted connection and its peer
	// come from their listener once it listens.
	for _, k := range s.order {
		if k.f != nil || k.Listener != 0 || s.acceptedPeer(k) {
			continue
		}
		p := s.socks[k.Peer]
		switch {
		case p != nil && p.Peer == k.ID:
			a, b, err := pair(k.Type)
			if err != nil {
				return fmt.Errorf("unix socket %d: %w", k.ID, err)
			}
			k.f, p.f = a, b
		case k.PeerClosed:
			a, b, err := pair(k.Type)
			if err != nil {
				return fmt.Errorf("unix socket %d: %w", k.ID, err)
			}
			k.f, k.partner = a, b
		default:
			fd, err := unix.Socket(unix.AF_UNIX, k.Type|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return fmt.Errorf("unix socket %d: %w", k.ID, os.NewSyscallError("socket", err))
			}
			k.f = os.NewFile(uintptr(fd), "unix")
			k.connectLag = p != nil || k.PeerName != ""
		}
	}
	for _, k := range s.order {
		if k.f != nil && k.Name != "" {
			if err := k.bind(); err != nil {
				return err
			}
		}
	}
	for _, k := range s.order {
		if k.Listening {
			if err := unix.Listen(int(k.f.Fd()), k.Backlog); err != nil {
				return fmt.Errorf("unix socket %d: %w", k.ID, os.NewSyscallError("listen", err))
			}
		}
	}
	// Accepted connections: the peer connects to the listener, which
	// accepts at once (one at a time, whatever the backlog).
	for _, k := range s.order {
		if k.Listener == 0 {
			continue
		}
		l, p := s.socks[k.Listener], s.socks[k.Peer]
		fd, err := unix.Socket(unix.AF_UNIX, k.Type|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("unix socket %d: %w", p.ID, os.NewSyscallError("socket", err))
		}
		p.f = os.NewFile(uintptr(fd), "unix")
		if p.Name != "" {
			if err := p.bind(); err != nil {
				return err
			}
		}
		if err := unix.Connect(fd, l.addr()); err != nil {
			return fmt.Errorf("unix socket %d: connect to %s: %w", p.ID, l.show(), os.NewSyscallError("connect", err))
		}
		nfd, _, err := unix.Accept4(int(l.f.Fd()), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
		if err != nil {
			return fmt.Errorf("unix socket %d: accept on %s: %w", k.ID, l.show(), os.NewSyscallError("accept4", err))
		}
		k.f = os.NewFile(uintptr(nfd), "unix")
	}
	// Connections that wait in a backlog, in their order.
	for _, l := range s.order {
		for _, c := range l.Pending {
			if err := unix.Connect(int(s.socks[c].f.Fd()), l.addr()); err != nil {
				return fmt.Errorf("unix socket %d: connect to %s: %w", c, l.show(), os.NewSyscallError("connect", err))
			}
		}
	}
	return nil
}

// acceptedPeer tells whether k is the other end of an accepted connection.
func (s *Set) acceptedPeer(k *Sock) bool {
	p := s.socks[k.Peer]
	return p != nil && p.Listener != 0 && p.Peer == k.ID
}

func pair(typ int) (*os.File, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(fds[0]), "unix"), os.NewFile(uintptr(fds[1]), "unix"), nil
}

func (k *Sock) addr() *unix.SockaddrUnix {
	if k.Abstract {
		return &unix.SockaddrUnix{Name: "@" + k.Name}
	}
	return &unix.SockaddrUnix{Name: k.Name}
}

func (k *Sock) show() string {
	if k.Abstract {
		return "@" + k.Name
	}
	return k.Name
}

// bind gives k its name. A path's socket file left by the dumped process
// (a socket file outlives its socket) is replaced; anything else there is
// not. The new file gets the owner's fs ids and the saved mode.
func (k *Sock) bind() error {
	if !k.Abstract {
		var st unix.Stat_t
		if err := unix.Lstat(k.Name, &st); err == nil {
			if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
				return fmt.Errorf("unix socket %d: bind %s: %w", k.ID, k.Name, ErrNotSocket)
			}
			if err := unix.Unlink(k.Name); err != nil {
				return fmt.Errorf("unix socket %d: remove the old socket file %s: %w", k.ID, k.Name, err)
			}
		}
	}
	if err := unix.Bind(int(k.f.Fd()), k.addr()); err != nil {
		return fmt.Errorf("unix socket %d: bind %s: %w", k.ID, k.show(), os.NewSyscallError("bind", err))
	}
	if k.Abstract {
		return nil
	}
	if err := os.Lchown(k.Name, k.uid, k.gid); err != nil {
		return fmt.Errorf("unix socket %d: %w", k.ID, err)
	}
	if k.Mode != 0 {
		if err := unix.Fchmodat(unix.AT_FDCWD, k.Name, k.Mode, 0); err != nil {
			return fmt.Errorf("unix socket %d: chmod %s: %w", k.ID, k.Name, err)
		}
	}
	return nil
}

// ErrNotSocket reports a socket's path that now holds something else.
var ErrNotSocket = errors.New("the path exists and is not a socket file")

// Queue is where the data section delivers socket id's saved queue.
func (s *Set) Queue(id int) *[]byte { return &s.socks[id].Data }

// File returns chpox's file of socket id, nil if the image lacks it.
func (s *Set) File(id int) *os.File {
	if k := s.socks[id]; k != nil {
		return k.f
	}
	return nil
}

// SetFlags records the file status flags (O_NONBLOCK ...) socket id's
// description gets once its queue is filled (chpox fills without blocking).
func (s *Set) SetFlags(id, flags int) {
	if k := s.socks[id]; k != nil {
		k.flags, k.hasFlags = flags, true
	}
}

// Fill sends every saved queue again from the peer end, then finishes
// the sockets: datagram connects, options, shutdown, unlinked paths,
// file status flags.
func (s *Set) Fill() error {
	for _, k := range s.order {
		if err := s.fill(k); err != nil {
			return fmt.Errorf("unix socket %d: refill the receive queue: %w", k.ID, err)
		}
	}
	for _, k := range s.order {
		if err := s.finish(k); err != nil {
			return fmt.Errorf("unix socket %d: %w", k.ID, err)
		}
	}
	// Once every connect is done: a path that was removed while its
	// socket was open is removed again.
	for _, k := range s.order {
		if k.Unlinked && k.Name != "" && !k.Abstract && k.Listener == 0 {
			if err := unix.Unlink(k.Name); err != nil {
				return fmt.Errorf("unix socket %d: unlink %s again: %w", k.ID, k.Name, err)
			}
		}
	}
	return nil
}

func (s *Set) fill(k *Sock) error {
	if len(k.Data) == 0 && len(k.Messages) == 0 {
		return nil
	}
	peer := s.socks[k.Peer]
	if k.Type == unix.SOCK_STREAM {
		from := k.partner
		if peer != nil {
			from = peer.f
		}
		if from == nil {
			return errors.New("no end to send it from")
		}
		return sendAll(from, k.Data, nil)
	}
	data := k.Data
	for _, m := range k.Messages {
		if m.Len > len(data) {
			return errors.New("messages beyond the saved bytes")
		}
		msg := data[:m.Len]
		data = data[m.Len:]
		var err error
		switch sender := s.socks[m.Sender]; {
		case sender != nil && sender.Peer == k.ID && (sender.Type != unix.SOCK_DGRAM || !sender.connectLag):
			err = sendAll(sender.f, msg, nil) // connected to k already
		case sender != nil && k.Name != "":
			err = sendAll(sender.f, msg, k.addr())
		case sender == nil && k.partner != nil:
			err = sendAll(k.partner, msg, nil)
		case sender == nil && k.Name != "":
			err = sendAnon(k.Type, msg, k.addr())
		default:
			err = fmt.Errorf("no way to send a message from socket %d again", m.Sender)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// sendAll sends b from f (to to, if not nil) without blocking; a sender
// whose buffer is too small for the saved queue gets a larger one for
// the time of the fill (finish sets the saved size).
func sendAll(f *os.File, b []byte, to unix.Sockaddr) error {
	fd := int(f.Fd())
	typ, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	for grown := false; ; {
		n, err := unix.SendmsgN(fd, b, nil, to, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL)
		if err == nil && (typ != unix.SOCK_STREAM || n == len(b)) {
			return nil
		}
		if err == nil {
			b = b[n:]
			continue
		}
		if (err != unix.EAGAIN && err != unix.EMSGSIZE) || grown {
			return os.NewSyscallError("sendmsg", err)
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 2*len(b)+(1<<20)); err != nil {
			return os.NewSyscallError("setsockopt(SO_SNDBUFFORCE)", err)
		}
		grown = true
	}
}

// sendAnon sends a message from an unnamed sender that is gone.
func sendAnon(typ int, b []byte, to unix.Sockaddr) error {
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("socket", err)
	}
	f := os.NewFile(uintptr(fd), "unix")
	defer f.Close()
	return sendAll(f, b, to)
}

func (s *Set) finish(k *Sock) error {
	fd := int(k.f.Fd())
	if k.connectLag {
		to := &unix.SockaddrUnix{Name: k.PeerName}
		if k.PeerAbstract {
			to.Name = "@" + k.PeerName
		}
		if p := s.socks[k.Peer]; p != nil {
			to = p.addr()
		}
		if err := unix.Connect(fd, to); err != nil {
			return fmt.Errorf("connect to %s: %w", to.Name, os.NewSyscallError("connect", err))
		}
	}
	if err := setOptions(fd, k.Options); err != nil {
		return err
	}
	if k.partner != nil {
		// The peer was closed: close ours, which shuts k down as then.
		k.partner.Close()
		k.partner = nil
	}
	if how := k.Shutdown; how != 0 {
		// sk_shutdown bits: 1 receive, 2 send (include/net/sock.h)
		mode := map[int]int{1: unix.SHUT_RD, 2: unix.SHUT_WR, 3: unix.SHUT_RDWR}[how]
		if err := unix.Shutdown(fd, mode); err != nil && err != unix.ENOTCONN {
			return os.NewSyscallError("shutdown", err)
		}
	}
	if k.hasFlags {
		const settable = unix.O_APPEND | unix.O_ASYNC | unix.O_NONBLOCK
		if _, err := unix.FcntlInt(k.f.Fd(), unix.F_SETFL, k.flags&settable); err != nil {
			return os.NewSyscallError("fcntl(F_SETFL)", err)
		}
	}
	return nil
}

func setOptions(fd int, o format.UnixOptions) error {
	set := func(name string, opt, v int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, v); err != nil {
			return os.NewSyscallError("setsockopt("+name+")", err)
		}
		return nil
	}
	// getsockopt reports twice what was set (net/core/sock.c
	// sk_setsockopt); FORCE keeps sizes above the sysctl limits.
	for _, b := range []struct {
		force, plain int
		v            int
		name         string
	}{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, o.SndBuf, "SO_SNDBUF"}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, o.RcvBuf, "SO_RCVBUF"}} {
		if b.v == 0 {
			continue
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, b.force, b.v/2); err != nil {
			if err := set(b.name, b.plain, b.v/2); err != nil {
				return err
			}
		}
	}
	b2i := func(b bool) int {
		if b {
			return 1
		}
		return 0
	}
	for _, x := range []struct {
		name string
		opt  int
		v    bool
	}{{"SO_PASSCRED", unix.SO_PASSCRED, o.PassCred}, {"SO_PASSSEC", unix.SO_PASSSEC, o.PassSec},
		{"SO_REUSEADDR", unix.SO_REUSEADDR, o.ReuseAddr}, {"SO_KEEPALIVE", unix.SO_KEEPALIVE, o.KeepAlive}} {
		if x.v {
			if err := set(x.name, x.opt, b2i(x.v)); err != nil {
				return err
			}
		}
	}
	if o.Linger {
		l := &unix.Linger{Onoff: 1, Linger: int32(o.LingerSec)}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, l); err != nil {
			return os.NewSyscallError("setsockopt(SO_LINGER)", err)
		}
	}
	for _, t := range []struct {
		opt int
		us  int64
	}{{unix.SO_RCVTIMEO, o.RcvTimeo}, {unix.SO_SNDTIMEO, o.SndTimeo}} {
		if t.us != 0 {
			tv := unix.NsecToTimeval(t.us * 1000)
			if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, t.opt, &tv); err != nil {
				return os.NewSyscallError("setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)", err)
			}
		}
	}
	return set("SO_PEEK_OFF", unix.SO_PEEK_OFF, o.PeekOff)
}

// Close closes chpox's sockets; the processes keep theirs.
func (s *Set) Close() {
	for _, k := range s.order {
		if k.f != nil {
			k.f.Close()
		}
		if k.partner != nil {
			k.partner.Close()
		}
	}
}
