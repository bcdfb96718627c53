package format

import "net/netip"

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

// InetSocket is one TCP or UDP socket over IPv4 or IPv6 (pkg/objects/inet),
// saved once however many fds share it.
type InetSocket struct {
	ID       int    `json:"id"`
	Inode    uint64 `json:"inode"`
	Family   int    `json:"family"`   // AF_INET or AF_INET6
	Type     int    `json:"type"`     // SOCK_STREAM or SOCK_DGRAM
	Protocol int    `json:"protocol"` // IPPROTO_TCP or IPPROTO_UDP
	// State is one of the Inet* states below.
	State string `json:"state"`
	// Local is the bound address (zero: never bound); Peer the connected
	// one (zero: not connected). An IPv6 socket may hold IPv4-mapped
	// addresses (dual stack).
	Local   netip.AddrPort `json:"local,omitzero"`
	Peer    netip.AddrPort `json:"peer,omitzero"`
	Backlog int            `json:"backlog,omitempty"` // listen(2) backlog
	Options InetOptions    `json:"options"`
	// Repair is the state of an established TCP connection, read in TCP
	// repair mode.
	Repair *TCPRepair `json:"repair,omitempty"`
	// Datagrams are a UDP socket's queued datagrams, oldest first.
	Datagrams []Datagram `json:"datagrams,omitempty"`
	// Outside tells an established connection whose peer is not in the
	// image (informational: the network lock covers it).
	Outside bool `json:"outside,omitempty"`
}

// States of an InetSocket.
const (
	InetUnbound     = "unbound"     // created, never bound (TCP CLOSE, UDP)
	InetBound       = "bound"       // bound, neither listening nor connected
	InetListen      = "listen"      // TCP LISTEN
	InetEstablished = "established" // TCP ESTABLISHED
	InetConnected   = "connected"   // UDP with a default peer
)

// InetOptions are the socket options chpox keeps.
type InetOptions struct {
	ReuseAddr bool `json:"reuseaddr,omitempty"`
	ReusePort bool `json:"reuseport,omitempty"`
	V6Only    bool `json:"v6only,omitempty"`
	KeepAlive bool `json:"keepalive,omitempty"`
	NoDelay   bool `json:"nodelay,omitempty"`
	KeepIdle  int  `json:"keepidle,omitempty"` // seconds
	KeepIntvl int  `json:"keepintvl,omitempty"`
	KeepCnt   int  `json:"keepcnt,omitempty"`
}

// TCPRepair is what TCP repair mode tells of an established connection and
// takes back at restore (include/uapi/linux/tcp.h, net/ipv4/tcp.c).
type TCPRepair struct {
	// SendSeq is the sequence number after the last byte queued for
	// sending (write_seq), RecvSeq the one after the last byte received
	// (rcv_nxt): TCP_QUEUE_SEQ with TCP_REPAIR_QUEUE on either queue.
	SendSeq uint32 `json:"send_seq"`
	RecvSeq uint32 `json:"recv_seq"`
	// SendQueue holds the bytes not yet acknowledged by the peer, from
	// snd_una to write_seq; its last Unsent bytes were never sent.
	SendQueue []DataRun `json:"send_queue,omitempty"`
	Unsent    uint32    `json:"unsent,omitempty"`
	// RecvQueue holds the bytes received and not yet read.
	RecvQueue []DataRun `json:"recv_queue,omitempty"`
	// Options negotiated at the handshake (TCP_INFO, TCP_MAXSEG).
	MSS        uint32 `json:"mss"`
	SndWscale  uint8  `json:"snd_wscale,omitempty"`
	RcvWscale  uint8  `json:"rcv_wscale,omitempty"`
	Wscale     bool   `json:"wscale,omitempty"`
	SACK       bool   `json:"sack,omitempty"`
	Timestamps bool   `json:"timestamps,omitempty"`
	// Timestamp is TCP_TIMESTAMP: the connection's clock, kept so the
	// peer's PAWS check accepts what comes after.
	Timestamp uint32 `json:"timestamp,omitempty"`
	// Window is struct tcp_repair_window.
	Window TCPWindow `json:"window"`
}

// TCPWindow is struct tcp_repair_window (TCP_REPAIR_WINDOW).
type TCPWindow struct {
	SndWl1    uint32 `json:"snd_wl1"`
	SndWnd    uint32 `json:"snd_wnd"`
	MaxWindow uint32 `json:"max_window"`
	RcvWnd    uint32 `json:"rcv_wnd"`
	RcvWup    uint32 `json:"rcv_wup"`
}

// Datagram is one queued UDP datagram and who sent it.
type Datagram struct {
	From netip.AddrPort `json:"from"`
	Data []DataRun      `json:"data,omitempty"`
}

// Len is the number of bytes of runs.
func Len(runs []DataRun) uint64 {
	n := uint64(0)
	for _, r := range runs {
		n += r.Len
	}
	return n
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

// NetlinkSocket is one netlink socket: its protocol, its address (port id)
// and the multicast groups it joined. Messages queued on it are not kept:
// dump refuses a socket with unread messages (dump again a moment later),
// and what the kernel sends between dump and restore is lost.
type NetlinkSocket struct {
	ID       int    `json:"id"`
	Inode    uint64 `json:"inode"`
	Type     int    `json:"type"`     // SOCK_RAW or SOCK_DGRAM
	Protocol int    `json:"protocol"` // NETLINK_ROUTE, NETLINK_KOBJECT_UEVENT ...
	// PortID is the bound port id (nl_pid), 0 if the socket is unbound.
	PortID uint32 `json:"port_id,omitempty"`
	// Groups are the multicast groups joined, by number (1 is the first).
	Groups []uint32 `json:"groups,omitempty"`
	// DstPort and DstGroup are the default destination set by connect(2).
	DstPort  uint32         `json:"dst_port,omitempty"`
	DstGroup uint32         `json:"dst_group,omitempty"`
	Options  NetlinkOptions `json:"options"`
}

// NetlinkOptions are the netlink socket options chpox keeps.
type NetlinkOptions struct {
	SndBuf         int  `json:"sndbuf,omitempty"`
	RcvBuf         int  `json:"rcvbuf,omitempty"`
	PktInfo        bool `json:"pktinfo,omitempty"`
	BroadcastError bool `json:"broadcast_error,omitempty"`
	NoENOBUFS      bool `json:"no_enobufs,omitempty"`
	CapAck         bool `json:"cap_ack,omitempty"`
	ExtAck         bool `json:"ext_ack,omitempty"`
	StrictCheck    bool `json:"strict_check,omitempty"`
}
