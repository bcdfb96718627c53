package vmadump

import (
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// Shm is one shared memory object (the shmem file behind MAP_SHARED
// anonymous memory, /dev/zero or a memfd), however many processes map it.
type Shm struct {
	format.SharedMem
	f *os.File
}

// OpenShm opens the object behind a shared anonymous area of pid through
// /proc/PID/map_files and finds its data with SEEK_DATA/SEEK_HOLE, which
// see pages no process touched lately (pagemap would miss them).
func OpenShm(pid int, a *Area) (*Shm, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, a.Start, a.End))
	if err != nil {
		return nil, fmt.Errorf("dump %d: shared memory %#x-%#x: %w", pid, a.Start, a.End, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("dump %d: shared memory %#x-%#x: %w", pid, a.Start, a.End, err)
	}
	s := &Shm{SharedMem: format.SharedMem{Inode: a.Inode, Size: uint64(st.Size())}, f: f}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.Dev = sys.Dev
	}
	if err := s.findData(); err != nil {
		f.Close()
		return nil, fmt.Errorf("dump %d: shared memory %#x-%#x: %w", pid, a.Start, a.End, err)
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
