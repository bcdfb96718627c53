package main

import (
	"fmt"
	"hash/crc64"
	"io"
	"slices"

	"github.com/chpox/chpox/pkg/format"
)

// diffImages prints what changed from image a to image b, two checkpoints
// of one tree as a rule: header, processes that came and went, and per
// process its threads, memory areas (and how many of their saved pages
// differ), files and signal actions.
func diffImages(out io.Writer, a, b *format.Image) error {
	fmt.Fprintf(out, "--- %s, %s\n+++ %s, %s\n", a.Header.Created.Local().Format("2006-01-02 15:04:05"), a.Header.Tool,
		b.Header.Created.Local().Format("2006-01-02 15:04:05"), b.Header.Tool)
	if a.Header.Kernel != b.Header.Kernel || a.Header.Hostname != b.Header.Hostname {
		fmt.Fprintf(out, "  made on %s (kernel %s) / %s (kernel %s)\n", a.Header.Hostname, a.Header.Kernel, b.Header.Hostname, b.Header.Kernel)
	}
	fmt.Fprintf(out, "  data %s -> %s\n", bytesString(a.Header.DataBytes), bytesString(b.Header.DataBytes))
	byPID := map[int]*format.Process{}
	for _, p := range b.Processes {
		byPID[p.PID] = p
	}
	seen := map[int]bool{}
	for _, p := range a.Processes {
		seen[p.PID] = true
		q := byPID[p.PID]
		if q == nil {
			fmt.Fprintf(out, "- process %d %s\n", p.PID, p.Comm)
			continue
		}
		lines, err := diffProcess(a, b, p, q)
		if err != nil {
			return err
		}
		if len(lines) == 0 {
			fmt.Fprintf(out, "  process %d %s: unchanged\n", p.PID, q.Comm)
			continue
		}
		fmt.Fprintf(out, "  process %d %s:\n", p.PID, q.Comm)
		for _, l := range lines {
			fmt.Fprintf(out, "    %s\n", l)
		}
	}
	for _, q := range b.Processes {
		if !seen[q.PID] {
			fmt.Fprintf(out, "+ process %d %s (parent %d)\n", q.PID, q.Comm, q.PPID)
		}
	}
	return nil
}

func diffProcess(a, b *format.Image, p, q *format.Process) ([]string, error) {
	var out []string
	if p.Comm != q.Comm || p.Exe != q.Exe {
		out = append(out, fmt.Sprintf("program %s (%s) -> %s (%s)", p.Comm, p.Exe, q.Comm, q.Exe))
	}
	if p.Cwd != q.Cwd {
		out = append(out, fmt.Sprintf("working directory %s -> %s", p.Cwd, q.Cwd))
	}
	if p.Zombie != q.Zombie || p.Stopped != q.Stopped {
		out = append(out, fmt.Sprintf("state %s -> %s", procState(p), procState(q)))
	}
	out = append(out, diffSet("thread", tids(p), tids(q))...)
	mem, err := diffMemory(a, b, p, q)
	if err != nil {
		return nil, err
	}
	out = append(out, mem...)
	out = append(out, diffFiles(p, q)...)
	if fmt.Sprint(p.Sigactions) != fmt.Sprint(q.Sigactions) {
		out = append(out, "signal actions changed")
	}
	return out, nil
}

func procState(p *format.Process) string {
	switch {
	case p.Zombie:
		return "zombie"
	case p.Stopped:
		return "stopped"
	}
	return "running"
}

func tids(p *format.Process) []string {
	var out []string
	for _, t := range p.Threads {
		out = append(out, fmt.Sprint(t.TID))
	}
	return out
}

// diffSet names what is only in a (-) and only in b (+).
func diffSet(what string, a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, fmt.Sprintf("- %s %s", what, x))
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			out = append(out, fmt.Sprintf("+ %s %s", what, x))
		}
	}
	return out
}

// diffMemory lists areas that came, went or changed, and how many saved
// pages differ in the areas both have at the same place.
func diffMemory(a, b *format.Image, p, q *format.Process) ([]string, error) {
	type key struct{ start, end uint64 }
	old := map[key]format.VMA{}
	for _, v := range p.VMAs {
		old[key{v.Start, v.End}] = v
	}
	var out []string
	changed, total := 0, 0
	for _, v := range q.VMAs {
		k := key{v.Start, v.End}
		w, ok := old[k]
		if !ok {
			out = append(out, fmt.Sprintf("+ memory %x-%x %s %s", v.Start, v.End, v.Kind, v.Name))
			continue
		}
		delete(old, k)
		if w.Prot != v.Prot || w.Name != v.Name {
			out = append(out, fmt.Sprintf("memory %x-%x: %s %s -> %s %s", v.Start, v.End, protString(w), w.Name, protString(v), v.Name))
		}
		pa, err := pageSums(a, w.Pages)
		if err != nil {
			return nil, err
		}
		pb, err := pageSums(b, v.Pages)
		if err != nil {
			return nil, err
		}
		for addr, sum := range pb {
			total++
			if s, ok := pa[addr]; !ok || s != sum {
				changed++
			}
		}
		for addr := range pa {
			if _, ok := pb[addr]; !ok {
				changed++ // saved before, not now (dropped or never written since)
			}
		}
	}
	for k, w := range old {
		out = append(out, fmt.Sprintf("- memory %x-%x %s %s", k.start, k.end, w.Kind, w.Name))
	}
	slices.Sort(out)
	if changed > 0 {
		out = append(out, fmt.Sprintf("%d of %d saved pages differ", changed, total))
	}
	return out, nil
}

var crcTable = crc64.MakeTable(crc64.ECMA)

// pageSums reads runs of img's data section and checksums each page,
// by address.
func pageSums(img *format.Image, runs []format.DataRun) (map[uint64]uint64, error) {
	sums := map[uint64]uint64{}
	page := uint64(max(img.Header.PageSize, 1))
	data := img.Data()
	buf := make([]byte, page)
	for _, r := range runs {
		for off := uint64(0); off < r.Len; off += page {
			n := min(page, r.Len-off)
			if _, err := data.ReadAt(buf[:n], int64(r.Off+off)); err != nil {
				return nil, fmt.Errorf("read page data: %w", err)
			}
			sums[r.Addr+off] = crc64.Checksum(buf[:n], crcTable)
		}
	}
	return sums, nil
}

// diffFiles lists descriptors that came, went, or moved (offset, path).
func diffFiles(p, q *format.Process) []string {
	old := map[int]format.File{}
	for _, f := range p.Files {
		old[f.FD] = f
	}
	var out []string
	for _, f := range q.Files {
		g, ok := old[f.FD]
		delete(old, f.FD)
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("+ fd %d %s %s", f.FD, f.Kind, f.Path))
		case g.Kind != f.Kind || g.Path != f.Path:
			out = append(out, fmt.Sprintf("fd %d: %s %s -> %s %s", f.FD, g.Kind, g.Path, f.Kind, f.Path))
		case g.Pos != f.Pos:
			out = append(out, fmt.Sprintf("fd %d %s: offset %d -> %d", f.FD, f.Path, g.Pos, f.Pos))
		}
	}
	var gone []string
	for fd, g := range old {
		gone = append(gone, fmt.Sprintf("- fd %d %s %s", fd, g.Kind, g.Path))
	}
	slices.Sort(gone)
	return append(out, gone...)
}
