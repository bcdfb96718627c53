package format

import (
	"errors"
	"testing"
)

// The seed image with System V objects is accepted as written; each broken
// reference or bound is refused as corrupt.
func TestValidateSysV(t *testing.T) {
	seed := seedImages(t)["seed-sysv"]
	good, err := decodeBytes(seed)
	if err != nil {
		t.Fatalf("seed-sysv: %v", err)
	}
	if sv := good.Objects.SysV; sv == nil || len(sv.Shm) != 1 || len(sv.Sem) != 1 || len(sv.Msg[0].Messages) != 2 {
		t.Fatalf("seed-sysv decoded as %+v", good.Objects.SysV)
	}
	for _, tc := range []struct {
		name   string
		mutate func(sv *SysVObjects, p *Process)
	}{
		{"vma names missing segment", func(_ *SysVObjects, p *Process) { p.VMAs[0].SysVShm = 2 }},
		{"vma bad shmat flags", func(_ *SysVObjects, p *Process) { p.VMAs[0].SysVFlags = 1 }},
		{"segment id twice", func(sv *SysVObjects, _ *Process) { sv.Shm = append(sv.Shm, sv.Shm[0]) }},
		{"segment run beyond size", func(sv *SysVObjects, _ *Process) { sv.Shm[0].Size = 4 }},
		{"removed segment with key", func(sv *SysVObjects, _ *Process) { sv.Shm[0].Removed = true }},
		{"mode with other bits", func(sv *SysVObjects, _ *Process) { sv.Sem[0].Mode = 0o1600 }},
		{"semaphore value above SEMVMX", func(sv *SysVObjects, _ *Process) { sv.Sem[0].Values[1] = 40000 }},
		{"empty semaphore set", func(sv *SysVObjects, _ *Process) { sv.Sem[0].Values = nil }},
		{"message type 0", func(sv *SysVObjects, _ *Process) { sv.Msg[0].Messages[0].Type = 0 }},
		{"messages beyond qbytes", func(sv *SysVObjects, _ *Process) { sv.Msg[0].QBytes = 2 }},
		{"message beyond data", func(sv *SysVObjects, _ *Process) { sv.Msg[0].Messages[1].Text.Len = 99 }},
		{"message overlaps segment", func(sv *SysVObjects, _ *Process) { sv.Msg[0].Messages[0].Text.Off = 4 }},
		{"last pids do not match values", func(sv *SysVObjects, _ *Process) { sv.Sem[0].PIDs = []int{1} }},
		{"negative last pid", func(sv *SysVObjects, _ *Process) { sv.Msg[0].LRPID = -1 }},
		{"undo names missing set", func(_ *SysVObjects, p *Process) { p.SemUndo[0].KID = 8 }},
		{"undo names missing semaphore", func(_ *SysVObjects, p *Process) { p.SemUndo[0].Num = 2 }},
		{"undo out of range", func(_ *SysVObjects, p *Process) { p.SemUndo[0].Adj = 40000 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := decodeBytes(seed)
			if err != nil {
				t.Fatal(err)
			}
			tc.mutate(img.Objects.SysV, img.Processes[0])
			if err := img.validate(); !errors.Is(err, ErrCorrupt) {
				t.Errorf("validate: %v, want %v", err, ErrCorrupt)
			}
		})
	}
}
