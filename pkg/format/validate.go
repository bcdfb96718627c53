package format

import (
	"fmt"
	"math"
	"slices"
)

const (
	maxXSave    = 64 << 10
	siginfoSize = 128
	maxThreads  = 1 << 16
	pageMask    = 4095
)

// validate checks what restore relies on, so that a damaged or hostile image
// is refused before anything is created.
func (img *Image) validate() error {
	if img.dataOff < 0 {
		return corrupt("no data section")
	}
	h := &img.Header
	if h.Processes != len(img.Processes) {
		return corrupt("header says %d processes, image holds %d", h.Processes, len(img.Processes))
	}
	if h.DataBytes != img.dataLen {
		return corrupt("header says %d data bytes, data section has %d", h.DataBytes, img.dataLen)
	}
	if len(img.Processes) == 0 {
		return corrupt("no processes")
	}
	pids := make(map[int]bool)
	tids := make(map[int]bool)
	for _, p := range img.Processes {
		if err := img.validateProcess(p); err != nil {
			return fmt.Errorf("process %d: %w", p.PID, err)
		}
		if pids[p.PID] {
			return corrupt("process %d appears twice", p.PID)
		}
		pids[p.PID] = true
		for _, t := range p.Threads {
			if tids[t.TID] {
				return corrupt("process %d: thread %d appears twice", p.PID, t.TID)
			}
			tids[t.TID] = true
		}
	}
	return nil
}

func (img *Image) validateProcess(p *Process) error {
	if p.PID <= 0 {
		return corrupt("bad pid %d", p.PID)
	}
	if (len(p.Threads) == 0 && !p.Zombie) || len(p.Threads) > maxThreads {
		return corrupt("%d threads", len(p.Threads))
	}
	for _, t := range p.Threads {
		if t.TID <= 0 || len(t.XSave) > maxXSave {
			return corrupt("thread %d: bad tid or %d-byte xsave area", t.TID, len(t.XSave))
		}
		if err := siginfos(t.Pending); err != nil {
			return err
		}
	}
	if err := siginfos(p.SharedPending); err != nil {
		return err
	}
	var prevEnd uint64
	for i := range p.VMAs {
		if err := img.validateVMA(&p.VMAs[i], prevEnd); err != nil {
			return err
		}
		prevEnd = p.VMAs[i].End
	}
	fds := make(map[int]bool)
	for _, f := range p.Files {
		if f.FD < 0 || fds[f.FD] {
			return corrupt("fd %d is negative or appears twice", f.FD)
		}
		fds[f.FD] = true
		switch f.Kind {
		case FileRegular, FileDir, FileChar, FileDeleted, FilePipe:
		default:
			return corrupt("fd %d has unknown kind %q", f.FD, f.Kind)
		}
		for _, r := range f.Content {
			// Addr is a file offset: it and the end of the run must fit off_t.
			if r.Addr > math.MaxInt64 || r.Len > math.MaxInt64-r.Addr {
				return corrupt("fd %d: content run %d+%d beyond the largest file offset", f.FD, r.Addr, r.Len)
			}
			if err := img.inData(r); err != nil {
				return fmt.Errorf("fd %d: %w", f.FD, err)
			}
		}
	}
	return disjointRuns(p)
}

// disjointRuns checks that no two runs of one process share bytes of the
// data section: restore streams the section once and hands every byte to at
// most one destination.
func disjointRuns(p *Process) error {
	var runs []DataRun
	for _, v := range p.VMAs {
		runs = append(runs, v.Pages...)
	}
	for _, f := range p.Files {
		for _, r := range f.Content {
			if r.Len > 0 {
				runs = append(runs, r)
			}
		}
	}
	slices.SortFunc(runs, func(a, b DataRun) int {
		switch {
		case a.Off < b.Off:
			return -1
		case a.Off > b.Off:
			return 1
		}
		return 0
	})
	for i := 1; i < len(runs); i++ {
		if prev := runs[i-1]; runs[i].Off < prev.Off+prev.Len { // in bounds: no overflow
			return corrupt("data runs %d+%d and %d+%d overlap", prev.Off, prev.Len, runs[i].Off, runs[i].Len)
		}
	}
	return nil
}

func siginfos(s [][]byte) error {
	for _, si := range s {
		if len(si) != siginfoSize {
			return corrupt("siginfo of %d bytes", len(si))
		}
	}
	return nil
}

func (img *Image) validateVMA(v *VMA, prevEnd uint64) error {
	if v.Start >= v.End || v.Start&pageMask != 0 || v.End&pageMask != 0 || v.Start < prevEnd {
		return corrupt("memory area %#x-%#x is empty, unaligned or out of order", v.Start, v.End)
	}
	switch v.Kind {
	case VMAAnon, VMASharedAnon, VMAVDSO:
	case VMAFile:
		if v.File == nil {
			return corrupt("file mapping %#x-%#x names no file", v.Start, v.End)
		}
	default:
		return corrupt("memory area %#x-%#x has unknown kind %q", v.Start, v.End, v.Kind)
	}
	prev := v.Start
	for _, r := range v.Pages {
		if r.Addr < prev || r.Addr >= v.End || r.Len == 0 || r.Addr&pageMask != 0 || r.Len&pageMask != 0 || r.Len > v.End-r.Addr {
			return corrupt("page run %#x+%#x outside memory area %#x-%#x", r.Addr, r.Len, v.Start, v.End)
		}
		if err := img.inData(r); err != nil {
			return err
		}
		prev = r.Addr + r.Len
	}
	return nil
}

func (img *Image) inData(r DataRun) error {
	if r.Off > uint64(img.dataLen) || r.Len > uint64(img.dataLen)-r.Off {
		return corrupt("data run %d+%d beyond the %d-byte data section", r.Off, r.Len, img.dataLen)
	}
	return nil
}
