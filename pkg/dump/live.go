package dump

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
	"github.com/chpox/chpox/pkg/ptrace"
	"github.com/chpox/chpox/pkg/vmadump"
)

// Live pre-copy (Options.Live, docs/architecture.md "Live dump"): the tree
// is frozen only to start write tracking and, at the end, for the state and
// the pages written since the last round.
var (
	// LiveRounds bounds the copy rounds made while the tree runs.
	LiveRounds = 12
	// LiveEnough: once a round leaves at most this much to copy, the tree
	// is frozen for the last one (about 10 ms of copying).
	LiveEnough uint64 = 16 << 20
)

// errNoLive says why a live dump could not start; the dump then copies
// memory frozen, as without --live.
var errNoLive = errors.New("live copy not possible")

// ErrNoLive wraps the reason a live copy could not start (StartLive).
var ErrNoLive = errNoLive

type liveDump struct {
	stage  *vmadump.Stage
	tracks map[int]*vmadump.Tracker
	rounds int
	first  time.Duration // the first freeze
	frozen time.Time     // the final freeze began
	// base is the last image of the series the copy goes on from, if any.
	base      *vmadump.Base
	chain     int          // Series.chain of base
	noCompact bool         // Series.noCompact
	members   map[int]bool // the processes of the image (Live.Write)
}

func (l *liveDump) close() {
	for _, t := range l.tracks {
		endTracking(t)
	}
	l.stage.Close()
	if l.base != nil {
		closeBase(l.base)
	}
}

// Series carries, from one checkpoint of a tree to the next (chpox run),
// each process's write tracking and the last image: the next checkpoint
// copies only the pages written since and takes the others from that
// image (docs/architecture.md "Incremental checkpoints").
type Series struct {
	tracks map[int]*vmadump.Tracker
	base   *vmadump.Base
	// chain counts the runs shared with earlier images since the last
	// image written without sharing: how fragmented base is.
	chain   int
	compact *compaction // rewriting base in the background, if not nil
	// noCompact: a compaction was stopped; none until the chain starts
	// again.
	noCompact bool
}

// compaction is a background format.Rewrite of a series' last image.
type compaction struct {
	stop atomic.Bool
	done chan struct{}
	f    *os.File // the rewritten image; nil if it failed or was stopped
	err  error
}

// Compact starts rewriting the last image without shared blocks, in the
// background, once it is made of more than ShareChain/4 pieces: then the
// checkpoint that would have rewritten it (8-14 s at 4 GiB on XFS, a third
// of a full checkpoint) shares blocks as the others do. A quarter, not
// all of ShareChain: off the critical path the rewrite can come sooner,
// and a clone from a base of one checkpoint's pieces costs half of one
// from two (at 4 GiB, 1 % written: 1.0-1.2 s against 2.0-2.7 s). The next
// checkpoint takes the rewritten image if it is done (Settle), else stops
// the rewrite and writes its image without sharing, as it did before.
func (s *Series) Compact() {
	if s == nil || s.base == nil || s.chain <= ShareChain/4 || s.compact != nil || s.noCompact {
		return
	}
	c := &compaction{done: make(chan struct{})}
	s.compact = c
	src := s.base.File
	go func() {
		defer close(c.done)
		began := time.Now()
		c.err = Background(func() (err error) {
			c.f, err = format.Rewrite(src, c.stop.Load)
			return err
		})
		slog.Debug("last image rewritten without shared blocks", "took", time.Since(began), "err", c.err)
	}()
}

// Settle ends a compaction: done, its image becomes the base (the same
// bytes in blocks of its own); running, it is stopped (the image stays as
// it was, unless the rewrite is past its fsync: then it is renamed into
// place first). serve, if not nil, is called every 2 ms meanwhile (the
// supervisor serves the job's events). A stopped compaction is not tried
// again until an image is written without sharing: checkpoints come
// faster than it runs.
func (s *Series) Settle(serve func()) {
	if s == nil || s.compact == nil {
		return
	}
	c := s.compact
	s.compact = nil
	c.stop.Store(true)
	tick := time.NewTicker(servePoll)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-c.done:
			waiting = false
		case <-tick.C:
			if serve != nil {
				serve()
			}
		}
	}
	if errors.Is(c.err, format.ErrCancelled) {
		s.noCompact = true
	} else if c.err != nil {
		slog.Info("rewriting the last image without shared blocks failed; checkpoints go on sharing with it", "err", c.err)
	}
	if c.f == nil {
		return
	}
	// Changed since its commit, its rewrite is no base either: the
	// index's sums would vouch for bytes they are not of.
	if err := s.base.Intact(); err != nil {
		c.f.Close()
		closeBase(s.base)
		s.base = nil
		return
	}
	base, err := vmadump.NewBase(c.f, s.base.Data)
	if err != nil {
		c.f.Close()
		return
	}
	for _, t := range s.tracks {
		t.Rebase(base)
	}
	closeBase(s.base)
	s.base, s.chain = base, 0
}

// ShareChain bounds Series.chain: past it, the next image is written
// without sharing blocks (format.Writer.share says why). At about 50 µs
// per extent on XFS, it keeps a clone under a second.
var ShareChain = 16 << 10

// CHPOX_TEST_SHARE_CHAIN sets ShareChain for the tests of its rewrite.
func init() {
	if v, err := strconv.Atoi(os.Getenv("CHPOX_TEST_SHARE_CHAIN")); err == nil && v >= 0 {
		ShareChain = v
	}
}

// closeBase lets the last image go on a thread of its own: a replaced
// image is unlinked, and closing it frees its blocks, which for an image
// made of thousands of pieces shared with others took 480-550 ms on XFS
// at 4 GiB, with the job frozen when it was done in the first freeze.
// Closed waits for these closes.
func closeBase(b *vmadump.Base) {
	closing.Add(1)
	go func() {
		defer closing.Done()
		Background(b.Close)
	}()
}

var closing sync.WaitGroup

// Close ends the series: the tracking stops, the next checkpoint is full.
func (s *Series) Close() {
	if s == nil {
		return
	}
	s.Settle(nil)
	for _, t := range s.tracks {
		endTracking(t)
	}
	if s.base != nil {
		closeBase(s.base)
	}
	s.tracks, s.base = nil, nil
}

// Closed waits until every last image let go of is closed (chpox run's
// end: no image of it stays open). Not in Series.Close: that runs in the
// first freeze too.
func Closed() { closing.Wait() }

// endTracking stops the write tracking of a process that goes on: its
// areas are unregistered a slice at a time (Tracker.Unregister) unless it
// has a userfaultfd of its own now, then the userfaultfd is closed.
func endTracking(t *vmadump.Tracker) {
	if ownUffd(t.PID) == nil {
		began := time.Now()
		t.Unregister()
		slog.Debug("write tracking ended", "pid", t.PID, "took", time.Since(began))
	}
	t.Close()
}

// Forget ends the tracking of pid, which exec'd or exited: its tracking
// was of the memory it had.
func (s *Series) Forget(pid int) {
	if s == nil {
		return
	}
	if t := s.tracks[pid]; t != nil {
		t.Close()
		delete(s.tracks, pid)
	}
}

// Live is a live copy driven by a caller that freezes and releases the
// tree itself (pkg/supervisor).
type Live struct{ l *liveDump }

// StartLive, with the tree ms frozen, starts the live copy of its memory,
// going on from series (nil: a full copy), which it takes over. An error
// wrapping ErrNoLive means no live copy is possible (the tree unchanged:
// copy it frozen); series is closed then.
func StartLive(ms []*Member, series *Series) (*Live, error) {
	l, err := startLive(ms, series)
	if err != nil {
		return nil, err
	}
	for _, t := range l.tracks {
		t.Continue(l.stage, true)
	}
	return &Live{l}, nil
}

// Precopy copies memory while the tree runs; between is called every few
// milliseconds meanwhile, on this thread (the supervisor serves the tree's
// events there), and true stops the rounds.
func (lv *Live) Precopy(between func() bool) { lv.l.precopy(between) }

// Write writes the image of the tree ms, frozen again and its state
// collected, as Write does, with memory from the live copy; release is
// called once the processes are no longer needed (see writeImage).
func (lv *Live) Write(ms []*Member, out string, opt WriteOptions, release func() error) (*ImageWriter, error) {
	lv.l.frozen = time.Now()
	if lv.l.chain > ShareChain {
		opt.Format.NoShare = true
		lv.l.chain, lv.l.noCompact = 0, false // this image joins the pieces: the chain starts again
	}
	lv.l.members = map[int]bool{}
	for _, m := range ms {
		lv.l.members[m.Info.PID] = m.T != nil
	}
	return writeImage(ms, out, opt, lv.l, release)
}

// Rounds is the number of copy rounds made while the tree ran.
func (lv *Live) Rounds() int { return lv.l.rounds }

// Keep, after w was committed, returns the series for the next checkpoint.
func (lv *Live) Keep(w *ImageWriter) (*Series, error) {
	l := lv.l
	l.stage.Close()
	f, err := w.Reopen()
	var base *vmadump.Base
	if err == nil {
		base, err = vmadump.NewBase(f, w.DataOffset())
	}
	if err != nil {
		l.close()
		return nil, fmt.Errorf("keep the image for the next checkpoint: %w", err)
	}
	if l.base != nil {
		closeBase(l.base)
	}
	s := &Series{tracks: map[int]*vmadump.Tracker{}, base: base, chain: l.chain + w.Clones, noCompact: l.noCompact}
	for pid, t := range l.tracks {
		if !t.Tracking() || !l.members[pid] {
			t.Close()
			continue
		}
		t.Keep(base)
		s.tracks[pid] = t
	}
	return s, nil
}

// Close abandons the live copy and its series.
func (lv *Live) Close() { lv.l.close() }

// tracker returns the tracker of pid, a new one without tracking (all its
// pages copied at the final freeze) for a process that appeared meanwhile.
func (l *liveDump) tracker(pid int) *vmadump.Tracker {
	t := l.tracks[pid]
	if t == nil {
		t, _ = vmadump.NewTracker(pid, nil, l.stage)
		t.Continue(l.stage, false)
		l.tracks[pid] = t
	}
	return t
}

// keepOnlyOf lets go of the kept trackers that are not of a process of ms
// now: it is gone, or its PID is another process's (a tracker of an older
// memory would take that process's pages from the last image).
func keepOnlyOf(tracks map[int]*vmadump.Tracker, ms []*Member) {
	now := map[int]uint64{}
	for _, m := range ms {
		if m.T != nil {
			now[m.Info.PID] = m.Info.Started
		}
	}
	for pid, t := range tracks {
		if started, ok := now[pid]; !ok || started != t.Started {
			// Its userfaultfd acts on the memory it was made in, no
			// other; not while the tree is frozen: a process that left
			// the tree may have gigabytes to unregister.
			go endTracking(t)
			delete(tracks, pid)
		}
	}
}

// startLive, with the tree frozen, gives chpox a userfaultfd of each
// process and write-protects its private memory; a process series
// tracks already goes on with its tracker.
func startLive(ms []*Member, series *Series) (*liveDump, error) {
	stage := vmadump.NewStage()
	l := &liveDump{stage: stage, tracks: map[int]*vmadump.Tracker{}}
	if series != nil {
		series.Settle(nil) // a no-op: the supervisor settled it before the freeze
		if series.base != nil && series.base.Intact() == nil {
			l.base, series.base, l.chain, l.noCompact = series.base, nil, series.chain, series.noCompact
		}
		for pid, t := range series.tracks {
			if l.base != nil {
				l.tracks[pid] = t
			} else {
				t.Close() // without the last image, its index is of no use
			}
		}
		series.tracks = nil
		series.Close()
	}
	t0 := time.Now()
	defer func() { slog.Debug("live copy started", "took", time.Since(t0)) }()
	keepOnlyOf(l.tracks, ms)
	if err := enoughMemory(ms, l.tracks); err != nil {
		l.close()
		return nil, err
	}
	if err := HealUffds(ms); err != nil {
		l.close()
		return nil, err
	}
	for _, m := range ms {
		if m.T == nil {
			continue
		}
		if err := ownUffd(m.Info.PID); err != nil {
			l.close()
			return nil, err
		}
		if err := sandboxed(m); err != nil {
			l.close()
			return nil, err
		}
		if l.tracks[m.Info.PID] != nil {
			continue
		}
		f, err := injectUffd(m)
		if err == nil {
			var t *vmadump.Tracker
			if t, err = vmadump.NewTracker(m.Info.PID, f, stage); err == nil {
				t.Started = m.Info.Started
				l.tracks[m.Info.PID] = t
			} else {
				f.Close()
			}
		}
		if err != nil {
			l.close()
			return nil, fmt.Errorf("%w: pid %d: %w", errNoLive, m.Info.PID, err)
		}
	}
	return l, nil
}

// enoughMemory refuses the live copy when the staged copy of the tree's
// private memory would not fit in the memory available: the copy would
// push the job itself into swap or the OOM killer. The frozen copy needs
// no staging.
// A process tracked since the last checkpoint of a series stages only
// the pages it wrote since: it is not counted.
func enoughMemory(ms []*Member, kept map[int]*vmadump.Tracker) error {
	var need uint64
	for _, m := range ms {
		if m.T != nil && kept[m.Info.PID] == nil {
			need += rssAnon(m.Info.PID)
		}
	}
	have, err := memAvailable()
	if err != nil {
		return fmt.Errorf("%w: %w", errNoLive, err)
	}
	if need+LiveReserve > have {
		return fmt.Errorf("%w: staging %d MiB of memory needs more than the %d MiB available (less %d MiB kept free)",
			errNoLive, need>>20, have>>20, LiveReserve>>20)
	}
	return nil
}

// LiveReserve is the memory a live copy leaves free for everything else.
var LiveReserve uint64 = 256 << 20

// rssAnon is a process's resident anonymous memory, in bytes.
func rssAnon(pid int) uint64 {
	return kbFields(fmt.Sprintf("/proc/%d/status", pid), "RssAnon:")
}

func memAvailable() (uint64, error) {
	n := kbFields("/proc/meminfo", "MemAvailable:")
	if n == 0 {
		return 0, errors.New("no MemAvailable in /proc/meminfo")
	}
	return n, nil
}

// ownUffd refuses the live copy of a process that uses userfaultfd
// itself: the kernel lets an area belong to one userfaultfd, and a scan
// would reset the process's own write-protection. A leftover of a
// killed chpox (leftoverUffds) does not count: it is closed first.
func ownUffd(pid int) error {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoLive, err)
	}
	left := leftoverUffds(pid)
	for _, e := range ents {
		if link, _ := os.Readlink(filepath.Join(dir, e.Name())); strings.Contains(link, "[userfaultfd]") && !slices.Contains(left, atoiOr(e.Name())) {
			return fmt.Errorf("%w: pid %d uses a userfaultfd itself (fd %s)", errNoLive, pid, e.Name())
		}
	}
	return nil
}

func atoiOr(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// leftoverUffds finds the userfaultfds a chpox killed during injectUffd
// left in the process (between the injected userfaultfd and close): made
// with exactly its flags, O_NONBLOCK|O_CLOEXEC, and never set up (no
// UFFDIO_API: features 0 in fdinfo), which the process could not have
// used for anything. (A program caught between its own userfaultfd and
// UFFDIO_API with these flags would lose its descriptor; that window is
// two system calls wide.)
func leftoverUffds(pid int) []int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	var out []int
	for _, e := range ents {
		if link, _ := os.Readlink(filepath.Join(dir, e.Name())); link != "anon_inode:[userfaultfd]" {
			continue
		}
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, e.Name()))
		if err != nil {
			continue
		}
		var flags, api bool
		for _, line := range strings.Split(string(info), "\n") {
			k, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			switch k {
			case "flags":
				f, _ := strconv.ParseUint(v, 8, 64)
				flags = f&^unix.O_ACCMODE == unix.O_NONBLOCK|unix.O_CLOEXEC
			case "API":
				parts := strings.Split(v, ":")
				api = len(parts) == 3 && parts[1] != "0"
			}
		}
		if flags && !api {
			out = append(out, atoiOr(e.Name()))
		}
	}
	return out
}

// HealUffds closes, in every frozen process of ms, the userfaultfds a
// killed chpox left there (leftoverUffds): the program never knew of
// them. Without any, it injects nothing.
func HealUffds(ms []*Member) error {
	for _, m := range ms {
		if m.T == nil {
			continue
		}
		fds := leftoverUffds(m.Info.PID)
		if len(fds) == 0 {
			continue
		}
		if err := closeInjected(m, fds); err != nil {
			return fmt.Errorf("pid %d: close the userfaultfds %v a killed chpox left: %w", m.Info.PID, fds, err)
		}
		slog.Info("closed userfaultfds a killed chpox left", "pid", m.Info.PID, "fds", fds)
	}
	return nil
}

func closeInjected(m *Member, fds []int) error {
	return inTrampoline(m, func(main *ptrace.Tracee) error {
		for _, fd := range fds {
			if _, err := main.Syscall(unix.SYS_CLOSE, uint64(fd)); err != nil {
				return fmt.Errorf("injected close(%d): %w", fd, err)
			}
		}
		return nil
	})
}

// inTrampoline runs calls, injected into m's main thread through the
// trampoline, and puts every thread back as it was, also on failure.
func inTrampoline(m *Member, calls func(main *ptrace.Tracee) error) (err error) {
	tr, err := trampoline(m.Threads())
	if err != nil {
		return err
	}
	defer func() {
		for _, t := range append(m.Others, m.T) {
			err = errors.Join(err, t.Undo())
		}
	}()
	if err := m.T.Enter(tr); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, m.T.Leave()) }()
	return calls(m.T)
}

// sandboxed refuses the live copy of a process with a thread under
// seccomp: the calls injected to open its userfaultfd are not run past
// its filters (Collect does that), and strict mode would kill it for them.
// The dump then copies it frozen, as the rest of the checkpoint does.
func sandboxed(m *Member) error {
	for _, t := range m.Threads() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/status", m.Info.PID, t.PID))
		if err != nil {
			return fmt.Errorf("%w: %w", errNoLive, err)
		}
		if v, ok := statusValue(string(b), "Seccomp:"); ok && v != "0" {
			return fmt.Errorf("%w: pid %d: thread %d runs under seccomp", errNoLive, m.Info.PID, t.PID)
		}
	}
	return nil
}

// injectUffd makes the process open a userfaultfd, takes a copy with
// pidfd_getfd and closes it in the process again: its descriptor table is
// as before and the userfaultfd lives only in chpox, so chpox's death
// closes it (the kernel then unregisters everything). The copy cannot be
// made by chpox itself: a userfaultfd serves the memory of its creator.
// UFFD_USER_MODE_ONLY always: the call runs with the process's
// privileges (vm.unprivileged_userfaultfd = 0 refuses a normal user
// without it), and in asynchronous write-protect mode the kernel resolves
// kernel-mode write faults itself anyway.
func injectUffd(m *Member) (f *os.File, err error) {
	err = inTrampoline(m, func(main *ptrace.Tracee) error {
		fd, err := main.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK|vmadump.UffdUserModeOnly)
		if err != nil {
			return fmt.Errorf("injected userfaultfd: %w", err)
		}
		var derr error
		f, derr = objects.Dup(main.PID, int(fd))
		if _, err := main.Syscall(unix.SYS_CLOSE, fd); err != nil {
			return fmt.Errorf("injected close(%d): %w", fd, err)
		}
		return derr
	})
	if err != nil && f != nil {
		f.Close()
		f = nil
	}
	return f, err
}

// precopy copies memory while the tree runs, round after round, until
// what is left is small, the rounds run out or stop shrinking.
// The rounds run on a thread of their own (Nicely); this thread, the
// tracer, meanwhile calls stop every few milliseconds (chpox run serves the
// job's events there: a job stopped at a fork must not wait for a round,
// 5-9 s at 4 GiB).
func (l *liveDump) precopy(stop func() bool) {
	var stopped atomic.Bool
	done := make(chan error, 1)
	go func() {
		done <- Nicely(func() error { l.copyRounds(stopped.Load); return nil })
	}()
	tick := time.NewTicker(servePoll)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			// On after a true too: the rounds end at their next look,
			// and the job's events are served until then.
			if stop() {
				stopped.Store(true)
			}
		}
	}
}

// servePoll: how often the tracer looks at the job while work runs in the
// background.
const servePoll = 2 * time.Millisecond

func (l *liveDump) copyRounds(stop func() bool) {
	// The areas are listed (smaps: 100 ms at 4 GiB) before the last two
	// copies, so what the job writes meanwhile is copied now, not at the
	// freeze: one more round copies what the rounds left and what was
	// written while listing, and the last copy what that round saw written
	// (at 4 GiB and 256 MB/s of writes, 15-19 MB left for the freeze with
	// the listing last, 5-7 MB this way).
	defer func() {
		for _, t := range l.tracks {
			t.Relist()
		}
		for pid, t := range l.tracks {
			copied, waiting, err := t.Round()
			slog.Debug("live round after the listing", "pid", pid, "copied", copied, "waiting", waiting)
			if err == nil {
				err = t.CopyPending()
			}
			if err != nil {
				slog.Debug("live copy failed", "pid", pid, "err", err)
			}
		}
	}()
	for pid, t := range l.tracks {
		if err := t.Start(); err != nil {
			slog.Debug("live tracking failed: memory copied at the final freeze", "pid", pid, "err", err)
		}
	}
	var last uint64
	for l.rounds < LiveRounds && !stop() {
		l.rounds++
		var copied, waiting uint64
		start := time.Now()
		for pid, t := range l.tracks {
			c, w, err := t.Round()
			copied, waiting = copied+c, waiting+w
			if err != nil {
				slog.Debug("live round failed", "pid", pid, "err", err)
			}
		}
		slog.Debug("live round", "round", l.rounds, "copied", copied, "waiting", waiting, "took", time.Since(start))
		if waiting <= LiveEnough || (l.rounds > 2 && waiting > last*9/10) {
			return
		}
		last = waiting
	}
}

// final, with the tree frozen again and its areas planned, stages every
// page the image needs that the rounds did not leave intact.
func (l *liveDump) final(procs []*proc) error {
	for _, p := range procs {
		if err := l.tracker(p.Info.PID).Finish(p.areas); err != nil {
			return err
		}
	}
	return nil
}

// dumpLive is Dump's --live path. It returns an error wrapping errNoLive
// (the tree running unchanged) when the live copy cannot start.
func dumpLive(pid int, opt Options, res *Result) error {
	ms, err := freezeTree(pid, opt.NoChildren)
	if err != nil {
		return fmt.Errorf("dump %d: %w", pid, err)
	}
	var pids []int
	for _, m := range ms {
		if m.Info.PID != pid {
			pids = append(pids, m.Info.PID)
		}
	}
	unlockTree, err := lockPIDs(pids)
	if err != nil {
		return errors.Join(fmt.Errorf("dump %d: %w", pid, err), Release(ms))
	}
	defer unlockTree()
	frozenAt := time.Now()
	l, err := startLive(ms, nil)
	l0 := time.Since(frozenAt)
	if rerr := Release(ms); rerr != nil {
		if l != nil {
			l.close()
		}
		return errors.Join(err, fmt.Errorf("dump %d: resume: %w", pid, rerr))
	}
	if err != nil {
		return err
	}
	defer l.close()
	l.first = l0
	l.precopy(opt.interrupted)
	if opt.interrupted() {
		return fmt.Errorf("dump %d: %w", pid, ErrInterrupted)
	}
	res.Rounds = l.rounds
	if err := frozenDump(pid, opt, res, l); err != nil {
		return err
	}
	res.Frozen = max(res.Frozen, l.first)
	return nil
}

// lockPIDs claims the processes for this live dump: between its two
// freezes they are not traced, and a second dump could seize them and
// fail the first one's final freeze (a frozen dump keeps them traced,
// which refuses the second). The claim is an abstract UNIX socket per
// PID, which the kernel lets go when chpox dies.
func lockPIDs(pids []int) (unlock func(), err error) {
	var held []int
	unlock = func() {
		for _, fd := range held {
			unix.Close(fd)
		}
	}
	for _, pid := range pids {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			unlock()
			return nil, os.NewSyscallError("socket", err)
		}
		held = append(held, fd)
		if err := unix.Bind(fd, &unix.SockaddrUnix{Name: fmt.Sprintf("@chpox-dump-%d", pid)}); err != nil {
			unlock()
			if errors.Is(err, unix.EADDRINUSE) {
				return nil, fmt.Errorf("pid %d is being checkpointed by another chpox dump; try again once it is done: %w", pid, ErrUnsupported)
			}
			return nil, os.NewSyscallError("bind", err)
		}
	}
	return unlock, nil
}
