package vmadump

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// TestScanSplit: the pieces scanned at once give the same present pages
// as one scan of the whole area, across the cuts (runs there are joined
// again) and up to its end.
func TestScanSplit(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one CPU: nothing is split")
	}
	const size = 3*splitMin + 5*pageSize // not a multiple of the pieces
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	unix.Madvise(mem, unix.MADV_NOHUGEPAGE)
	// Pages present here and there, some on both sides of every cut and
	// the last page of the area.
	for i := 0; i < size; i += 37 * pageSize {
		mem[i] = 1
	}
	// The scan ends 5 pages past a 2 MiB boundary, whatever the mapping's
	// alignment: the last piece must not end at the boundary.
	base := uint64(uintptr(unsafe.Pointer(&mem[0])))
	end := (base+size)&^(1<<21-1) - 1<<21 + 5*pageSize
	for i := int(end-base) - 64*pageSize; i < int(end-base); i += pageSize {
		mem[i] = 1
	}
	for c := splitMin / 2; c < size; c += splitMin / 2 {
		for i := c - 8*pageSize; i < c+8*pageSize && i < size; i += pageSize {
			mem[i] = 1
		}
	}
	start := base
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	var whole []format.DataRun
	err = scanRegions(pm, start, end, 0, 0, 0, pageIsPresent, 0, func(r pageRegion) {
		whole = addRun(whole, r.Start, r.End)
	})
	if err != nil {
		t.Skip("PAGEMAP_SCAN:", err)
	}
	regions, err := scanSplit(pm, start, end, 0, 0, 0, pageIsPresent, 0)
	if err != nil {
		t.Fatal(err)
	}
	var split []format.DataRun
	for _, r := range regions {
		split = addRun(split, r.Start, r.End)
	}
	if !slices.Equal(whole, split) {
		t.Errorf("split scan: %d runs, want the %d of one scan", len(split), len(whole))
	}
	if l := whole[len(whole)-1]; l.Addr+l.Len != end {
		t.Errorf("the last run ends at %#x, want the scan's end %#x", l.Addr+l.Len, end)
	}
}

func addRun(rs []format.DataRun, start, end uint64) []format.DataRun {
	if l := len(rs); l > 0 && rs[l-1].Addr+rs[l-1].Len == start {
		rs[l-1].Len += end - start
		return rs
	}
	return append(rs, format.DataRun{Addr: start, Len: end - start})
}
