package vmadump

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// A live copy takes the pages of a running process into a Stage, learns
// from PAGEMAP_SCAN which ones it wrote since (userfaultfd asynchronous
// write-protect: the kernel only notes the write, nothing waits), copies
// those again, and at the final freeze copies what was written since the
// last round; the image is then written from the Stage alone.

const chunkSlots = 16 << 10 // pages per staging chunk: 64 MiB

// Stage holds page copies in chpox's own anonymous memory, in chunks.
// Not a file: at gigabytes, writeback throttling of a staging file slowed
// every round and the final freeze to a crawl (4.4 s for 16 MiB at 4 GiB).
type Stage struct {
	chunks [][]byte
	used   uint32
}

// NewStage returns an empty Stage.
func NewStage() *Stage { return &Stage{} }

// Close frees the staged pages.
func (s *Stage) Close() {
	for _, c := range s.chunks {
		unix.Munmap(c)
	}
	s.chunks = nil
}

func (s *Stage) alloc() (uint32, error) {
	if s.used == uint32(len(s.chunks))*chunkSlots {
		c, err := unix.Mmap(-1, 0, chunkSlots*pageSize, unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			return 0, fmt.Errorf("staging memory: mmap: %w", err)
		}
		s.chunks = append(s.chunks, c)
	}
	s.used++
	return s.used - 1, nil
}

func (s *Stage) page(slot uint32) []byte {
	c, o := slot/chunkSlots, slot%chunkSlots*pageSize
	return s.chunks[c][o : o+pageSize]
}

// Tracker is the live copy of one process.
type Tracker struct {
	PID int
	// Started is the process's start time (procinfo.Info.Started), set by
	// the caller: a tracker kept for the next checkpoint is of the
	// process that then has PID only if it matches.
	Started uint64
	uffd    *os.File // chpox's copy of the process's userfaultfd; nil: none
	pm      *os.File
	stage   *Stage
	pages   pageTable // staged page address → slot
	// tracked: the areas registered for write-protect; a nil entry is no
	// longer scanned (the area changed under it).
	tracked []*format.Span
	todo    []format.DataRun // pages to copy in the next round
	// regs: every area Start registered, kept from checkpoint to
	// checkpoint, for Unregister.
	regs map[format.Span]bool

	// An incremental series (Keep): where each page is in base, the last
	// image, and next, the index CopyTo builds for the image it writes.
	base *Base
	prev pageIndex
	next pageIndex
	keep bool

	listing *Listing // read just before the final freeze (Relist)
	// stale: for each area Plan scanned, by start, the pages whose staged
	// copy may be stale.
	stale map[uint64][]format.DataRun
}

// pageTable maps page addresses to staging slots, by 2 MiB block: the
// final freeze looks up every page of the image, and a hash lookup per
// page would cost ~100 ms for 4 GiB.
type pageTable map[uint64]*[512]uint32 // slot+1; 0: not staged

func (pt pageTable) get(p uint64) (uint32, bool) {
	return pt.lookup(p, nil)
}

// lookup is get with a one-block cache for walks in address order.
func (pt pageTable) lookup(p uint64, c *blockCache) (uint32, bool) {
	var b *[512]uint32
	if c != nil && c.b != nil && c.key == p>>21 {
		b = c.b
	} else {
		b = pt[p>>21]
		if c != nil {
			c.key, c.b = p>>21, b
		}
	}
	if b == nil || b[p>>12&511] == 0 {
		return 0, false
	}
	return b[p>>12&511] - 1, true
}

type blockCache struct {
	key uint64
	b   *[512]uint32
}

func (pt pageTable) set(p uint64, slot uint32) {
	b := pt[p>>21]
	if b == nil {
		b = new([512]uint32)
		pt[p>>21] = b
	}
	b[p>>12&511] = slot + 1
}

func (pt pageTable) del(p uint64) {
	if b := pt[p>>21]; b != nil {
		b[p>>12&511] = 0
	}
}

// NewTracker prepares the live copy of frozen process pid, whose
// userfaultfd chpox holds as uffd (nil: nothing is tracked and the final
// freeze copies everything). Start does the rest with the process running.
func NewTracker(pid int, uffd *os.File, stage *Stage) (*Tracker, error) {
	t := &Tracker{PID: pid, uffd: uffd, stage: stage, pages: pageTable{}}
	if uffd == nil {
		return t, nil
	}
	var err error
	if t.pm, err = os.Open(fmt.Sprintf("/proc/%d/pagemap", pid)); err != nil {
		return nil, err
	}
	if err := uffdHandshake(uffd); err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// Start, with the process running, registers its private areas and
// write-protects their present pages, which the first Round copies. A
// page written before its protection is copied with that write; a page
// created after the listing is not protected, which PAGEMAP_SCAN reports
// as written. An area the kernel refuses (or that changed meanwhile) is
// not tracked: its pages are copied at the final freeze.
func (t *Tracker) Start() error {
	if t.uffd == nil {
		return nil
	}
	uffd := t.uffd
	areas, err := Areas(t.PID)
	if err != nil {
		return err
	}
	if _, err := Plan(t.PID, areas, 0); err != nil {
		return err
	}
	for _, a := range areas {
		if a.Shared || a.Kind == format.VMAVDSO || len(a.Pages) == 0 {
			continue
		}
		if t.resume(a) {
			continue
		}
		t.prev.forget(a.Start, a.End)
		if err := uffdRegisterWP(uffd, a.Start, a.End); err != nil {
			continue // e.g. a mapping the kernel cannot write-protect
		}
		if t.regs == nil {
			t.regs = map[format.Span]bool{}
		}
		t.regs[format.Span{Start: a.Start, End: a.End}] = true
		ok := true
		// Only the pages that exist: protecting a whole sparse area would
		// build page tables for all of it. A page created later is not
		// protected, which PAGEMAP_SCAN reports as written.
		for _, r := range a.Pages {
			if err := uffdProtect(uffd, r.Addr, r.Addr+r.Len); err != nil {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		t.tracked = append(t.tracked, &format.Span{Start: a.Start, End: a.End})
		t.todo = append(t.todo, a.Pages...)
	}
	return nil
}

// resume, for a tracker kept from the last checkpoint, goes on tracking
// area a if it is still registered (it was since that checkpoint's
// freeze): its pages written since are protected again and copied in the
// first round, the others come from the last image. An area that is not
// registered (new, moved, or mapped anew at the same place) is not.
func (t *Tracker) resume(a *Area) bool {
	if t.prev == nil {
		return false
	}
	var todo []format.DataRun
	err := scanWritten(t.pm, a.Start, a.End, true, false, func(start, end uint64) {
		todo = append(todo, format.DataRun{Addr: start, Len: end - start})
	})
	if err != nil {
		return false
	}
	t.tracked = append(t.tracked, &format.Span{Start: a.Start, End: a.End})
	t.todo = append(t.todo, todo...)
	return true
}

// Keep makes the tracker go on after the image it staged was committed
// as base: tracking continues (Finish protected every page again at the
// freeze), the staged pages are let go (the caller closes the Stage), and
// the next checkpoint's Start resumes with it.
func (t *Tracker) Keep(base *Base) {
	t.base, t.prev, t.next = base, t.next, nil
	t.pages, t.todo, t.tracked = pageTable{}, nil, nil
	t.keep = false
}

// Rebase makes a kept tracker take its unchanged pages from base, a copy
// of its last image byte for byte (format.Rewrite): its index holds.
func (t *Tracker) Rebase(base *Base) { t.base = base }

// Continue readies a kept tracker (or a new one) for a checkpoint that
// stages into stage and, with keep, is kept in turn.
func (t *Tracker) Continue(stage *Stage, keep bool) {
	t.stage, t.keep = stage, keep
	if t.pages == nil {
		t.pages = pageTable{}
	}
}

// Tracking tells whether the process's writes are tracked (it has a
// userfaultfd; without, every page is copied at the final freeze).
func (t *Tracker) Tracking() bool { return t.uffd != nil }

// unregisterStep bounds the memory one UFFDIO_UNREGISTER covers: the
// kernel holds the process's memory map lock for writing while it clears
// the protection of every page of the range, and the job's page faults
// wait (about 30 ms per GiB here).
const unregisterStep = 64 << 20

// Unregister ends the write tracking of the areas Start registered, a
// slice at a time. Closing the userfaultfd would do it too, in one step
// over all of them: a stall of the job of 120 ms at 4 GiB, after its
// checkpoint. The caller makes sure the process has no userfaultfd of its
// own, which could hold an area at an address that was once tracked (the
// kernel unregisters whatever context holds it). A range that failed
// (the area changed meanwhile) is left to the close.
func (t *Tracker) Unregister() {
	if t.uffd == nil {
		return
	}
	for sp := range t.regs {
		for a := sp.Start; a < sp.End; a += unregisterStep {
			uffdUnregister(t.uffd, a, min(a+unregisterStep, sp.End))
		}
	}
	t.regs = nil
}

// Close lets go of the userfaultfd (the last reference: the kernel
// unregisters every area) and of the pagemap.
func (t *Tracker) Close() {
	if t.uffd != nil {
		t.uffd.Close()
		t.uffd = nil
	}
	if t.pm != nil {
		t.pm.Close()
		t.pm = nil
	}
}

// Round copies the pages found written by the previous round (all present
// pages the first time) while the process runs, then finds those written
// since and protects them again. It returns the bytes copied and the
// bytes now waiting for the next round.
func (t *Tracker) Round() (copied, waiting uint64, err error) {
	for _, r := range t.todo {
		copied += r.Len
	}
	if err := t.copy(t.todo, nil); err != nil {
		return copied, 0, err
	}
	t.todo = t.todo[:0]
	for i, s := range t.tracked {
		if s == nil {
			continue
		}
		err := scanWritten(t.pm, s.Start, s.End, true, false, func(start, end uint64) {
			t.todo = append(t.todo, format.DataRun{Addr: start, Len: end - start})
			waiting += end - start
		})
		if err != nil {
			t.tracked[i] = nil // its pages are checked again at the final freeze
		}
	}
	return copied, waiting, nil
}

// Relist reads the process's areas, while it runs, for AreasSince at the
// final freeze; Listing returns them (nil if they could not be read).
func (t *Tracker) Relist() {
	t.listing, _ = List(t.PID)
}

// Listing is the areas Relist read.
func (t *Tracker) Listing() *Listing { return t.listing }

// CopyPending copies, while the process runs, the pages the last Round
// found written (they are write-protected again: a write after this copy
// shows at the final freeze).
func (t *Tracker) CopyPending() error {
	err := t.copy(t.todo, nil)
	if err == nil {
		t.todo = t.todo[:0]
	}
	return err
}

// Plan is vmadump.Plan at the final freeze: for an area still tracked,
// one PAGEMAP_SCAN finds its pages and, in the same walk, those whose
// staged copy may be stale (written, now the zero page, or not present),
// protecting them again if the tracking goes on; Finish then needs no
// walk of its own. At 4 GiB that saved one of the two walks, 8 ms of the
// freeze.
func (t *Tracker) Plan(areas []*Area, off uint64) (uint64, error) {
	t.stale = map[uint64][]format.DataRun{}
	return planWith(t.PID, areas, off, t.finalPages)
}

func (t *Tracker) finalPages(pm *os.File, a *Area) ([]format.DataRun, bool) {
	if t.uffd == nil || a.Shared || a.Deleted || a.maybeGuard || a.Kind == format.VMAVDSO || a.Kind == format.VMASysVShm {
		return nil, false
	}
	var inverted, mask uint64
	if a.Kind == format.VMAFile || a.Kind == format.VMASharedAnon {
		inverted, mask = pageIsFile, pageIsFile // the pages it wrote, not the file's
	}
	flags := uint64(pmScanCheckWPAsync)
	if t.keep {
		flags |= pmScanWPMatching
	}
	var runs, stale []format.DataRun
	add := func(rs []format.DataRun, start, end uint64) []format.DataRun {
		if l := len(rs); l > 0 && rs[l-1].Addr+rs[l-1].Len == start {
			rs[l-1].Len += end - start
			return rs
		}
		return append(rs, format.DataRun{Addr: start, Len: end - start})
	}
	regions, err := scanSplit(pm, a.Start, a.End, flags, inverted, mask, pageIsPresent|pageIsSwapped,
		pageIsWritten|pageIsPFNZero|pageIsSwapped)
	if err != nil {
		// Not registered (EPERM), or a piece failed after others had
		// protected their pages again, hiding those writes: Finish
		// copies all of it.
		t.stale[a.Start] = []format.DataRun{{Addr: a.Start, Len: a.End - a.Start}}
		return nil, false
	}
	for _, r := range regions {
		runs = add(runs, r.Start, r.End)
		if r.Categories&(pageIsWritten|pageIsPFNZero|pageIsSwapped) != 0 {
			stale = add(stale, r.Start, r.End)
		}
	}
	t.stale[a.Start] = stale
	return runs, true
}

// Finish, at the final freeze, copies every planned page of areas (the
// process's areas now) whose staged copy is missing or stale: written
// since it was copied, in an area no longer tracked, or now the zero page
// (MADV_DONTNEED then read: no write, new content). Staged pages of areas
// that are gone are simply not used.
func (t *Tracker) Finish(areas []*Area) error {
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", t.PID))
	if err != nil {
		return fmt.Errorf("dump %d: open pagemap: %w", t.PID, err)
	}
	defer pm.Close()
	var need []format.DataRun
	var bc blockCache
	var ic indexCache
	// Pages a scan found written and protected again, not copied since:
	// the protection hides that write.
	todo := slices.Clone(t.todo)
	slices.SortFunc(todo, func(a, b format.DataRun) int { return cmp.Compare(a.Addr, b.Addr) })
	for _, a := range areas {
		if len(a.Pages) == 0 {
			continue
		}
		all := t.uffd == nil
		var scanned []format.DataRun
		if runs, ok := t.stale[a.Start]; ok {
			scanned = runs
		} else if !all {
			err := scanWritten(pm, a.Start, a.End, t.keep, true, func(start, end uint64) {
				scanned = append(scanned, format.DataRun{Addr: start, Len: end - start})
			})
			all = err != nil // not tracked (EPERM), or it cannot tell
			// Two scans, one list each (present, then swapped): the
			// cursor below needs them in address order.
			slices.SortFunc(scanned, func(a, b format.DataRun) int { return cmp.Compare(a.Addr, b.Addr) })
		}
		// Cursors, not a set: the walk below visits every page of the
		// area in order, a million at 4 GiB, and a map lookup each cost
		// 20-30 ms of the freeze.
		from, _ := slices.BinarySearchFunc(todo, a.Start, func(r format.DataRun, at uint64) int { return cmp.Compare(r.Addr+r.Len, at+1) })
		stale := []*runCursor{{runs: todo[from:]}, {runs: scanned}}
		for _, r := range a.Pages {
			for p := r.Addr; p < r.Addr+r.Len; p += pageSize {
				if !all && p%blockSize == 0 && p+blockSize <= r.Addr+r.Len &&
					!stale[0].meets(p, p+blockSize) && !stale[1].meets(p, p+blockSize) && t.blockKept(p) {
					p += blockSize - pageSize // a whole block needs nothing: most of them
					continue
				}
				if !all && !stale[0].covers(p) && !stale[1].covers(p) {
					if _, ok := t.pages.lookup(p, &bc); ok {
						continue
					}
					if _, ok := t.prev.lookup(p, &ic); ok {
						continue // unwritten since the last image
					}
				}
				if l := len(need); l > 0 && need[l-1].Addr+need[l-1].Len == p {
					need[l-1].Len += pageSize
				} else {
					need = append(need, format.DataRun{Addr: p, Len: pageSize})
				}
			}
		}
	}
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", t.PID))
	if err != nil {
		return fmt.Errorf("dump %d: open mem: %w", t.PID, err)
	}
	defer mem.Close()
	return t.copy(need, mem)
}

// blockSize is the span of one block of pageTable and pageIndex.
const blockSize = 512 * pageSize

// blockKept tells whether every page of the block at p is staged or
// unwritten in the last image. Checking a block's slots is ten times
// quicker than asking page by page, and at 4 GiB the walk is 2 000
// blocks where it was a million pages (3-5 ms of the final freeze).
func (t *Tracker) blockKept(p uint64) bool {
	s, b := t.pages[p>>21], t.prev[p>>21]
	for i := range 512 {
		if (s == nil || s[i] == 0) && (b == nil || b[i].off == 0) {
			return false
		}
	}
	return true
}

// runCursor tells whether ascending addresses lie in sorted runs.
type runCursor struct {
	runs []format.DataRun
	i    int
}

func (c *runCursor) covers(p uint64) bool {
	for c.i < len(c.runs) && c.runs[c.i].Addr+c.runs[c.i].Len <= p {
		c.i++
	}
	return c.i < len(c.runs) && c.runs[c.i].Addr <= p
}

// meets tells whether a run meets [lo, hi); later calls ask from hi on.
func (c *runCursor) meets(lo, hi uint64) bool {
	for c.i < len(c.runs) && c.runs[c.i].Addr+c.runs[c.i].Len <= lo {
		c.i++
	}
	return c.i < len(c.runs) && c.runs[c.i].Addr < hi
}

// copy reads runs into their slots. Running (mem nil), a page that cannot
// be read is left unstaged; frozen, it is read through /proc/PID/mem
// (areas the process cannot read) and a failure is an error.
func (t *Tracker) copy(runs []format.DataRun, mem *os.File) error {
	var (
		remote []unix.RemoteIovec
		local  []unix.Iovec
		addrs  []uint64
		slots  []uint32
	)
	flush := func() error {
		if len(addrs) == 0 {
			return nil
		}
		n, err := unix.ProcessVMReadv(t.PID, local, remote, 0)
		if err != nil && err != unix.EFAULT && err != unix.ENOMEM && err != unix.ESRCH {
			return fmt.Errorf("dump %d: process_vm_readv: %w", t.PID, err)
		}
		done := max(n, 0) / pageSize
		for i, p := range addrs {
			if i >= done {
				if mem == nil {
					t.pages.del(p)
					continue
				}
				if _, err := mem.ReadAt(t.stage.page(slots[i]), int64(p)); err != nil {
					return fmt.Errorf("dump %d: read memory at %#x: %w", t.PID, p, err)
				}
			}
			t.pages.set(p, slots[i])
		}
		remote, local, addrs, slots = remote[:0], local[:0], addrs[:0], slots[:0]
		return nil
	}
	for _, r := range runs {
		for p := r.Addr; p < r.Addr+r.Len; p += pageSize {
			// Bounded batches: process_vm_readv moves at most
			// MAX_RW_COUNT (2 GiB - 4 KiB) a call and says nothing of the rest.
			if len(remote) == iovMax || len(local) == iovMax || len(addrs) == bufSize/pageSize {
				if err := flush(); err != nil {
					return err
				}
			}
			slot, ok := t.pages.get(p)
			if !ok {
				var err error
				if slot, err = t.stage.alloc(); err != nil {
					return err
				}
			}
			if l := len(remote); l > 0 && uint64(remote[l-1].Base)+uint64(remote[l-1].Len) == p {
				remote[l-1].Len += pageSize
			} else {
				remote = append(remote, unix.RemoteIovec{Base: uintptr(p), Len: pageSize})
			}
			if l := len(slots); l > 0 && slots[l-1]+1 == slot && slot%chunkSlots != 0 {
				local[len(local)-1].Len += pageSize
			} else {
				buf := t.stage.page(slot)
				local = append(local, unix.Iovec{Base: &buf[0]})
				local[len(local)-1].SetLen(pageSize)
			}
			addrs, slots = append(addrs, p), append(slots, slot)
		}
	}
	return flush()
}

// PageWriter is the image's data section as CopyTo fills it
// (format.Writer).
type PageWriter interface {
	io.Writer
	Summed() bool
	WriteSummed(p []byte, sum uint32) (int, error)
	CopyFrom(src *os.File, off, n int64, sum uint32) error
}

// CopyTo writes every planned run of areas into w, in data-section order:
// staged pages from the Stage, the others (unwritten since) from the last
// image. Finish has made sure each page is one or the other. Keeping, it
// records where each page went, with its CRC, for the next checkpoint.
func (t *Tracker) CopyTo(areas []*Area, w PageWriter) error {
	c := &pageCopy{t: t, w: w, sums: t.keep || w.Summed()}
	if t.keep {
		t.next = pageIndex{}
	}
	var bc blockCache
	var ic indexCache
	for _, a := range areas {
		for _, r := range a.Pages {
			for p := r.Addr; p < r.Addr+r.Len; p += pageSize {
				off := r.Off + (p - r.Addr)
				if slot, ok := t.pages.lookup(p, &bc); ok {
					if err := c.staged(p, off, slot); err != nil {
						return err
					}
					continue
				}
				e, ok := t.prev.lookup(p, &ic)
				if !ok {
					return fmt.Errorf("dump %d: page %#x was not staged", t.PID, p)
				}
				if err := c.reused(p, off, e); err != nil {
					return err
				}
			}
		}
	}
	if err := c.flush(); err != nil {
		return fmt.Errorf("dump %d: write pages: %w", t.PID, err)
	}
	return nil
}

// pageCopy gathers runs of pages CopyTo writes with one call: consecutive
// staging slots, or consecutive offsets of the last image.
type pageCopy struct {
	t        *Tracker
	w        PageWriter
	sums     bool
	from, to uint32 // staged slots [from, to)
	reuse    bool   // the run is of the last image: [boff, boff+n)
	boff, n  uint64
	sum      uint32 // the run's CRC-32C
}

func (c *pageCopy) staged(p, off uint64, slot uint32) error {
	if c.reuse || c.from == c.to || slot != c.to || slot%chunkSlots == 0 {
		if err := c.flush(); err != nil {
			return err
		}
		c.from, c.to = slot, slot
	}
	c.to = slot + 1
	if c.sums {
		s := format.Checksum(0, c.t.stage.page(slot))
		c.sum = format.Combine(c.sum, s, format.PageShift)
		if c.t.next != nil {
			c.t.next.set(p, off, s)
		}
	}
	return nil
}

func (c *pageCopy) reused(p, off uint64, e entry) error {
	if !c.reuse || c.boff+c.n != e.off {
		if err := c.flush(); err != nil {
			return err
		}
		c.reuse, c.boff = true, e.off
	}
	c.n += pageSize
	c.sum = format.Combine(c.sum, e.sum, format.PageShift)
	if c.t.next != nil {
		c.t.next.set(p, off, e.sum)
	}
	return nil
}

func (c *pageCopy) flush() error {
	var err error
	switch {
	case c.reuse:
		b := c.t.base
		err = c.w.CopyFrom(b.File, b.Data+int64(c.boff), int64(c.n), c.sum)
	case c.from != c.to:
		ch := c.t.stage.chunks[c.from/chunkSlots]
		buf := ch[c.from%chunkSlots*pageSize : (c.to-1)%chunkSlots*pageSize+pageSize]
		if c.sums {
			_, err = c.w.WriteSummed(buf, c.sum)
		} else {
			_, err = c.w.Write(buf)
		}
	}
	c.reuse, c.n, c.from, c.to, c.sum = false, 0, 0, 0, 0
	return err
}
