package vmadump

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/chpox/chpox/pkg/format"
)

const pageSize = 4096

// pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst).
const (
	pmPresent = 1 << 63
	pmSwapped = 1 << 62
	pmFile    = 1 << 61 // file page or shared anonymous
	// pmGuard: a MADV_GUARD_INSTALL marker (since 6.15). It comes with the
	// swapped bit, but no page is behind it: /proc/PID/mem fails on it
	// with EIO.
	pmGuard = 1 << 58
)

// hasData is a page with content: present or swapped, not a guard marker.
func hasData(e uint64) bool { return e&(pmPresent|pmSwapped) != 0 && e&pmGuard == 0 }

// Plan decides which pages of each area go into the image and assigns them
// consecutive offsets in the data section starting at off. It returns the
// offset after the last run.
func Plan(pid int, areas []*Area, off uint64) (uint64, error) {
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", pid))
	if err != nil {
		return 0, fmt.Errorf("dump %d: open pagemap: %w", pid, err)
	}
	defer pm.Close()
	for _, a := range areas {
		runs, err := pagesOf(pid, pm, a)
		if err != nil {
			return 0, fmt.Errorf("dump %d: memory %#x-%#x (%s): %w", pid, a.Start, a.End, a.Name, err)
		}
		runs = withoutSpans(runs, a.Inherited)
		for i := range runs {
			runs[i].Off = off
			off += runs[i].Len
		}
		a.Pages = runs
		if a.maybeGuard {
			if err := a.findGuards(pm); err != nil {
				return 0, fmt.Errorf("dump %d: memory %#x-%#x (%s): %w", pid, a.Start, a.End, a.Name, err)
			}
		}
	}
	return off, nil
}

func pagesOf(pid int, pm *os.File, a *Area) ([]format.DataRun, error) {
	switch {
	case a.Kind == format.VMASharedAnon && !a.Shared:
		// A private mapping of a memfd: the object is saved on its own,
		// the pages this mapping wrote here.
		if a.AnonKB == 0 {
			return nil, nil
		}
		return anonRuns(pm, a)
	case a.Kind == format.VMAVDSO, a.Kind == format.VMAFile && a.Shared, a.Kind == format.VMASharedAnon, a.Kind == format.VMASysVShm:
		// The kernel or the file holds the content; shared memory is
		// saved once per object (see Shm), not per mapping.
		return nil, nil
	case a.Deleted:
		// A private mapping of an unlinked file: unmodified pages exist
		// nowhere else, so the whole area is copied, up to the end of the
		// file (beyond it a page cannot be read; restored, it reads as
		// zeros instead of raising SIGBUS).
		end := a.End
		if a.FileSize >= 0 {
			fileEnd := (uint64(a.FileSize) + pageSize - 1) &^ (pageSize - 1)
			if fileEnd <= a.Offset {
				return nil, nil
			}
			end = min(end, a.Start+fileEnd-a.Offset)
		}
		return []format.DataRun{{Addr: a.Start, Len: end - a.Start}}, nil
	case a.Kind == format.VMAFile:
		if a.AnonKB == 0 {
			return nil, nil
		}
		return anonRuns(pm, a)
	default:
		if a.RssKB == 0 {
			return nil, nil
		}
		if !a.maybeGuard {
			if runs, err := scanRuns(pm, a, 0, 0); err == nil {
				return runs, nil
			}
		}
		return pagemapRuns(pm, a, hasData)
	}
}

// anonRuns returns the pages of a private file or memfd mapping that the
// process wrote (anonymous copies), not those that read the file.
func anonRuns(pm *os.File, a *Area) ([]format.DataRun, error) {
	if !a.maybeGuard {
		if runs, err := scanRuns(pm, a, pageIsFile, pageIsFile); err == nil {
			return runs, nil
		}
	}
	return pagemapRuns(pm, a, func(e uint64) bool { return hasData(e) && e&pmFile == 0 })
}

// scanRuns finds the present or swapped pages of a with PAGEMAP_SCAN
// (those not in the inverted categories of mask): the kernel filters, so
// a 4 GiB area takes a millisecond, where reading its 8 MiB of pagemap
// took 35 ms of the final freeze. Guard markers show as swapped here, so
// areas that may have them read pagemap (pagemapRuns).
func scanRuns(pm *os.File, a *Area, inverted, mask uint64) ([]format.DataRun, error) {
	var runs []format.DataRun
	err := scanCategories(pm, a.Start, a.End, 0, inverted, mask, pageIsPresent|pageIsSwapped, func(start, end uint64) {
		if l := len(runs); l > 0 && runs[l-1].Addr+runs[l-1].Len == start {
			runs[l-1].Len += end - start
		} else {
			runs = append(runs, format.DataRun{Addr: start, Len: end - start})
		}
	})
	return runs, err
}

// findGuards records the area's guard regions from pagemap.
func (a *Area) findGuards(pm *os.File) error {
	runs, err := pagemapRuns(pm, a, func(e uint64) bool { return e&pmGuard != 0 })
	if err != nil {
		return err
	}
	a.Guards = nil
	for _, r := range runs {
		a.Guards = append(a.Guards, format.Span{Start: r.Addr, End: r.Addr + r.Len})
	}
	return nil
}

// pagemapRuns returns the runs of pages whose pagemap entry passes keep.
func pagemapRuns(pm *os.File, a *Area, keep func(uint64) bool) ([]format.DataRun, error) {
	const chunk = 64 << 10 // entries per read: 512 KiB
	// Sized to the area: a process of 100,000 one-page areas must not
	// allocate 512 KiB for each.
	buf := make([]byte, min((a.End-a.Start)/pageSize, chunk)*8)
	var runs []format.DataRun
	for addr := a.Start; addr < a.End; {
		n := min((a.End-addr)/pageSize, chunk)
		b := buf[:n*8]
		if _, err := pm.ReadAt(b, int64(addr/pageSize*8)); err != nil {
			return nil, fmt.Errorf("read pagemap: %w", err)
		}
		for i := uint64(0); i < n; i++ {
			if !keep(binary.LittleEndian.Uint64(b[i*8:])) {
				continue
			}
			p := addr + i*pageSize
			if l := len(runs); l > 0 && runs[l-1].Addr+runs[l-1].Len == p {
				runs[l-1].Len += pageSize
			} else {
				runs = append(runs, format.DataRun{Addr: p, Len: pageSize})
			}
		}
		addr += n * pageSize
	}
	return runs, nil
}
