package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// fileChanges says how the file at path differs from the one recorded
// (inode, size, mtime), or the error that it cannot be looked at (gone).
func fileChanges(path string, inode uint64, size, mtimeNS int64) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, err
	}
	var changed []string
	// The inode only: maps shows an overlayfs file's lower device, stat
	// the overlay's.
	if st.Ino != inode {
		changed = append(changed, fmt.Sprintf("inode %d → %d (replaced by another file)", inode, st.Ino))
	}
	if st.Size != size {
		changed = append(changed, fmt.Sprintf("size %d → %d", size, st.Size))
	}
	if st.Mtim.Nano() != mtimeNS {
		changed = append(changed, fmt.Sprintf("mtime %s → %s", time.Unix(0, mtimeNS).UTC().Format(time.RFC3339Nano),
			time.Unix(0, st.Mtim.Nano()).UTC().Format(time.RFC3339Nano)))
	}
	return changed, nil
}

// embeddedDiffers tells whether the copy of e in the image is to be used:
// the file at its path is missing or another one than the process mapped.
func embeddedDiffers(e format.EmbeddedFile) bool {
	changed, err := fileChanges(e.Path, e.Inode, e.Size, e.MtimeNS)
	return err != nil || len(changed) > 0
}

// checkEmbedded decides for a mapping whose file differs or is missing but
// is in the image: a private mapping gets the copy; a shared one is
// refused, since its writes would go to the copy and never reach the
// user's file (and other processes sharing that file would not see them).
func checkEmbedded(pid int, v format.VMA, why string) error {
	if !v.Shared {
		return nil
	}
	return fmt.Errorf("process %d: mapped file %s (at %#x-%#x, MAP_SHARED) %s; the image holds a copy, but a shared mapping of a copy would write to the copy, not to the file: "+
		"put the original file back, or dump again: %w", pid, v.File.Path, v.Start, v.End, why, ErrIncompatible)
}

// createEmbedded makes a copy of every embedded file whose path is missing
// or differs: a memfd named after the file (maps then shows
// "/memfd:NAME (deleted)"), of the file's size and mode. Its content
// comes with the data section (embeddedSinks). A memfd needs no writable
// directory and leaves nothing behind.
func (o *objects) createEmbedded(img *format.Image) error {
	o.embedded = map[int]*os.File{}
	for _, e := range img.Objects.Embedded {
		if !embeddedDiffers(e) {
			continue // the file at the path is the one mapped: use it
		}
		name := filepath.Base(e.Path)
		fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_EXEC)
		if errors.Is(err, unix.EINVAL) {
			fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC) // before Linux 6.3
		}
		if err != nil {
			return fmt.Errorf("copy of embedded file %s: memfd_create: %w", e.Path, err)
		}
		f := os.NewFile(uintptr(fd), e.Path)
		o.embedded[e.ID] = f
		if err := f.Truncate(e.Size); err != nil {
			return fmt.Errorf("copy of embedded file %s: %w", e.Path, err)
		}
		if err := unix.Fchmod(fd, e.Mode&0o7777); err != nil {
			return fmt.Errorf("copy of embedded file %s: fchmod: %w", e.Path, err)
		}
	}
	return nil
}

func (o *objects) embeddedSinks(img *format.Image) []sink {
	var out []sink
	for _, e := range img.Objects.Embedded {
		if t := o.embedded[e.ID]; t != nil {
			for _, r := range e.Content {
				out = append(out, sink{off: r.Off, len: r.Len, addr: r.Addr, file: t})
			}
		}
	}
	return out
}

// embeddedFD returns the process's fd for the copy of the file v maps, or
// ok false when the file at the path is used.
func (x *target) embeddedFD(v format.VMA, o *objects, fds map[string]uint64) (fd uint64, ok bool, err error) {
	t := o.embedded[v.File.Embedded]
	if v.File.Embedded == 0 || t == nil {
		return 0, false, nil
	}
	key := fmt.Sprintf("embed:%d", v.File.Embedded)
	if fd, ok := fds[key]; ok {
		return fd, true, nil
	}
	if fd, err = x.chpoxCopy(t); err != nil {
		return 0, false, err
	}
	fds[key] = fd
	return fd, true, nil
}

// embeddedExe returns a read-only copy of the executable exe if the image
// holds one restore uses, else nil. The kernel refuses as exe a file open
// for writing anywhere (kernel/fork.c, replace_mm_exe_file): the data is
// in by now, so chpox's writable memfd is swapped for a read-only opening.
func (o *objects) embeddedExe(exe string) (*os.File, error) {
	for _, e := range o.img.Objects.Embedded {
		t := o.embedded[e.ID]
		if t == nil || e.Path != strings.TrimSuffix(exe, " (deleted)") {
			continue
		}
		fl, err := unix.FcntlInt(t.Fd(), unix.F_GETFL, 0)
		if err != nil {
			return nil, os.NewSyscallError("fcntl", err)
		}
		if fl&unix.O_ACCMODE == unix.O_RDONLY {
			return t, nil
		}
		ro, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", t.Fd()))
		if err != nil {
			return nil, fmt.Errorf("reopen the copy of %s: %w", e.Path, err)
		}
		t.Close()
		o.embedded[e.ID] = ro
		return ro, nil
	}
	return nil, nil
}
