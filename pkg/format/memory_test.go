package format

import (
	"errors"
	"strings"
	"testing"
)

// TestValidateMemory checks the version 3 memory details: advice and lock
// names, guard regions, mm-wide state, memfd objects and memfd fds.
func TestValidateMemory(t *testing.T) {
	no := false
	memfd := func(o *Objects) *SharedMem {
		o.Shm[0].Memfd, o.Shm[0].Name, o.Shm[0].Seals, o.Shm[0].Mode = true, "buf", SealSeal|SealWrite, 0o666
		return &o.Shm[0]
	}
	for _, tc := range []struct {
		name   string
		mutate func(o *Objects, ps []*Process)
		want   error
	}{
		{"baseline", func(*Objects, []*Process) {}, nil},
		{"all details", func(o *Objects, ps []*Process) {
			h := &ps[0].VMAs[2] // [heap] 0x500000-0x505000
			h.Advice, h.Lock, h.Sealed = Advices, LockOnFault, true
			h.Guards = []Span{{0x501000, 0x502000}, {0x503000, 0x505000}}
			ps[0].VMAs[3].MayWrite = &no
			ps[0].Memory = &MemoryState{LockFuture: LockLocked, MergeAny: true, THPDisable: true}
			memfd(o)
		}, nil},
		{"inherited pages", func(_ *Objects, ps []*Process) { ps[1].VMAs[2].Inherited = []Span{{0x502000, 0x504000}} }, nil},
		{"inherited pages also saved", func(_ *Objects, ps []*Process) { ps[1].VMAs[2].Inherited = []Span{{0x501000, 0x503000}} }, ErrCorrupt},
		{"inherited pages outside area", func(_ *Objects, ps []*Process) { ps[1].VMAs[2].Inherited = []Span{{0x504000, 0x506000}} }, ErrCorrupt},
		{"unknown advice", func(_ *Objects, ps []*Process) { ps[0].VMAs[2].Advice = []string{"random"} }, ErrCorrupt},
		{"unknown lock", func(_ *Objects, ps []*Process) { ps[0].VMAs[2].Lock = "pinned" }, ErrCorrupt},
		{"unknown lock future", func(_ *Objects, ps []*Process) { ps[0].Memory = &MemoryState{LockFuture: "always"} }, ErrCorrupt},
		{"guard past area", func(_ *Objects, ps []*Process) { ps[0].VMAs[2].Guards = []Span{{0x504000, 0x506000}} }, ErrCorrupt},
		{"guard before area", func(_ *Objects, ps []*Process) { ps[0].VMAs[2].Guards = []Span{{0x4ff000, 0x501000}} }, ErrCorrupt},
		{"guard empty", func(_ *Objects, ps []*Process) { ps[0].VMAs[2].Guards = []Span{{0x501000, 0x501000}} }, ErrCorrupt},
		{"guard unaligned", func(_ *Objects, ps []*Process) { ps[0].VMAs[2].Guards = []Span{{0x501000, 0x501800}} }, ErrCorrupt},
		{"guards out of order", func(_ *Objects, ps []*Process) {
			ps[0].VMAs[2].Guards = []Span{{0x503000, 0x504000}, {0x501000, 0x502000}}
		}, ErrCorrupt},
		{"memfd name too long", func(o *Objects, _ []*Process) { memfd(o).Name = strings.Repeat("n", 250) }, ErrCorrupt},
		{"memfd name with NUL", func(o *Objects, _ []*Process) { memfd(o).Name = "a\x00b" }, ErrCorrupt},
		{"memfd unknown seal", func(o *Objects, _ []*Process) { memfd(o).Seals = 0x40 }, ErrCorrupt},
		{"memfd mode with file type", func(o *Objects, _ []*Process) { memfd(o).Mode = 0o100666 }, ErrCorrupt},
		{"name on non-memfd", func(o *Objects, _ []*Process) { o.Shm[0].Name = "x" }, ErrCorrupt},
		{"seals on non-memfd", func(o *Objects, _ []*Process) { o.Shm[0].Seals = SealSeal }, ErrCorrupt},
		{"memfd fd", func(o *Objects, ps []*Process) {
			memfd(o)
			ps[0].Files = append(ps[0].Files, File{FD: 40, Desc: 4000, Kind: FileMemfd, Path: "/memfd:buf (deleted)", Flags: 2, Shm: 1})
		}, nil},
		{"memfd fd naming non-memfd", func(_ *Objects, ps []*Process) {
			ps[0].Files = append(ps[0].Files, File{FD: 40, Desc: 4000, Kind: FileMemfd, Shm: 1})
		}, ErrCorrupt},
		{"memfd fd without shm", func(o *Objects, ps []*Process) {
			memfd(o)
			ps[0].Files = append(ps[0].Files, File{FD: 40, Desc: 4000, Kind: FileMemfd})
		}, ErrCorrupt},
		{"deleted fd sharing a deleted file's object", func(o *Objects, ps []*Process) {
			o.Shm[0].Deleted, o.Shm[0].Mode = "/tmp/scratch", 0o600
			ps[0].Files[2].Shm, ps[0].Files[2].Content = 1, nil
		}, nil},
		{"deleted fd with content and shm", func(o *Objects, ps []*Process) {
			o.Shm[0].Deleted = "/tmp/scratch"
			ps[0].Files[2].Shm = 1
		}, ErrCorrupt},
		{"deleted fd naming plain shm", func(_ *Objects, ps []*Process) { ps[0].Files[2].Shm, ps[0].Files[2].Content = 1, nil }, ErrCorrupt},
		{"deleted object also memfd", func(o *Objects, _ []*Process) { memfd(o).Deleted = "/tmp/x" }, ErrCorrupt},
		{"deleted object relative path", func(o *Objects, _ []*Process) { o.Shm[0].Deleted = "tmp/x" }, ErrCorrupt},
		{"mode on plain shm", func(o *Objects, _ []*Process) { o.Shm[0].Mode = 0o600 }, ErrCorrupt},
		{"regular fd naming shm", func(o *Objects, ps []*Process) {
			memfd(o)
			ps[0].Files[1].Shm = 1
		}, ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := makeSample(2, false)
			tc.mutate(s.objs, s.procs)
			_, err := decodeBytes(assemble(Version, s.secs()))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Decode: %v, want %v", err, tc.want)
			}
		})
	}
}
