package format

// UnixSocket is one UNIX domain socket (stream, datagram or seqpacket),
// saved once however many fds share it.
type UnixSocket struct {
	ID    int    `json:"id"`
	Inode uint64 `json:"inode"`
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
