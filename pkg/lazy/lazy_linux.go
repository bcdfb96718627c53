// Package lazy fills a restored process's private anonymous memory after it
// started to run (chpox restore --lazy, docs/architecture.md "Lazy
// restore").
//
// Each process's areas are registered in missing mode on a userfaultfd the
// process opened (a userfaultfd serves its creator's memory) and chpox took
// a copy of. One goroutine per userfaultfd answers each first touch of a
// page with UFFDIO_COPY of a small block around it, straight from the
// image's mmap'd data section, and between faults copies the rest in large
// blocks in address order. When every page the image holds is in, the
// userfaultfd is closed: the kernel unregisters the areas, and the pages
// the image does not hold (holes) read as zero, as they did.
//
// A page is either still to come from the image or "done": copied, found
// there already, or discarded by the program (MADV_DONTNEED, munmap). A
// touch of a done page that is missing must read as zero, so it gets the
// zero page, never the image's.
package lazy

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

const pageSize = 4096

// Block sizes: a fault copies its aligned FaultBlock (the pages near a
// touched one are likely next; 64 KiB takes ~0.2 ms at the cold-memory
// speed of this VM, so a faulting thread waits little); the background
// pass copies BackgroundBlock at a time and looks for faults in between.
var (
	FaultBlock      uint64 = 64 << 10
	BackgroundBlock uint64 = 1 << 20
)

// Area is a private anonymous area whose pages (Runs, sorted by address,
// inside [Start, End)) the image holds.
type Area struct {
	Start, End uint64
	Runs       []format.DataRun
}

// Stats of a finished copy.
type Stats struct {
	Faults          uint64 // faults answered from the image
	Zeros           uint64 // faults answered with the zero page
	FaultBytes      uint64 // copied for faults
	BackgroundBytes uint64 // copied by the background pass
	Took            time.Duration
}

// Copy is the lazy filling of a restored tree's memory.
type Copy struct {
	data    []byte // the image's data section, mmap'd read-only
	pids    []int
	uffds   []*os.File // chpox's copies, for the guard
	run     chan struct{}
	stop    atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	errs    []error
	stats   Stats
	started time.Time
	guard   *Guard
	closed  bool
}

// New starts a copy from data, which it unmaps when done.
func New(data []byte) *Copy {
	return &Copy{data: data, run: make(chan struct{})}
}

// Add registers areas of process pid on uffd, chpox's copy of the
// process's userfaultfd, and serves their faults from now on (injected
// calls of the rest of the restore may touch them: rseq, robust lists).
// The copy owns uffd from here.
func (c *Copy) Add(pid int, uffd *os.File, areas []Area) error {
	if err := handshake(uffd); err != nil {
		uffd.Close()
		return fmt.Errorf("pid %d: %w", pid, err)
	}
	s := &server{c: c, pid: pid, f: uffd, fd: int(uffd.Fd())}
	for _, a := range areas {
		if err := register(s.fd, a.Start, a.End); err != nil {
			uffd.Close()
			return fmt.Errorf("pid %d: %w", pid, err)
		}
		ar := &area{start: a.Start, runs: a.Runs, done: make([]uint64, ((a.End-a.Start)/pageSize+63)/64)}
		s.left += ar.pages()
		s.areas = append(s.areas, ar)
		s.regions = append(s.regions, region{start: a.Start, end: a.End, a: ar, base: a.Start})
	}
	// The guard's copy keeps the userfaultfd open should chpox die.
	dup, err := unix.FcntlInt(uffd.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		uffd.Close()
		return fmt.Errorf("pid %d: dup userfaultfd: %w", pid, err)
	}
	c.pids = append(c.pids, pid)
	c.uffds = append(c.uffds, os.NewFile(uintptr(dup), "userfaultfd"))
	c.wg.Add(1)
	go s.serve()
	return nil
}

// Guard starts the guard over every process added (see guard_linux.go).
// It must be running before the tree does.
func (c *Copy) Guard() error {
	g, err := StartGuard(c.pids, c.uffds)
	for _, f := range c.uffds {
		f.Close()
	}
	c.uffds = nil
	if err != nil {
		return err
	}
	c.guard = g
	return nil
}

// stall holds the background pass back (CHPOX_TEST_LAZY_STALL, a
// duration): a test sees the tree run on faults alone, and kills chpox in
// the lazy phase.
var stall, _ = time.ParseDuration(os.Getenv("CHPOX_TEST_LAZY_STALL"))

// Run lets the background pass begin: the tree runs.
func (c *Copy) Run() {
	c.started = time.Now()
	if stall > 0 {
		time.AfterFunc(stall, func() { close(c.run) })
		return
	}
	close(c.run)
}

// Abort ends the copy of a restore that failed (its processes are killed).
func (c *Copy) Abort() {
	c.stop.Store(true)
	c.wg.Wait()
	if c.guard != nil {
		c.guard.Release()
	}
	for _, f := range c.uffds {
		f.Close()
	}
	c.unmap()
}

// Wait returns once every page is in (or its process is gone) and the
// guard has ended.
func (c *Copy) Wait() (Stats, error) {
	c.wg.Wait()
	c.stats.Took = time.Since(c.started)
	var err error
	if c.guard != nil {
		err = c.guard.Release()
	}
	c.unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats, errors.Join(append(c.errs, err)...)
}

func (c *Copy) unmap() {
	if !c.closed && c.data != nil {
		unix.Munmap(c.data)
	}
	c.closed = true
}

func (c *Copy) running() bool {
	select {
	case <-c.run:
		return true
	default:
		return false
	}
}

func (c *Copy) fail(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
}

func (c *Copy) add(s *server) {
	c.mu.Lock()
	c.stats.Faults += s.stats.Faults
	c.stats.Zeros += s.stats.Zeros
	c.stats.FaultBytes += s.stats.FaultBytes
	c.stats.BackgroundBytes += s.stats.BackgroundBytes
	c.mu.Unlock()
}

// area is one registered area in the image's addresses, with a done bit
// per page.
type area struct {
	start uint64
	runs  []format.DataRun
	done  []uint64
}

// pages counts the distinct pages of a's runs inside it.
func (a *area) pages() uint64 {
	seen := make([]uint64, len(a.done))
	var n uint64
	for _, r := range a.runs {
		for ia := r.Addr; ia < r.Addr+r.Len; ia += pageSize {
			if ia < a.start || (ia-a.start)/pageSize >= uint64(len(seen))*64 {
				continue
			}
			i := (ia - a.start) / pageSize
			if seen[i/64]&(1<<(i%64)) == 0 {
				seen[i/64] |= 1 << (i % 64)
				n++
			}
		}
	}
	return n
}

func (a *area) isDone(ia uint64) bool {
	i := (ia - a.start) / pageSize
	return a.done[i/64]&(1<<(i%64)) != 0
}

// runAt returns the run holding image address ia, nil in a hole.
func (a *area) runAt(ia uint64) *format.DataRun {
	i := sort.Search(len(a.runs), func(i int) bool { return a.runs[i].Addr+a.runs[i].Len > ia })
	if i < len(a.runs) && a.runs[i].Addr <= ia {
		return &a.runs[i]
	}
	return nil
}

// region is where (part of) an area is now: the program may have moved it
// with mremap. Address x of the region is image address base+(x-start).
type region struct {
	start, end uint64
	a          *area
	base       uint64
}

func (r region) image(x uint64) uint64 { return r.base + (x - r.start) }
func (r region) at(ia uint64) uint64   { return r.start + (ia - r.base) }
func (r region) holds(ia uint64) bool  { return ia >= r.base && ia < r.base+(r.end-r.start) }

var (
	errAgain = errors.New("an event waits to be read")
	errGone  = errors.New("the process is gone")
)

// server serves one userfaultfd: one process's memory.
type server struct {
	c       *Copy
	pid     int // 0 for a child forked during the copy
	f       *os.File
	fd      int
	areas   []*area
	regions []region
	left    uint64   // image pages not done
	pending []uint64 // faults to answer again once the events are read
	// missing: since when there has been no area at an address a copy
	// went to, with no event about it read; goneEnd: the end of the last
	// block taken for unmapped without an event; waiting: the last copy
	// waits for an event
	missing map[uint64]time.Time
	goneEnd uint64
	waiting bool
	cursor  struct {
		area, run int
		off       uint64
	}
	stats Stats
}

func (s *server) name() string {
	if s.pid == 0 {
		return "a child forked during the lazy copy"
	}
	return fmt.Sprintf("pid %d", s.pid)
}

func (s *server) serve() {
	defer s.c.wg.Done()
	defer s.f.Close()
	defer s.c.add(s)
	buf := make([]byte, 64*msgSize)
	for !s.c.stop.Load() {
		timeout := 0
		if !s.c.running() {
			timeout = 10
		} else if s.waiting || len(s.pending) > 0 {
			// Not a spin: the thread whose event is awaited needs a CPU.
			timeout = 1
		}
		fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, timeout)
		if err != nil && err != unix.EINTR {
			s.c.fail(fmt.Errorf("%s: poll userfaultfd: %w", s.name(), err))
			return
		}
		if fds[0].Revents&(unix.POLLERR|unix.POLLNVAL) != 0 {
			s.c.fail(fmt.Errorf("%s: userfaultfd polls %#x", s.name(), fds[0].Revents))
			return
		}
		if n > 0 || len(s.pending) > 0 {
			if err := s.drain(buf); err != nil {
				if err != errGone {
					s.c.fail(fmt.Errorf("%s: %w", s.name(), err))
				}
				return
			}
		}
		if !s.c.running() {
			continue
		}
		if s.left == 0 {
			// All in: closing the userfaultfd ends the registration, and
			// the kernel answers what waits (holes, discarded pages) with
			// zero pages.
			return
		}
		err = s.step()
		s.waiting = err == errAgain
		if err != nil && err != errAgain {
			if err != errGone {
				s.c.fail(fmt.Errorf("%s: %w", s.name(), err))
			}
			return
		}
	}
}

// drain reads and answers every message there is, then the faults that
// had to wait for an event.
func (s *server) drain(buf []byte) error {
	for {
		n, err := unix.Read(s.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			break
		}
		if err != nil {
			return fmt.Errorf("read userfaultfd: %w", err)
		}
		if n == 0 {
			break
		}
		for i := 0; i+msgSize <= n; i += msgSize {
			if err := s.handle(decodeMsg(buf[i:])); err != nil {
				return err
			}
		}
	}
	pending := s.pending
	s.pending = nil
	for _, addr := range pending {
		if err := s.fault(addr); err != nil {
			return err
		}
	}
	return nil
}

func (s *server) handle(m msg) error {
	switch m.event {
	case eventFault:
		return s.fault(m.b &^ (pageSize - 1))
	case eventFork:
		s.fork(int(uint32(m.a)))
	case eventRemap:
		s.remap(m.a, m.b, m.c)
	case eventRemove:
		s.discard(m.a, m.b, false)
	case eventUnmap:
		s.discard(m.a, m.b, true)
	}
	return nil
}

func (s *server) regionAt(x uint64) *region {
	for i := range s.regions {
		if r := &s.regions[i]; x >= r.start && x < r.end {
			return r
		}
	}
	return nil
}

// fault answers a first touch of the page at addr.
func (s *server) fault(addr uint64) error {
	err := s.answer(addr)
	if err == errAgain {
		s.pending = append(s.pending, addr)
		return nil
	}
	return err
}

func (s *server) answer(addr uint64) error {
	r := s.regionAt(addr)
	if r == nil {
		return s.zero(addr)
	}
	ia := r.image(addr)
	run := r.a.runAt(ia)
	if run == nil || r.a.isDone(ia) {
		return s.zero(addr)
	}
	lo := max(ia&^(FaultBlock-1), run.Addr, r.base)
	hi := min((ia&^(FaultBlock-1))+FaultBlock, run.Addr+run.Len, r.image(r.end))
	n, err := s.fill(r, run, lo, hi)
	s.stats.FaultBytes += n
	if err != nil {
		return err
	}
	s.stats.Faults++
	if !r.a.isDone(ia) {
		return fmt.Errorf("page %#x was not filled", addr)
	}
	// The page may have been there already (EEXIST): its waiter still
	// has to retry.
	return ignoreGone(wake(s.fd, addr, pageSize))
}

// zero answers a touch of a page that must read as zero: a hole, or a page
// the program discarded.
func (s *server) zero(addr uint64) error {
	s.stats.Zeros++
	switch err := zeroIn(s.fd, addr, pageSize); err {
	case nil:
		return nil
	case unix.EAGAIN:
		return errAgain
	case unix.ESRCH:
		return errGone
	default:
		// EEXIST: there meanwhile; ENOENT: unmapped meanwhile (the
		// retried access then meets whatever is there now).
		return ignoreGone(wake(s.fd, addr, pageSize))
	}
}

func ignoreGone(err error) error {
	if err == unix.ESRCH || err == unix.ENOENT {
		return nil
	}
	return err
}

// fill copies the pages of [lo, hi) (image addresses, inside run and
// region r) that are not done, and marks them done. It returns the bytes
// it copied.
func (s *server) fill(r *region, run *format.DataRun, lo, hi uint64) (uint64, error) {
	var copied uint64
	for lo < hi {
		if r.a.isDone(lo) {
			lo += pageSize
			continue
		}
		end := lo + pageSize
		for end < hi && !r.a.isDone(end) {
			end += pageSize
		}
		for lo < end {
			src := s.c.data[run.Off+(lo-run.Addr) : run.Off+(end-run.Addr)]
			n, err := copyIn(s.fd, r.at(lo), src)
			s.mark(r.a, lo, lo+n)
			lo += n
			copied += n
			if n > 0 {
				continue // a partial copy reports EAGAIN: go on after it
			}
			switch err {
			case unix.EEXIST:
				s.mark(r.a, lo, lo+pageSize) // there already
				lo += pageSize
			case unix.EAGAIN:
				return copied, errAgain
			case unix.ESRCH:
				return copied, errGone
			case unix.ENOENT:
				// No area there: the program moved it (mremap) or unmapped
				// it, and the kernel queues the event that says which only
				// after it let go of the map. Until that is read, the
				// pages are neither lost nor found.
				if !s.noEvent(r.at(lo)) {
					return copied, errAgain
				}
				delete(s.missing, r.at(lo))
				s.mark(r.a, lo, end)
				s.goneEnd = r.at(end)
				lo = end
			default:
				return copied, fmt.Errorf("UFFDIO_COPY at %#x: %w", r.at(lo), err)
			}
		}
	}
	return copied, nil
}

// noEvent reports whether there has been no area at address x for a
// second with no event about x read: none will come (an area a fork
// child never had, MADV_DONTFORK), and its pages are taken for unmapped.
// The blocks that follow one taken so go at once: a gone area costs one
// second, not one per block.
func (s *server) noEvent(x uint64) bool {
	if x == s.goneEnd {
		return true
	}
	since, ok := s.missing[x]
	if !ok {
		if s.missing == nil {
			s.missing = map[uint64]time.Time{}
		}
		s.missing[x] = time.Now()
		return false
	}
	return time.Since(since) > time.Second
}

// explained forgets the addresses of [lo, hi) found without an area: an
// event said where their area went.
func (s *server) explained(lo, hi uint64) {
	for x := range s.missing {
		if x >= lo && x < hi {
			delete(s.missing, x)
		}
	}
}

// mark records image pages [lo, hi) of a as done (only pages of its runs
// count towards s.left).
func (s *server) mark(a *area, lo, hi uint64) {
	for ia := lo; ia < hi; ia += pageSize {
		if ia < a.start || (ia-a.start)/pageSize >= uint64(len(a.done))*64 {
			continue
		}
		i := (ia - a.start) / pageSize
		if a.done[i/64]&(1<<(i%64)) != 0 {
			continue
		}
		if a.runAt(ia) == nil {
			continue // a hole: nothing to copy, zero when touched
		}
		a.done[i/64] |= 1 << (i % 64)
		s.left--
	}
}

// step copies the next block of the background pass, in image address
// order; s.left says when it is through.
func (s *server) step() error {
	cur := &s.cursor
	for cur.area < len(s.areas) {
		a := s.areas[cur.area]
		if cur.run >= len(a.runs) {
			cur.area, cur.run, cur.off = cur.area+1, 0, 0
			continue
		}
		run := &a.runs[cur.run]
		if cur.off >= run.Len {
			cur.run, cur.off = cur.run+1, 0
			continue
		}
		ia := run.Addr + cur.off
		if a.isDone(ia) {
			cur.off += pageSize
			continue
		}
		r := s.placeOf(a, ia)
		if r == nil {
			s.mark(a, ia, ia+pageSize) // unmapped
			continue
		}
		hi := min(ia+BackgroundBlock, run.Addr+run.Len, r.image(r.end))
		n, err := s.fill(r, run, ia, hi)
		s.stats.BackgroundBytes += n
		if err != nil {
			return err
		}
		cur.off = hi - run.Addr
		return nil
	}
	if s.left != 0 {
		return fmt.Errorf("background pass ended with %d pages not in", s.left)
	}
	return nil
}

// placeOf finds where image address ia of a is now.
func (s *server) placeOf(a *area, ia uint64) *region {
	for i := range s.regions {
		if r := &s.regions[i]; r.a == a && r.holds(ia) {
			return r
		}
	}
	return nil
}

// discard: the program dropped [lo, hi) (MADV_DONTNEED, MADV_REMOVE) or
// unmapped it; a later touch of a dropped page reads zero, and nothing of
// the image may go there any more.
func (s *server) discard(lo, hi uint64, unmap bool) {
	if unmap {
		s.explained(lo, hi)
	}
	var keep []region
	for _, r := range s.regions {
		from, to := max(lo, r.start), min(hi, r.end)
		if from >= to {
			keep = append(keep, r)
			continue
		}
		s.mark(r.a, r.image(from), r.image(to))
		if !unmap {
			keep = append(keep, r)
			continue
		}
		if r.start < from {
			keep = append(keep, region{start: r.start, end: from, a: r.a, base: r.base})
		}
		if to < r.end {
			keep = append(keep, region{start: to, end: r.end, a: r.a, base: r.image(to)})
		}
	}
	s.regions = keep
}

// remap: the program moved [from, from+n) to to (mremap); the pages still
// to come go to their new place.
func (s *server) remap(from, to, n uint64) {
	s.explained(from, from+n)
	var keep []region
	for _, r := range s.regions {
		lo, hi := max(from, r.start), min(from+n, r.end)
		if lo >= hi {
			keep = append(keep, r)
			continue
		}
		if r.start < lo {
			keep = append(keep, region{start: r.start, end: lo, a: r.a, base: r.base})
		}
		if hi < r.end {
			keep = append(keep, region{start: hi, end: r.end, a: r.a, base: r.image(hi)})
		}
		keep = append(keep, region{start: to + (lo - from), end: to + (hi - from), a: r.a, base: r.image(lo)})
	}
	s.regions = keep
}

// fork: the process forked; the child's pages still to come are the
// parent's (its other pages it got by copy-on-write), on a userfaultfd of
// its own.
func (s *server) fork(ufd int) {
	child := &server{c: s.c, f: os.NewFile(uintptr(ufd), "userfaultfd"), fd: ufd, left: s.left}
	copies := map[*area]*area{}
	for _, a := range s.areas {
		b := &area{start: a.start, runs: a.runs, done: append([]uint64(nil), a.done...)}
		copies[a] = b
		child.areas = append(child.areas, b)
	}
	for _, r := range s.regions {
		r.a = copies[r.a]
		child.regions = append(child.regions, r)
	}
	if err := s.c.guard.Hold(child.f); err != nil {
		s.c.fail(err)
	}
	s.c.wg.Add(1)
	go child.serve()
}
