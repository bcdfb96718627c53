package format

import (
	"errors"
	"testing"
)

func TestValidateNetlink(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(n []NetlinkSocket, ps []*Process)
		want   error
	}{
		{"baseline", func([]NetlinkSocket, []*Process) {}, nil},
		{"id twice", func(n []NetlinkSocket, _ []*Process) { n[1].ID = 1 }, ErrCorrupt},
		{"id zero", func(n []NetlinkSocket, _ []*Process) { n[0].ID = 0 }, ErrCorrupt},
		{"protocol beyond MAX_LINKS", func(n []NetlinkSocket, _ []*Process) { n[0].Protocol = 32 }, ErrCorrupt},
		{"stream type", func(n []NetlinkSocket, _ []*Process) { n[0].Type = 1 }, ErrCorrupt},
		{"group 0", func(n []NetlinkSocket, _ []*Process) { n[0].Groups = []uint32{0} }, ErrCorrupt},
		{"huge group", func(n []NetlinkSocket, _ []*Process) { n[0].Groups = []uint32{1 << 30} }, ErrCorrupt},
		{"negative buffer", func(n []NetlinkSocket, _ []*Process) { n[1].Options.RcvBuf = -1 }, ErrCorrupt},
		{"fd names missing socket", func(_ []NetlinkSocket, ps []*Process) { ps[0].Files[len(ps[0].Files)-1].Socket = 9 }, ErrCorrupt},
		{"fd names no socket", func(_ []NetlinkSocket, ps []*Process) { ps[0].Files[len(ps[0].Files)-1].Socket = 0 }, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := makeSample(1, false)
			s.objs.Netlink = []NetlinkSocket{
				{ID: 1, Type: 3, Protocol: 0, PortID: 4242, Groups: []uint32{1, 5}, Options: NetlinkOptions{ExtAck: true}},
				{ID: 2, Type: 2, Protocol: 16, Options: NetlinkOptions{RcvBuf: 4096}},
			}
			s.procs[0].Files = append(s.procs[0].Files, File{FD: 61, Desc: 901, Kind: FileNetlink, Path: "socket:[9]", Socket: 2})
			tc.mutate(s.objs.Netlink, s.procs)
			img, err := decodeBytes(assemble(Version, s.secs()))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
			if err == nil && len(img.Objects.Netlink) != 2 {
				t.Errorf("decoded %d netlink sockets, want 2", len(img.Objects.Netlink))
			}
		})
	}
}
