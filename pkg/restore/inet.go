package restore

import (
	"fmt"
	"slices"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/netlock"
	"github.com/chpox/chpox/pkg/objects/inet"
)

// inetObjects are the TCP and UDP sockets chpox made for an image.
type inetObjects struct {
	sockets map[int]*inet.New // by InetSocket.ID
	order   []*inet.New       // in creation order: listeners first
	flags   map[int]int       // by InetSocket.ID: file status flags of its description
}

// createInet makes every TCP and UDP socket (pkg/objects/inet) and keeps it
// in o.descs for the fds that name it. Listeners come first: a connection
// rebuilt in repair mode may bind the port of a listener, not the reverse.
func (o *objects) createInet(img *format.Image) error {
	o.inet = &inetObjects{sockets: map[int]*inet.New{}, flags: map[int]int{}}
	recs := slices.Clone(img.Objects.InetSockets)
	slices.SortStableFunc(recs, func(a, b format.InetSocket) int {
		return boolInt(b.State == format.InetListen) - boolInt(a.State == format.InetListen)
	})
	for _, r := range recs {
		s, err := inet.Create(r)
		if err != nil {
			return err
		}
		o.inet.sockets[r.ID] = s
		o.inet.order = append(o.inet.order, s)
	}
	for _, p := range img.Processes {
		for _, f := range p.Files {
			if f.Kind == format.FileInet {
				o.descs[f.Desc] = o.inet.sockets[f.Socket].File
				o.inet.flags[f.Socket] = f.Flags
			}
		}
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// inetSinks are the data-section runs of the sockets' queues.
func (o *objects) inetSinks(img *format.Image) []sink {
	var out []sink
	if o.inet == nil {
		return nil
	}
	add := func(runs []format.DataRun, to *[]byte) {
		for _, r := range runs {
			out = append(out, sink{off: r.Off, len: r.Len, addr: r.Addr, file: bufferAt{to}})
		}
	}
	for _, r := range img.Objects.InetSockets {
		s := o.inet.sockets[r.ID]
		if r.Repair != nil {
			add(r.Repair.SendQueue, &s.SendQ)
			add(r.Repair.RecvQueue, &s.RecvQ)
		}
		for i, d := range r.Datagrams {
			add(d.Data, &s.Datagrams[i])
		}
	}
	return out
}

// fillInet puts the queues back: TCP in repair mode, datagrams resent.
func (o *objects) fillInet() error {
	for _, s := range o.inet.order {
		if err := s.Fill(o.inet.order); err != nil {
			return err
		}
	}
	return nil
}

// resumeInet ends repair mode on every connection and then lifts the
// network lock of this image's connections, just before the processes run.
// A failed restore keeps the lock, so that a second attempt still finds
// the peers connected.
func (o *objects) resumeInet() error {
	var conns []netlock.Conn
	for _, s := range o.inet.order {
		if err := s.Resume(o.inet.flags[s.Rec.ID]); err != nil {
			return err
		}
		if s.Rec.State == format.InetEstablished {
			conns = append(conns, netlock.Conn{Local: s.Rec.Local, Peer: s.Rec.Peer})
		}
	}
	if err := netlock.Unlock(conns); err != nil {
		return fmt.Errorf("lift the network lock: %w", err)
	}
	return nil
}

func (o *objects) closeInet() {
	if o.inet == nil {
		return
	}
	for _, s := range o.inet.order {
		s.Close()
	}
}
