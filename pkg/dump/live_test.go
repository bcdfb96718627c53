package dump

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

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

// TestSettleChangedImage: a rewrite of a last image that was changed
// after its commit is no base: Settle drops both (the next checkpoint is
// full) instead of vouching for the changed bytes with the index's sums.
func TestSettleChangedImage(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img.chp")
	if err := os.WriteFile(path, bytes.Repeat([]byte{7}, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	rw, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	base, err := vmadump.NewBase(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := &Series{base: base, chain: ShareChain + 1}
	s.Compact()
	if s.compact == nil {
		t.Fatal("no rewrite started")
	}
	<-s.compact.done
	if s.compact.err != nil {
		t.Fatal(s.compact.err)
	}
	time.Sleep(10 * time.Millisecond) // a later mtime
	if _, err := rw.WriteAt([]byte("changed"), 4096); err != nil {
		t.Fatal(err)
	}
	s.Settle(nil)
	if s.base != nil {
		t.Errorf("the rewrite of a changed image became the base")
	}
	Closed()
}
