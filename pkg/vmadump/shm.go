package vmadump

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/memfd"
)

// Shm is one shared memory object (the shmem file behind MAP_SHARED
// anonymous memory, /dev/zero or a memfd), however many processes map it.
type Shm struct {
	format.SharedMem
	Dev uint64 // device of the object, with Inode its identity on this machine
	f   *os.File
}

// OpenShm opens the object behind a shared anonymous area of pid through
// /proc/PID/map_files and finds its data with SEEK_DATA/SEEK_HOLE, which
// see pages no process touched lately (pagemap would miss them).
func OpenShm(pid int, a *Area) (*Shm, error) {
	s, err := openShm(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, a.Start, a.End), a.Name)
	if errors.Is(err, os.ErrPermission) {
		return nil, fmt.Errorf("dump %d: shared memory %#x-%#x can only be read through /proc/%d/map_files, which needs CAP_CHECKPOINT_RESTORE: %w",
			pid, a.Start, a.End, pid, ErrUnsupported)
	}
	if err != nil {
		return nil, fmt.Errorf("dump %d: shared memory %#x-%#x: %w", pid, a.Start, a.End, err)
	}
	return s, nil
}

// OpenShmPath opens a shared memory object by a map_files path (a System V
// segment is one too: inode is its shmid) and finds its data.
func OpenShmPath(path string, inode uint64) (*Shm, error) {
	s, err := openShm(path, "")
	if err == nil {
		s.Inode = inode
	}
	return s, err
}

// OpenMemfd opens the memfd that pid holds only as fd (no area maps it).
func OpenMemfd(pid, fd int, path string) (*Shm, error) {
	s, err := openShm(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), path)
	if err != nil {
		return nil, fmt.Errorf("fd %d: %w", fd, err)
	}
	return s, nil
}

// openShm opens the object at proc (a map_files or fd link) whose name in
// /proc is path, and describes a memfd as one.
func openShm(proc, path string) (*Shm, error) {
	f, err := os.Open(proc)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, os.NewSyscallError("fstat", err)
	}
	s := &Shm{SharedMem: format.SharedMem{Inode: st.Ino, Size: uint64(st.Size)}, Dev: st.Dev, f: f}
	if _, ok := memfd.Name(path); ok {
		err = memfd.Describe(f, path, &s.SharedMem)
	} else if file, ok := strings.CutSuffix(path, " (deleted)"); ok && file != "/dev/zero" && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 0 {
		// An unlinked file mapped MAP_SHARED (MAP_SHARED|MAP_ANONYMOUS
		// memory is a shmem file named /dev/zero): it comes back as an
		// unlinked file, one with the fds that hold it.
		s.Deleted, s.Mode = file, st.Mode&0o7777
	}
	if err == nil {
		err = s.findData()
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

func (s *Shm) findData() error {
	fd := int(s.f.Fd())
	end := int64(s.Size)
	for pos := int64(0); pos < end; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err == unix.ENXIO || (err == nil && data >= end) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lseek(SEEK_DATA): %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("lseek(SEEK_HOLE): %w", err)
		}
		data &^= pageSize - 1
		hole = min(hole, end)
		s.Pages = append(s.Pages, format.DataRun{Addr: uint64(data), Len: uint64(hole - data)})
		pos = hole
	}
	return nil
}

// Plan assigns data offsets to the object's runs from off on.
func (s *Shm) Plan(off uint64) uint64 {
	for i := range s.Pages {
		s.Pages[i].Off = off
		off += s.Pages[i].Len
	}
	return off
}

// Copy writes the object's data runs to w, read straight from the object.
func (s *Shm) Copy(w io.Writer) error {
	for _, r := range s.Pages {
		if _, err := io.Copy(w, io.NewSectionReader(s.f, int64(r.Addr), int64(r.Len))); err != nil {
			return fmt.Errorf("copy shared memory object %d: %w", s.Inode, err)
		}
	}
	return nil
}

// Close releases the object.
func (s *Shm) Close() error { return s.f.Close() }
