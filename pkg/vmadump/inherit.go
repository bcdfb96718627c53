package vmadump

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/chpox/chpox/pkg/format"
)

const pmPFN = 1<<55 - 1 // page frame number bits (readable with CAP_SYS_ADMIN)

// Inherit finds the anonymous pages of pid's private areas that are still
// the very pages of its parent ppid at the same address (copy-on-write
// after fork: one page frame in both), so that the image holds them once:
// they go into a.Inherited instead of a.Pages, and restore copies them
// from the restored parent. Without the right to see page frame numbers
// (pagemap shows 0) nothing is found and every page is saved twice, as
// before. Call it before Plan.
func Inherit(pid, ppid int, areas, parent []*Area) error {
	byStart := map[uint64]*Area{}
	for _, a := range parent {
		byStart[a.Start] = a
	}
	var pm, ppm *os.File
	defer func() {
		if pm != nil {
			pm.Close()
			ppm.Close()
		}
	}()
	for _, a := range areas {
		pa := byStart[a.Start]
		private := func(a *Area) bool {
			return !a.Shared && !a.Deleted && a.AnonKB > 0 && (a.Kind == format.VMAAnon || a.Kind == format.VMAFile)
		}
		if pa == nil || pa.End != a.End || pa.Kind != a.Kind || !private(a) || !private(pa) {
			continue
		}
		if pm == nil {
			var err error
			if pm, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", pid)); err != nil {
				return fmt.Errorf("dump %d: open pagemap: %w", pid, err)
			}
			if ppm, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", ppid)); err != nil {
				return fmt.Errorf("dump %d: open pagemap: %w", ppid, err)
			}
		}
		if err := a.findInherited(pm, ppm); err != nil {
			return fmt.Errorf("dump %d: memory %#x-%#x: %w", pid, a.Start, a.End, err)
		}
	}
	return nil
}

func (a *Area) findInherited(pm, ppm *os.File) error {
	const chunk = 64 << 10
	n0 := min((a.End-a.Start)/pageSize, chunk)
	b, pb := make([]byte, n0*8), make([]byte, n0*8)
	a.Inherited = nil
	for addr := a.Start; addr < a.End; {
		n := min((a.End-addr)/pageSize, chunk)
		if _, err := pm.ReadAt(b[:n*8], int64(addr/pageSize*8)); err != nil {
			return fmt.Errorf("read pagemap: %w", err)
		}
		if _, err := ppm.ReadAt(pb[:n*8], int64(addr/pageSize*8)); err != nil {
			return fmt.Errorf("read parent's pagemap: %w", err)
		}
		for i := uint64(0); i < n; i++ {
			e, pe := binary.LittleEndian.Uint64(b[i*8:]), binary.LittleEndian.Uint64(pb[i*8:])
			// Anonymous pages only: a file page of a private file mapping
			// is the file's, never saved.
			if e&pmPresent == 0 || pe&pmPresent == 0 || (e|pe)&pmFile != 0 || e&pmPFN == 0 || e&pmPFN != pe&pmPFN {
				continue
			}
			p := addr + i*pageSize
			if l := len(a.Inherited); l > 0 && a.Inherited[l-1].End == p {
				a.Inherited[l-1].End += pageSize
			} else {
				a.Inherited = append(a.Inherited, format.Span{Start: p, End: p + pageSize})
			}
		}
		addr += n * pageSize
	}
	return nil
}

// withoutSpans returns runs minus the spans (both sorted, page-aligned).
func withoutSpans(runs []format.DataRun, spans []format.Span) []format.DataRun {
	if len(spans) == 0 {
		return runs
	}
	var out []format.DataRun
	for _, r := range runs {
		start, end := r.Addr, r.Addr+r.Len
		for _, s := range spans {
			if s.End <= start || s.Start >= end {
				continue
			}
			if s.Start > start {
				out = append(out, format.DataRun{Addr: start, Len: s.Start - start})
			}
			start = max(start, s.End)
			if start >= end {
				break
			}
		}
		if start < end {
			out = append(out, format.DataRun{Addr: start, Len: end - start})
		}
	}
	return out
}
