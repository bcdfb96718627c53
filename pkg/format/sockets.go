package format

// UnixSocket is one UNIX domain socket (stream, datagram or seqpacket),
// saved once however many fds share it. A socket has one open file
// description (it cannot be reopened by path), so one Desc.
type UnixSocket struct {
	ID    int    `json:"id"`
	Inode uint64 `json:"inode"`
	// Type is SOCK_STREAM (1), SOCK_DGRAM (2) or SOCK_SEQPACKET (5).
	Type int `json:"type"`
	// Name is the address the socket is bound to: a path, or with
	// Abstract the bytes of an abstract name after its leading NUL. An
	// accepted connection carries its listener's name.
	Name     string `json:"name,omitempty"`
	Abstract bool   `json:"abstract,omitempty"`
	// Mode holds the permission bits of a path-bound socket's file;
	// Unlinked says the file was removed while the socket was open
	// (restore binds, then unlinks the path again).
	Mode     uint32 `json:"mode,omitempty"`
	Unlinked bool   `json:"unlinked,omitempty"`
	// Listening sockets keep their backlog (listen(2)) and the
	// connections that wait to be accepted, in order: Pending are the
	// IDs of the connecting sockets (in the checkpoint).
	Listening bool  `json:"listening,omitempty"`
	Backlog   int   `json:"backlog,omitempty"`
	Pending   []int `json:"pending,omitempty"`
	// Peer is the ID of the socket this one is connected to, 0 if none
	// in the checkpoint. Listener is the ID of the listening socket this
	// one was accepted from: restore connects Peer to it and accepts, so
	// the name comes back as the kernel gives it.
	Peer     int `json:"peer,omitempty"`
	Listener int `json:"listener,omitempty"`
	// PeerName is the address a datagram socket is connected to outside
	// the checkpoint (e.g. /dev/log); restore connects it again by name.
	PeerName     string `json:"peer_name,omitempty"`
	PeerAbstract bool   `json:"peer_abstract,omitempty"`
	// PeerClosed: a stream or seqpacket socket whose peer was closed
	// (it reads what is left, then end of file).
	PeerClosed bool `json:"peer_closed,omitempty"`
	// Shutdown is the socket's sk_shutdown: 1 receive side shut, 2 send
	// side shut (net/unix/diag.c UNIX_DIAG_SHUTDOWN).
	Shutdown int         `json:"shutdown,omitempty"`
	Options  UnixOptions `json:"options"`
	// Queue holds the unread bytes of the receive queue in the data
	// section; Messages cuts them into datagrams or records (datagram and
	// seqpacket), in queue order.
	Queue    []DataRun     `json:"queue,omitempty"`
	Messages []UnixMessage `json:"messages,omitempty"`
}

// UnixOptions are the socket options chpox keeps.
type UnixOptions struct {
	SndBuf    int  `json:"sndbuf"` // as getsockopt reports it (the kernel doubles what was set)
	RcvBuf    int  `json:"rcvbuf"`
	PassCred  bool `json:"passcred,omitempty"`
	PassSec   bool `json:"passsec,omitempty"`
	ReuseAddr bool `json:"reuseaddr,omitempty"`
	KeepAlive bool `json:"keepalive,omitempty"`
	Linger    bool `json:"linger,omitempty"`
	LingerSec int  `json:"linger_sec,omitempty"`
	// RcvTimeo and SndTimeo in microseconds, 0 for none.
	RcvTimeo int64 `json:"rcvtimeo_us,omitempty"`
	SndTimeo int64 `json:"sndtimeo_us,omitempty"`
	PeekOff  int   `json:"peek_off"` // -1: off
}

// UnixMessage is one datagram or record of a receive queue.
type UnixMessage struct {
	Len int `json:"len"`
	// Sender is the ID of the socket that sent it (restore sends it
	// again from there), 0 for an unnamed sender that is not the peer.
	Sender int `json:"sender,omitempty"`
}

// InetSocket is one TCP or UDP socket over IPv4 or IPv6.
type InetSocket struct {
	ID    int    `json:"id"`
	Inode uint64 `json:"inode"`
}

// External is a descriptor whose object stays outside the checkpoint: its
// other end belongs to a process that is not dumped. Restore connects it to
// a descriptor of its own (stdin, stdout and stderr by default) or to one the
// user names.
type External struct {
	ID int `json:"id"`
	// Key names the object for the user (`chpox inspect`, `chpox
	// restore --external KEY=...`): the fd link target, "pipe:[INODE]",
	// "socket:[INODE]".
	Key string `json:"key"`
	// What says what it is, for messages: "pipe", "unix stream socket" ...
	What string `json:"what"`
	// Peer is a process outside the checkpoint that held the other end
	// at dump time, 0 if unknown (informational).
	Peer int `json:"peer,omitempty"`
	// SockType is the socket type (SOCK_STREAM ...) of an external
	// socket, for the stand-in restore makes when asked for a closed one.
	SockType int `json:"sock_type,omitempty"`
}
