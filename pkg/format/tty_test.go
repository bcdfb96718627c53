package format

import (
	"errors"
	"testing"
)

func TestValidateTTYs(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(o *Objects, ps []*Process)
		want   error
	}{
		{"baseline", func(*Objects, []*Process) {}, nil},
		{"id twice", func(o *Objects, _ []*Process) { o.TTYs[1].ID = 1 }, ErrCorrupt},
		{"id zero", func(o *Objects, _ []*Process) { o.TTYs[0].ID = 0 }, ErrCorrupt},
		{"unknown kind", func(o *Objects, _ []*Process) { o.TTYs[0].Kind = "serial" }, ErrCorrupt},
		{"negative index", func(o *Objects, _ []*Process) { o.TTYs[0].Index = -1 }, ErrCorrupt},
		{"fd names missing pair", func(_ *Objects, ps []*Process) { ps[0].Files[len(ps[0].Files)-1].TTY = 9 }, ErrCorrupt},
		{"fd names no pair", func(_ *Objects, ps []*Process) { ps[0].Files[len(ps[0].Files)-1].TTY = 0 }, ErrCorrupt},
		{"fd names outside terminal", func(_ *Objects, ps []*Process) { ps[0].Files[len(ps[0].Files)-1].TTY = 2 }, ErrCorrupt},
		{"file names a pair", func(_ *Objects, ps []*Process) { ps[0].Files[len(ps[0].Files)-1].Kind = FileChar }, ErrCorrupt},
		{"missing controlling terminal", func(_ *Objects, ps []*Process) { ps[0].CTTY = 7 }, ErrCorrupt},
		{"queue beyond the data", func(o *Objects, _ []*Process) { o.TTYs[0].Output = []DataRun{{Off: 1 << 40, Len: 4}} }, ErrCorrupt},
		{"queue of an outside terminal", func(o *Objects, _ []*Process) { o.TTYs[1].Input = []DataRun{{Off: 0, Len: 1}} }, ErrCorrupt},
		{"queue over another run", func(o *Objects, _ []*Process) {
			o.TTYs[0].Input = []DataRun{{Off: 0, Len: 2}}
			o.TTYs[0].Output = []DataRun{{Off: 1, Len: 2}}
		}, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := makeSample(1, false)
			s.objs.TTYs = []TTY{
				{ID: 1, Kind: TTYPty, Index: 3, Termios: &Termios{Lflag: 0o10}, Winsize: Winsize{Row: 24, Col: 80}, Packet: true, Session: 5, Foreground: 5},
				{ID: 2, Kind: TTYOutside, Name: "/dev/pts/0"},
			}
			s.procs[0].CTTY = 1
			s.procs[0].Files = append(s.procs[0].Files,
				File{FD: 60, Desc: 900, Kind: FilePTYMaster, Path: "/dev/ptmx", TTY: 1},
				File{FD: 61, Desc: 901, Kind: FilePTYSlave, Path: "/dev/pts/3", TTY: 1})
			tc.mutate(s.objs, s.procs)
			img, err := decodeBytes(assemble(Version, s.secs()))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
			if err == nil && (len(img.Objects.TTYs) != 2 || img.Objects.TTYs[0].Termios == nil || img.Processes[0].CTTY != 1) {
				t.Errorf("decoded %+v, want both terminals and the controlling terminal", img.Objects.TTYs)
			}
		})
	}
}
