package dump

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
	"github.com/chpox/chpox/pkg/objects/unixsock"
	"github.com/chpox/chpox/pkg/procinfo"
)

// unixSockets describes every UNIX domain socket once (pkg/objects/unixsock)
// and ties them together: peers, listeners and their waiting connections,
// the senders of queued datagrams. A stream or seqpacket connection to a
// process outside the checkpoint becomes an external descriptor; what
// chpox cannot carry is refused by name.
func (pl *plan) unixSockets() error {
	type held struct {
		p *proc
		f *procinfo.OpenFile
		d *unixsock.Diag
	}
	var all []held
	inTree := map[uint32]bool{}
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind == format.FileUnix {
				all = append(all, held{p: p, f: f})
				inTree[uint32(f.Ino)] = true
			}
		}
	}
	if len(all) == 0 {
		return nil
	}
	diag, err := unixsock.DiagAll()
	if err != nil {
		return err
	}
	for i := range all {
		h := &all[i]
		if h.d = diag[uint32(h.f.Ino)]; h.d == nil {
			return fmt.Errorf("pid %d: fd %d: UNIX socket %s is unknown to sock_diag (another network namespace?): %w",
				h.p.Info.PID, h.f.FD, h.f.Path, ErrUnsupported)
		}
	}

	ids := map[uint32]int{} // inode -> ID
	var data [][]unixsock.Message
	recs := &pl.objects.UnixSockets
	for _, h := range all {
		pid, fd, d := h.p.Info.PID, h.f.FD, h.d
		if id, ok := ids[d.Ino]; ok {
			h.f.Socket = id
			continue
		}
		if outside := d.Peer != 0 && !inTree[d.Peer] && diag[d.Peer] != nil; outside && d.Type != unix.SOCK_DGRAM {
			// A connection to a server that stays outside: the lead's
			// external mechanism hands restore a descriptor for it.
			name := peerName(diag[d.Peer])
			pl.markExternal(h.f, fmt.Sprintf("unix %s socket connected to %s", objects.TypeName(d.Type), name),
				pl.outsideHolder(fmt.Sprintf("socket:[%d]", d.Peer)), d.Type)
			continue
		}
		rec, queue, msgs, err := unixsock.Describe(pid, fd, d)
		if err != nil {
			if errors.Is(err, unixsock.ErrRefused) {
				return fmt.Errorf("pid %d: fd %d: a UNIX %s socket %w: %w", pid, fd, objects.TypeName(d.Type), err, ErrUnsupported)
			}
			return fmt.Errorf("pid %d: fd %d: %w", pid, fd, err)
		}
		if root := h.p.Info.Root; root != "/" && (rec.Name != "" && !rec.Abstract || rec.PeerName != "" && !rec.PeerAbstract) {
			// The name is a path in the chroot, not in chpox's view:
			// binding or connecting it again from outside would miss.
			return fmt.Errorf("pid %d: fd %d: UNIX socket named by a path (%q) in the chroot %s: chpox cannot rebind it there yet: %w",
				pid, fd, rec.Name+rec.PeerName, root, ErrUnsupported)
		}
		rec.ID = len(*recs) + 1
		rec.Queue = pl.blob(queue)
		ids[d.Ino] = rec.ID
		h.f.Socket = rec.ID
		*recs = append(*recs, rec)
		data = append(data, msgs)
	}
	return pl.linkUnix(diag, ids, data, func(id int) (int, int) {
		for _, h := range all {
			if h.f.Socket == id {
				return h.p.Info.PID, h.f.FD
			}
		}
		return 0, 0
	})
}

// linkUnix fills in the references between the described sockets.
func (pl *plan) linkUnix(diag map[uint32]*unixsock.Diag, ids map[uint32]int, msgs [][]unixsock.Message, where func(id int) (pid, fd int)) error {
	recs := pl.objects.UnixSockets
	named := map[string]int{} // sun_path -> ID of the listener bound to it
	for i := range recs {
		u := &recs[i]
		if u.Listening && u.Name != "" {
			named[sunPath(u)] = u.ID
		}
	}
	for i := range recs {
		u := &recs[i]
		d := diag[uint32(u.Inode)]
		pid, fd := where(u.ID)
		refuse := func(format string, args ...any) error {
			return fmt.Errorf("pid %d: fd %d: a UNIX %s socket "+format+": %w",
				append(append([]any{pid, fd, objects.TypeName(u.Type)}, args...), ErrUnsupported)...)
		}
		// ICONS names the connecting sockets (the new sockets in the
		// backlog have no inode yet: net/unix/diag.c sk_diag_dump_icons).
		for _, c := range d.Icons {
			client, ok := ids[c]
			if !ok {
				return refuse("listening on %s with a connection waiting from outside the checkpoint", nameOf(u))
			}
			if cd := diag[c]; cd.WQueue > 0 {
				// What the client sent waits in a socket no fd reaches.
				return refuse("listening on %s with a waiting connection that holds unread data", nameOf(u))
			}
			u.Pending = append(u.Pending, client)
		}
		if !u.Listening && d.Peer != 0 {
			if id, ok := ids[d.Peer]; ok {
				u.Peer = id
			} else if pd := diag[d.Peer]; pd != nil && u.Type == unix.SOCK_DGRAM {
				if pd.Name == "" {
					return refuse("connected to an unnamed socket outside the checkpoint")
				}
				u.PeerName, u.PeerAbstract = strip(pd.Name)
			}
		}
		if u.Type != unix.SOCK_DGRAM && !u.Listening && u.Peer == 0 && d.State == 1 && !isPending(recs, u.ID) && (d.Peer == 0 || diag[d.Peer] == nil) {
			u.PeerClosed = true // TCP_ESTABLISHED without a live peer
		}
	}
	// A connected socket that carries the name of a listener of the
	// tree was accepted from it (net/unix/af_unix.c unix_stream_connect
	// gives the new socket the listener's address).
	for i := range recs {
		u := &recs[i]
		if l, ok := named[sunPath(u)]; ok && u.Name != "" && l != u.ID && u.Peer != 0 {
			u.Listener = l
			u.Mode, u.Unlinked = 0, false
		}
	}
	for i := range recs {
		u := &recs[i]
		for _, m := range msgs[i] {
			sender := u.Peer
			// A record of a seqpacket socket comes from its peer, which
			// may carry its listener's name.
			if m.From != "" && u.Type == unix.SOCK_DGRAM {
				id, ok := bound(recs, m.From)
				if !ok {
					pid, fd := where(u.ID)
					return fmt.Errorf("pid %d: fd %d: a UNIX %s socket holds a message from %q, which is outside the checkpoint: %w",
						pid, fd, objects.TypeName(u.Type), m.From, ErrUnsupported)
				}
				sender = id
			}
			u.Messages = append(u.Messages, format.UnixMessage{Len: m.Len, Sender: sender})
		}
	}
	return nil
}

func isPending(recs []format.UnixSocket, id int) bool {
	for _, r := range recs {
		for _, p := range r.Pending {
			if p == id {
				return true
			}
		}
	}
	return false
}

// bound finds the socket of the tree bound to name (as sun_path holds
// it), not counting accepted connections, which carry their listener's.
func bound(recs []format.UnixSocket, name string) (int, bool) {
	for _, r := range recs {
		if r.Name != "" && r.Listener == 0 && sunPath(&r) == name {
			return r.ID, true
		}
	}
	return 0, false
}

func sunPath(u *format.UnixSocket) string {
	if u.Abstract {
		return "\x00" + u.Name
	}
	return u.Name
}

func strip(name string) (string, bool) {
	if name != "" && name[0] == 0 {
		return name[1:], true
	}
	return name, false
}

func nameOf(u *format.UnixSocket) string {
	if u.Abstract {
		return "@" + u.Name
	}
	if u.Name == "" {
		return "an unnamed socket"
	}
	return u.Name
}

func peerName(d *unixsock.Diag) string {
	if d.Name == "" {
		return "an unnamed socket"
	}
	if d.Name[0] == 0 {
		return "@" + d.Name[1:]
	}
	return d.Name
}
