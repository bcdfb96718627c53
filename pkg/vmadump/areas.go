// Package vmadump finds the memory a process has and copies it out.
//
// It reads the list of areas from /proc/PID/maps (via prometheus/procfs),
// learns from /proc/PID/smaps which areas hold any private pages at all, and
// from /proc/PID/pagemap which pages exist, so a 1 GiB heap with 10 MiB
// touched costs 10 MiB. Page contents are read with process_vm_readv in
// large batches; areas the process cannot read (PROT_NONE) go through
// /proc/PID/mem, which ignores protections. It never writes to the process.
package vmadump

import (
	"fmt"
	"strings"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
)

// ErrUnsupported marks memory chpox cannot checkpoint yet (the same error
// as procinfo's, so callers check one).
var ErrUnsupported = procinfo.ErrUnsupported

// Area is a memory area with what dump needs beyond the image record.
type Area struct {
	format.VMA
	Deleted bool   // backing file was unlinked
	Inode   uint64 // of the backing file or shared memory object
	RssKB   uint64 // resident + swapped KiB, from smaps
	AnonKB  uint64 // private (anonymous) KiB, from smaps
	// maybeGuard: VmFlags "gu", guard regions may be installed (pagemap
	// tells which pages).
	maybeGuard bool

	// FileSize is a deleted file's size, -1 unknown: pages of a private
	// mapping beyond its end cannot be read (SIGBUS).
	FileSize int64
}

// Areas lists the memory areas of pid, classified for the image.
func Areas(pid int) ([]*Area, error) {
	l, err := List(pid)
	if err != nil {
		return nil, err
	}
	return areasOf(pid, l.maps, l.smaps)
}

// Listing is /proc/PID/maps and smaps as read at one time.
type Listing struct {
	maps  []*procfs.ProcMap
	smaps map[uint64]smapsEntry
}

// List reads pid's maps and smaps.
func List(pid int) (*Listing, error) {
	maps, err := readMaps(pid)
	if err != nil {
		return nil, err
	}
	sm, err := readSmaps(pid)
	if err != nil {
		return nil, err
	}
	return &Listing{maps: maps, smaps: sm}, nil
}

func readMaps(pid int) ([]*procfs.ProcMap, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return nil, fmt.Errorf("dump %d: %w", pid, err)
	}
	maps, err := p.ProcMaps()
	if err != nil {
		return nil, fmt.Errorf("dump %d: read maps: %w", pid, err)
	}
	return maps, nil
}

// AreasSince is Areas at a live copy's final freeze, with last the
// listing read just before it, while the process ran. smaps costs the
// kernel a walk of every page (50-100 ms at 4 GiB, most of the freeze):
// when maps shows the same areas as last, their smaps details (VmFlags,
// protection key) are taken from last and only maps is read. The sizes
// are not: every area is scanned for pages as if it held some, since a
// page may have appeared since. What this cannot see is a change of
// VmFlags alone (mlock, madvise of a whole area) in the milliseconds
// between last and the freeze (docs/architecture.md, "Live dump").
func AreasSince(pid int, last *Listing) ([]*Area, error) {
	if last == nil {
		return Areas(pid)
	}
	maps, err := readMaps(pid)
	if err != nil {
		return nil, err
	}
	if !sameMaps(maps, last.maps) {
		sm, err := readSmaps(pid)
		if err != nil {
			return nil, err
		}
		return areasOf(pid, maps, sm)
	}
	sm := make(map[uint64]smapsEntry, len(last.smaps))
	for k, e := range last.smaps {
		e.rss, e.anon = sizeUnknown, sizeUnknown
		sm[k] = e
	}
	return areasOf(pid, maps, sm)
}

// sizeUnknown stands for an area's sizes where they were not read: any
// non-zero value makes the area scanned for pages.
const sizeUnknown = 1 << 40

func sameMaps(a, b []*procfs.ProcMap) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.StartAddr != y.StartAddr || x.EndAddr != y.EndAddr || *x.Perms != *y.Perms ||
			x.Offset != y.Offset || x.Dev != y.Dev || x.Inode != y.Inode || x.Pathname != y.Pathname {
			return false
		}
	}
	return true
}

func areasOf(pid int, maps []*procfs.ProcMap, sm map[uint64]smapsEntry) ([]*Area, error) {
	var out []*Area
	for _, m := range maps {
		if m.Pathname == "[vsyscall]" {
			continue // fixed by the kernel, the same in every process
		}
		a, err := classify(m)
		if err != nil {
			return nil, fmt.Errorf("memory %#x-%#x: %w", m.StartAddr, m.EndAddr, err)
		}
		if s, ok := sm[a.Start]; ok {
			a.RssKB, a.AnonKB, a.GrowsDown = s.rss+s.swap, s.anon+s.swap, s.growsDown
			if err := details(a, s); err != nil {
				return nil, fmt.Errorf("memory %#x-%#x: %w", a.Start, a.End, err)
			}
			if a.Kind == format.VMASysVShm {
				a.SysVFlags = shmatFlags(s)
			}
		}
		if a.File != nil {
			if err := statFile(pid, a); err != nil {
				return nil, err
			}
		}
		if a.Deleted {
			// map_files needs CAP_CHECKPOINT_RESTORE: without it the
			// whole area is tried.
			var st unix.Stat_t
			if unix.Stat(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, a.Start, a.End), &st) == nil {
				a.FileSize = st.Size
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func classify(m *procfs.ProcMap) (*Area, error) {
	a := &Area{VMA: format.VMA{
		Start:  uint64(m.StartAddr),
		End:    uint64(m.EndAddr),
		Shared: m.Perms.Shared,
		Offset: uint64(m.Offset),
		Name:   m.Pathname,
	}, Inode: m.Inode, FileSize: -1}
	if m.Perms.Read {
		a.Prot |= format.ProtRead
	}
	if m.Perms.Write {
		a.Prot |= format.ProtWrite
	}
	if m.Perms.Execute {
		a.Prot |= format.ProtExec
	}
	path, deleted := strings.CutSuffix(m.Pathname, " (deleted)")
	a.Deleted = deleted
	switch {
	case m.Pathname == "[vvar]" || m.Pathname == "[vvar_vclock]" || m.Pathname == "[vdso]":
		a.Kind = format.VMAVDSO
	case strings.HasPrefix(path, "/SYSV") && deleted:
		// A shmat(2) attachment: the inode of its file is the shmid
		// (ipc/shm.c, newseg), 0 for a namespace's first segment, so this
		// comes before the inode-0 case. pkg/objects/sysv saves the
		// segment.
		a.Kind = format.VMASysVShm
	case m.Inode == 0:
		a.Kind = format.VMAAnon
		if m.Perms.Shared {
			a.Kind = format.VMASharedAnon
		}
	case path == "/[aio]":
		// The ring of an io_setup(2) context (fs/aio.c, aio_private_file):
		// its requests in flight and completions live in the kernel, and a
		// copy of the ring's pages would be a dead ring that io_getevents
		// and io_submit refuse (the context id is its address).
		return nil, fmt.Errorf("asynchronous I/O context (io_setup) at %#x: its requests and completions live in the kernel and cannot be created again: io_destroy it before the checkpoint: %w", a.Start, ErrUnsupported)
	case strings.HasPrefix(path, "/memfd:"):
		// A memfd, shared or private: its object is saved once
		// (sharedMemory) and mapped again; a private mapping also keeps
		// the pages it wrote.
		a.Kind = format.VMASharedAnon
	case deleted || path == "/dev/zero":
		// /dev/zero, memfd and unlinked files: the content exists only in
		// memory, so it is copied like anonymous memory.
		a.Kind = format.VMAAnon
		if m.Perms.Shared {
			a.Kind = format.VMASharedAnon
		}
	default:
		a.Kind = format.VMAFile
		a.File = &format.FileRef{Path: path, Dev: m.Dev, Inode: m.Inode}
	}
	return a, nil
}

// shmatFlags are the shmat(2) flags an attachment was made with: an
// mprotect can change its protection but not what it may become, so a
// mapping that may not be written was attached SHM_RDONLY. Whether it was
// SHM_EXEC cannot be told (every mapping of an exec-allowed file system
// may execute) and needs not: mprotect gives PROT_EXEC either way.
func shmatFlags(s smapsEntry) int {
	if !s.mayWrite {
		return shmRdonly
	}
	return 0
}

const shmRdonly = 0o10000 // SHM_RDONLY, include/uapi/linux/shm.h

// statFile records size and mtime of a mapped file, through map_files so the
// file really mapped is seen even if its path now names another one.
// map_files needs CAP_CHECKPOINT_RESTORE: without it (a user dumping their
// own process) the path is taken when it still names the mapped inode.
func statFile(pid int, a *Area) error {
	var st unix.Stat_t
	err := unix.Stat(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, a.Start, a.End), &st)
	if err == unix.EPERM {
		err = unix.Stat(a.File.Path, &st)
		if err == nil && st.Ino != a.File.Inode {
			return fmt.Errorf("dump %d: mapped file %s was replaced since it was mapped (inode %d, the mapping has %d); without CAP_CHECKPOINT_RESTORE the mapped one cannot be reached: %w",
				pid, a.File.Path, st.Ino, a.File.Inode, ErrUnsupported)
		}
	}
	if err != nil {
		return fmt.Errorf("dump %d: stat mapped file %s: %w", pid, a.File.Path, err)
	}
	a.File.Size, a.File.MtimeNS = st.Size, st.Mtim.Nano()
	return nil
}
