package restore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/lazy"
	chobjects "github.com/chpox/chpox/pkg/objects"
)

// Lazy restore (Options.Lazy, docs/architecture.md "Lazy restore"): the
// data section is mapped and verified first, the private anonymous areas
// with pages are registered on a userfaultfd of their process instead of
// written, and pkg/lazy fills them while the tree runs.

// lazyState is a lazy restore in the making.
type lazyState struct {
	data []byte               // the data section, mmap'd read-only
	cp   *lazy.Copy           // nil until a process has lazy areas
	skip map[*format.VMA]bool // areas registered: writeData leaves them out
	// refused says why a process could not have a userfaultfd
	refused string
}

// notLazy says why an image cannot be restored lazily ("" if it can).
func notLazy(path string, img *format.Image) string {
	switch {
	case path == "-":
		return "the image comes from standard input"
	case img.Compressed():
		return "the image's data is compressed"
	case img.Streamed():
		return "the image was written as a stream"
	}
	return ""
}

// mapData maps the data section read-only and verifies its checksum, before
// anything of it is used: nothing runs before the data it needs is
// verified, and a lazy page is needed only after the tree runs. Reading
// through the mapping is page-cache speed; no fresh memory is written.
func mapData(path string, img *format.Image) ([]byte, error) {
	n := img.StoredBytes()
	if n == 0 {
		return nil, img.VerifyMapped(nil)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := unix.Mmap(int(f.Fd()), img.DataFileOffset(), int(n), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the data section: %w", os.NewSyscallError("mmap", err))
	}
	unix.Madvise(data, unix.MADV_SEQUENTIAL)
	start := time.Now()
	defer func() { slog.Debug("lazy restore: data section verified", "bytes", n, "took", time.Since(start)) }()
	if err := img.VerifyMapped(data); err != nil {
		unix.Munmap(data)
		return nil, err
	}
	unix.Madvise(data, unix.MADV_NORMAL)
	return data, nil
}

// lazyAreas are the areas of p that userfaultfd can fill, with the image
// pages for each: private anonymous (missing mode serves anonymous, shmem
// and hugetlb memory only; file-backed private pages are written as
// always), with pages, and none whose pages are locked before the tree
// runs or that behave differently on fork: mlock'd, sealed, guarded and
// wipe-on-fork areas, and all of a process under mlockall(MCL_FUTURE).
// Pages a process still shared copy-on-write with its parent (Inherited)
// come from the parent's record of the image, like its own. A lazy area
// that another process reads before the tree runs (copyInherited of a
// child of its own) is filled on those reads by its fault server.
func lazyAreas(n *node) ([]*format.VMA, [][]format.DataRun) {
	p := n.p
	if p.Memory != nil && p.Memory.LockFuture != "" {
		return nil, nil
	}
	var vmas []*format.VMA
	var runs [][]format.DataRun
	for i := range p.VMAs {
		v := &p.VMAs[i]
		if v.Kind != format.VMAAnon || v.Shared || len(v.Pages)+len(v.Inherited) == 0 ||
			v.Lock != "" || v.Sealed || len(v.Guards) > 0 || hasAdvice(v, format.AdviceWipeOnFork) {
			continue
		}
		r := append([]format.DataRun(nil), v.Pages...)
		if len(v.Inherited) > 0 {
			if n.parent == nil {
				continue // corrupt: copyInherited says so
			}
			r = append(r, inheritedRuns(n, v.Inherited)...)
			sort.Slice(r, func(i, j int) bool { return r[i].Addr < r[j].Addr })
		}
		vmas, runs = append(vmas, v), append(runs, r)
	}
	return vmas, runs
}

// inheritedRuns are the image pages of spans that n's process shares with
// its parent: the parent's own pages there, and where the parent shares
// them in turn with its parent, that one's, up the tree (the image holds
// such a page once, in the record of the oldest process that has it).
func inheritedRuns(n *node, spans []format.Span) []format.DataRun {
	var out []format.DataRun
	parent := n.parent
	if parent == nil || len(spans) == 0 {
		return nil
	}
	var up []format.Span
	for _, v := range parent.p.VMAs {
		for _, s := range spans {
			for _, r := range v.Pages {
				lo, hi := max(r.Addr, s.Start), min(r.Addr+r.Len, s.End)
				if lo < hi {
					out = append(out, format.DataRun{Addr: lo, Off: r.Off + (lo - r.Addr), Len: hi - lo})
				}
			}
			for _, i := range v.Inherited {
				lo, hi := max(i.Start, s.Start), min(i.End, s.End)
				if lo < hi {
					up = append(up, format.Span{Start: lo, End: hi})
				}
			}
		}
	}
	return append(out, inheritedRuns(parent, up)...)
}

func hasAdvice(v *format.VMA, a string) bool {
	for _, x := range v.Advice {
		if x == a {
			return true
		}
	}
	return false
}

// register makes n's lazy areas wait for chpox. A process whose
// userfaultfd cannot be had gets its memory written as without --lazy.
func (l *lazyState) register(n *node) error {
	vmas, runs := lazyAreas(n)
	if len(vmas) == 0 {
		return nil
	}
	f, err := n.x.openUffd()
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) {
		slog.Debug("lazy restore: no userfaultfd, memory written at once", "pid", n.p.PID, "err", err)
		l.refused = fmt.Sprintf("pid %d may not open a userfaultfd that also serves the kernel's accesses (%v; it needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1)", n.p.PID, err)
		return nil
	}
	if err != nil {
		return err
	}
	areas := make([]lazy.Area, len(vmas))
	for i, v := range vmas {
		areas[i] = lazy.Area{Start: v.Start, End: v.End, Runs: runs[i]}
	}
	if l.cp == nil {
		l.cp = lazy.New(l.data)
	}
	if err := l.cp.Add(n.p.PID, f, areas); err != nil {
		// Add closed the only copy of the userfaultfd: whatever it
		// registered is unregistered again, and the areas are written.
		slog.Debug("lazy restore: memory written at once", "pid", n.p.PID, "err", err)
		l.refused = fmt.Sprintf("pid %d: %v", n.p.PID, err)
		return nil
	}
	for _, v := range vmas {
		l.skip[v] = true
	}
	return nil
}

// openUffd makes the process open a userfaultfd, takes chpox's copy with
// pidfd_getfd and closes it in the process again, whose descriptor table
// stays as the image has it. Not UFFD_USER_MODE_ONLY: the kernel's own
// touches of lazy pages (a read(2) into the heap, rseq, futexes) must wait
// for chpox like the program's do, where a user-mode-only userfaultfd
// would fail them with EFAULT. That takes CAP_SYS_PTRACE
// (vm.unprivileged_userfaultfd = 0), which the process still has from
// chpox here, before its own credentials.
func (x *target) openUffd() (*os.File, error) {
	fd, err := x.t.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("injected userfaultfd: %w", err)
	}
	f, derr := chobjects.Dup(x.pid(), int(fd))
	if _, err := x.call("close", unix.SYS_CLOSE, fd); err != nil {
		if f != nil {
			f.Close()
		}
		return nil, err
	}
	return f, derr
}

// writeMapped writes the data section from its mapping (verified by
// mapData) into the processes and objects, as writeData does from the
// stream, without the areas pkg/lazy fills.
func writeMapped(data []byte, sinks []sink, progress *format.Progress) error {
	progress.Start(int64(len(data)))
	var err error
	for off := 0; off < len(data) && len(sinks) > 0; off += chunkSize {
		end := min(off+chunkSize, len(data))
		if sinks, err = deliver(uint64(off), data[off:end], sinks); err != nil {
			return err
		}
		progress.Add(end - off)
	}
	return nil
}
