package restore

import (
	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/unixsock"
)

// createUnix makes the image's UNIX sockets (pkg/objects/unixsock) and
// puts each one's file in o.descs for its description: a socket has one.
func (o *objects) createUnix(img *format.Image) error {
	if len(img.Objects.UnixSockets) == 0 {
		return nil
	}
	// A socket file is created with the fs ids of a process that holds
	// the socket, as that process's bind(2) created it.
	owners := map[int][2]int{}
	for _, p := range img.Processes {
		for _, f := range p.Files {
			if _, ok := owners[f.Socket]; f.Kind == format.FileUnix && !ok {
				owners[f.Socket] = [2]int{int(p.Creds.UID[3]), int(p.Creds.GID[3])}
			}
		}
	}
	set, err := unixsock.Create(img.Objects.UnixSockets, func(id int) (int, int) {
		return owners[id][0], owners[id][1]
	})
	if err != nil {
		return err
	}
	o.unix = set
	for _, p := range img.Processes {
		for _, f := range p.Files {
			if f.Kind == format.FileUnix {
				o.descs[f.Desc] = set.File(f.Socket)
				set.SetFlags(f.Socket, f.Flags)
			}
		}
	}
	return nil
}

// unixSinks are where the data section delivers the sockets' queues.
func (o *objects) unixSinks(img *format.Image) []sink {
	var out []sink
	for _, u := range img.Objects.UnixSockets {
		for _, r := range u.Queue {
			out = append(out, sink{off: r.Off, len: r.Len, addr: r.Addr, file: bufferAt{o.unix.Queue(u.ID)}})
		}
	}
	return out
}

// fillUnix sends the saved queues again and finishes the sockets
// (connects, options, shutdown) before any process runs.
func (o *objects) fillUnix() error {
	if o.unix == nil {
		return nil
	}
	return o.unix.Fill()
}
