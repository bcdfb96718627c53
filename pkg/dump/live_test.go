package dump

import (
	"slices"
	"testing"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/ptrace"
	"github.com/chpox/chpox/pkg/vmadump"
)

// TestKeepOnlyOf: a tracker kept from the last checkpoint goes on only
// with the process it tracked: not when that process is gone, nor when
// its PID now names another one (a later start time). With that tracker
// the new process's pages would come from the old one's image.
func TestKeepOnlyOf(t *testing.T) {
	tracks := map[int]*vmadump.Tracker{}
	for pid, started := range map[int]uint64{10: 500, 11: 600, 12: 700} {
		tr, err := vmadump.NewTracker(pid, nil, vmadump.NewStage())
		if err != nil {
			t.Fatal(err)
		}
		tr.Started = started
		tracks[pid] = tr
	}
	member := func(pid int, started uint64) *Member {
		return &Member{Info: &procinfo.Info{Process: format.Process{PID: pid}, Started: started}, T: &ptrace.Tracee{PID: pid}}
	}
	ms := []*Member{member(10, 500), member(11, 601), member(13, 800)} // 11 reused, 12 gone, 13 new
	keepOnlyOf(tracks, ms)
	var kept []int
	for pid := range tracks {
		kept = append(kept, pid)
	}
	if slices.Sort(kept); !slices.Equal(kept, []int{10}) {
		t.Errorf("kept trackers of %v, want only 10's", kept)
	}
}
