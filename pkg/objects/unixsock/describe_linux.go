package unixsock

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
)

// ErrRefused marks a socket whose state chpox cannot carry: dump refuses
// it by name rather than restore a half-working socket.
var ErrRefused = errors.New("which chpox cannot carry")

// maxQueue bounds what dump reads of one receive queue.
const maxQueue = 1 << 30

// Message is one datagram or record of a receive queue as dump read it.
type Message struct {
	Len int
	// From is the sender's bound name as sun_path holds it (a leading
	// NUL for an abstract name), "" for an unnamed sender.
	From string
}

// Describe returns the record (IDs and references left to the caller),
// the unread bytes and, for datagram and seqpacket, the messages of the
// UNIX socket that pid holds at fd, which the kernel described as d.
func Describe(pid, fd int, d *Diag) (format.UnixSocket, []byte, []Message, error) {
	rec := format.UnixSocket{Inode: uint64(d.Ino), Type: d.Type, Shutdown: d.Shutdown}
	if d.Name != "" {
		rec.Name, rec.Abstract = d.Name, d.Name[0] == 0
		if rec.Abstract {
			rec.Name = d.Name[1:]
		}
		if !utf8.ValidString(rec.Name) {
			return rec, nil, nil, fmt.Errorf("bound to the name %q, which is not UTF-8 text, %w", rec.Name, ErrRefused)
		}
		if !rec.Abstract && !filepath.IsAbs(rec.Name) {
			return rec, nil, nil, fmt.Errorf("bound to the relative path %q, %w", rec.Name, ErrRefused)
		}
	}
	if !rec.Abstract && d.HasVFS {
		var st unix.Stat_t
		if err := unix.Lstat(rec.Name, &st); err == nil && st.Ino == uint64(d.VFSIno) && st.Mode&unix.S_IFMT == unix.S_IFSOCK {
			rec.Mode = st.Mode & 0o7777
		} else {
			rec.Unlinked = true
		}
	}
	if d.State == stateListen {
		rec.Listening, rec.Backlog = true, int(d.WQueue)
	}
	cp, err := objects.Dup(pid, fd)
	if err != nil {
		return rec, nil, nil, err
	}
	defer cp.Close()
	s := int(cp.Fd())
	if rec.Options, err = options(s); err != nil {
		return rec, nil, nil, err
	}
	if rec.Listening || d.Type != unix.SOCK_DGRAM && d.State != stateEstablished {
		// An unconnected stream socket has no queue to read (recvmsg
		// fails with EINVAL, net/unix/af_unix.c unix_stream_read_generic).
		return rec, nil, nil, nil
	}
	data, msgs, err := peekQueue(s, d.Type, rec.Options.PeekOff)
	return rec, data, msgs, err
}

func options(s int) (format.UnixOptions, error) {
	var o format.UnixOptions
	ints := []struct {
		opt int
		to  *int
	}{{unix.SO_SNDBUF, &o.SndBuf}, {unix.SO_RCVBUF, &o.RcvBuf}, {unix.SO_PEEK_OFF, &o.PeekOff}}
	for _, x := range ints {
		v, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, x.opt)
		if err != nil {
			return o, os.NewSyscallError(fmt.Sprintf("getsockopt(%d)", x.opt), err)
		}
		*x.to = v
	}
	bools := []struct {
		opt int
		to  *bool
	}{{unix.SO_PASSCRED, &o.PassCred}, {unix.SO_PASSSEC, &o.PassSec}, {unix.SO_REUSEADDR, &o.ReuseAddr}, {unix.SO_KEEPALIVE, &o.KeepAlive}}
	for _, x := range bools {
		v, err := unix.GetsockoptInt(s, unix.SOL_SOCKET, x.opt)
		if err != nil {
			return o, os.NewSyscallError(fmt.Sprintf("getsockopt(%d)", x.opt), err)
		}
		*x.to = v != 0
	}
	l, err := unix.GetsockoptLinger(s, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		return o, os.NewSyscallError("getsockopt(SO_LINGER)", err)
	}
	o.Linger, o.LingerSec = l.Onoff != 0, int(l.Linger)
	for _, x := range []struct {
		opt int
		to  *int64
	}{{unix.SO_RCVTIMEO, &o.RcvTimeo}, {unix.SO_SNDTIMEO, &o.SndTimeo}} {
		tv, err := unix.GetsockoptTimeval(s, unix.SOL_SOCKET, x.opt)
		if err != nil {
			return o, os.NewSyscallError("getsockopt(SO_RCVTIMEO/SO_SNDTIMEO)", err)
		}
		*x.to = tv.Sec*1e6 + tv.Usec
	}
	return o, nil
}

// peekQueue reads the receive queue of socket s without dequeuing it:
// MSG_PEEK from an SO_PEEK_OFF that walks the queue (for datagrams one
// message per call, net/core/datagram.c __skb_try_recv_from_queue skips
// the bytes before the offset). The copy shares the struct sock with the
// process, so the process's own peek offset (orig) is put back.
func peekQueue(s, typ, orig int) ([]byte, []Message, error) {
	if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PEEK_OFF, 0); err != nil {
		return nil, nil, os.NewSyscallError("setsockopt(SO_PEEK_OFF)", err)
	}
	defer unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PEEK_OFF, orig)
	var data []byte
	var msgs []Message
	buf := make([]byte, 256<<10)
	oob := make([]byte, unix.CmsgSpace(253*4)+unix.CmsgSpace(64))
	for {
		flags := unix.MSG_PEEK | unix.MSG_DONTWAIT | unix.MSG_CMSG_CLOEXEC
		if typ != unix.SOCK_STREAM {
			flags |= unix.MSG_TRUNC // n is the whole message's length
		}
		n, oobn, rflags, from, err := unix.Recvmsg(s, buf, oob, flags)
		if err == unix.EAGAIN || err == unix.ECONNRESET || (err == nil && n == 0 && typ == unix.SOCK_STREAM) {
			return data, msgs, nil
		}
		if err != nil {
			return nil, nil, os.NewSyscallError("recvmsg(MSG_PEEK)", err)
		}
		if err := inFlight(oob[:oobn], rflags); err != nil {
			return nil, nil, err
		}
		if n > len(buf) {
			// Truncated: the offset moved by what was copied; go back
			// and read the message again into a buffer that holds it.
			if err := unix.SetsockoptInt(s, unix.SOL_SOCKET, unix.SO_PEEK_OFF, len(data)); err != nil {
				return nil, nil, os.NewSyscallError("setsockopt(SO_PEEK_OFF)", err)
			}
			buf = make([]byte, n)
			continue
		}
		if len(data)+n > maxQueue {
			return nil, nil, fmt.Errorf("with a receive queue of more than %d bytes, %w", maxQueue, ErrRefused)
		}
		data = append(data, buf[:n]...)
		if typ != unix.SOCK_STREAM {
			msgs = append(msgs, Message{Len: n, From: sockName(from)})
		}
	}
}

// inFlight refuses a message that carries descriptors or credentials:
// restore could not give them back as they were. Descriptors the peek
// installed in chpox are closed.
func inFlight(oob []byte, flags int) error {
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return fmt.Errorf("parse control messages: %w", err)
	}
	for _, c := range cmsgs {
		if c.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch c.Header.Type {
		case unix.SCM_RIGHTS:
			fds, _ := unix.ParseUnixRights(&c)
			for _, fd := range fds {
				unix.Close(fd)
			}
			return fmt.Errorf("with descriptors in flight (SCM_RIGHTS in its receive queue), %w", ErrRefused)
		case unix.SCM_CREDENTIALS:
			return fmt.Errorf("with credentials in flight (SO_PASSCRED with unread data), %w", ErrRefused)
		}
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return fmt.Errorf("with descriptors in flight (more than fit a control message), %w", ErrRefused)
	}
	return nil
}

// sockName gives a sender's address as sun_path holds it.
func sockName(sa unix.Sockaddr) string {
	su, ok := sa.(*unix.SockaddrUnix)
	if !ok || su.Name == "" {
		return ""
	}
	if strings.HasPrefix(su.Name, "@") { // x/sys/unix writes an abstract name's NUL as '@'
		return "\x00" + su.Name[1:]
	}
	return su.Name
}
