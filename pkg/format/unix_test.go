package format

import (
	"errors"
	"strings"
	"testing"
)

// unixSample adds UNIX sockets that reference each other in every way
// restore relies on, with 10 bytes of queues at the end of the data section.
func unixSample() sample {
	s := makeSample(2, false)
	off := uint64(len(s.data))
	s.data = append(s.data, "abcdefghij"...)
	s.h.DataBytes = int64(len(s.data))
	s.objs.UnixSockets = []UnixSocket{
		{ID: 1, Type: 1, Peer: 2, Queue: []DataRun{{Off: off, Len: 4}}, Options: UnixOptions{PeekOff: -1}},
		{ID: 2, Type: 1, Peer: 1, Shutdown: 2},
		{ID: 3, Type: 2, Name: "/tmp/g", Unlinked: true, Queue: []DataRun{{Off: off + 4, Len: 6}},
			Messages: []UnixMessage{{Len: 2, Sender: 4}, {Len: 4}}},
		{ID: 4, Type: 2, Name: "x", Abstract: true, Peer: 3},
		{ID: 5, Type: 1, Name: "/tmp/l", Mode: 0o640, Listening: true, Backlog: 5, Pending: []int{6}},
		{ID: 6, Type: 1},
		{ID: 7, Type: 1, Name: "/tmp/l", Listener: 5, Peer: 8},
		{ID: 8, Type: 1, Peer: 7},
		{ID: 9, Type: 2, PeerName: "/dev/log"},
	}
	s.procs[0].Files = append(s.procs[0].Files, File{FD: 60, Desc: 900, Kind: FileUnix, Path: "socket:[1]", Socket: 1})
	return s
}

func TestValidateUnix(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(u []UnixSocket, ps []*Process)
		want   error
	}{
		{"baseline", func([]UnixSocket, []*Process) {}, nil},
		{"id twice", func(u []UnixSocket, _ []*Process) { u[1].ID = 1 }, ErrCorrupt},
		{"unknown type", func(u []UnixSocket, _ []*Process) { u[5].Type = 3 }, ErrCorrupt},
		{"name too long", func(u []UnixSocket, _ []*Process) { u[2].Name = "/" + strings.Repeat("a", 107) }, ErrCorrupt},
		{"empty abstract name", func(u []UnixSocket, _ []*Process) { u[3].Name = "" }, ErrCorrupt},
		{"missing peer", func(u []UnixSocket, _ []*Process) { u[3].Peer = 42 }, ErrCorrupt},
		{"own peer", func(u []UnixSocket, _ []*Process) { u[3].Peer = 4 }, ErrCorrupt},
		{"stream peer not mutual", func(u []UnixSocket, _ []*Process) { u[1].Peer = 8 }, ErrCorrupt},
		{"peer of another type", func(u []UnixSocket, _ []*Process) { u[3].Peer = 1 }, ErrCorrupt},
		{"peer and peer name", func(u []UnixSocket, _ []*Process) { u[3].PeerName = "/x" }, ErrCorrupt},
		{"listener not listening", func(u []UnixSocket, _ []*Process) { u[6].Listener = 6 }, ErrCorrupt},
		{"listening and connected", func(u []UnixSocket, _ []*Process) { u[4].Peer = 6 }, ErrCorrupt},
		{"listening datagram", func(u []UnixSocket, _ []*Process) { u[2].Listening, u[2].Queue, u[2].Messages = true, nil, nil }, ErrCorrupt},
		{"backlog without listening", func(u []UnixSocket, _ []*Process) { u[5].Backlog = 3 }, ErrCorrupt},
		{"pending twice", func(u []UnixSocket, _ []*Process) { u[4].Pending = []int{6, 6} }, ErrCorrupt},
		{"pending connected", func(u []UnixSocket, _ []*Process) { u[4].Pending = []int{8} }, ErrCorrupt},
		{"shutdown 4", func(u []UnixSocket, _ []*Process) { u[1].Shutdown = 4 }, ErrCorrupt},
		{"mode beyond bits", func(u []UnixSocket, _ []*Process) { u[4].Mode = 0o170000 }, ErrCorrupt},
		{"negative buffer", func(u []UnixSocket, _ []*Process) { u[0].Options.SndBuf = -1 }, ErrCorrupt},
		{"messages on a stream", func(u []UnixSocket, _ []*Process) { u[0].Messages = []UnixMessage{{Len: 4}} }, ErrCorrupt},
		{"messages do not add up", func(u []UnixSocket, _ []*Process) { u[2].Messages[1].Len = 5 }, ErrCorrupt},
		{"negative message", func(u []UnixSocket, _ []*Process) { u[2].Messages[0].Len, u[2].Messages[1].Len = -1, 7 }, ErrCorrupt},
		{"missing sender", func(u []UnixSocket, _ []*Process) { u[2].Messages[0].Sender = 77 }, ErrCorrupt},
		{"queue beyond data", func(u []UnixSocket, _ []*Process) { u[0].Queue[0].Len = 5000 }, ErrCorrupt},
		{"queues overlap", func(u []UnixSocket, _ []*Process) { u[2].Queue[0].Off -= 1 }, ErrCorrupt},
		{"fd names missing socket", func(_ []UnixSocket, ps []*Process) { ps[0].Files[len(ps[0].Files)-1].Socket = 30 }, ErrCorrupt},
		{"fd names no socket", func(_ []UnixSocket, ps []*Process) { ps[0].Files[len(ps[0].Files)-1].Socket = 0 }, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := unixSample()
			tc.mutate(s.objs.UnixSockets, s.procs)
			img, err := decodeBytes(assemble(Version, s.secs()))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
			if err == nil && len(img.Objects.UnixSockets) != 9 {
				t.Errorf("decoded %d unix sockets, want 9", len(img.Objects.UnixSockets))
			}
		})
	}
}
