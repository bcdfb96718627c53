// Package memfd checkpoints memfd_create(2) objects: their name, size,
// mode and seals. The content is saved like any shared memory object
// (pkg/vmadump's Shm), once however many fds and mappings, in however many
// processes, reach it. Restore makes a memfd of the same name, size and
// mode, lets chpox fill it, and seals it only after the content is in and
// every mapping of it exists (a write seal would refuse both).
package memfd

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
)

const prefix = "/memfd:"

// Name returns the name memfd_create was given, from a /proc link or maps
// path ("/memfd:NAME (deleted)"); false if path is no memfd.
func Name(path string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok {
		return "", false
	}
	return strings.TrimSuffix(rest, " (deleted)"), true
}

// Describe fills in the memfd fields of rec from f, an open copy of the
// object, whose /proc path is path. Hugetlb memfds are refused.
func Describe(f *os.File, path string, rec *format.SharedMem) error {
	name, _ := Name(path)
	var fs unix.Statfs_t
	if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
		return os.NewSyscallError("fstatfs", err)
	}
	if fs.Type == unix.HUGETLBFS_MAGIC {
		return fmt.Errorf("%s is hugetlb memory (MFD_HUGETLB), which chpox does not restore yet: %w", path, procinfo.ErrUnsupported)
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		return fmt.Errorf("memfd %q: %w", name, os.NewSyscallError("fcntl(F_GET_SEALS)", err))
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	rec.Memfd, rec.Name, rec.Seals, rec.Mode = true, name, seals, st.Mode&0o7777
	return nil
}

// Create makes the memfd of rec, of its size and mode, unsealed: Seal
// comes once it is filled and mapped.
func Create(rec format.SharedMem) (*os.File, error) {
	// Always sealable: a memfd made without MFD_ALLOW_SEALING has
	// F_SEAL_SEAL, which Seal puts back. MFD_EXEC keeps the kernel from
	// adding F_SEAL_EXEC by itself (vm.memfd_noexec); kernels before 6.3
	// know no MFD_EXEC.
	fd, err := unix.MemfdCreate(rec.Name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_EXEC)
	if err == unix.EINVAL || err == unix.EACCES {
		fd, err = unix.MemfdCreate(rec.Name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("memfd %q: %w", rec.Name, os.NewSyscallError("memfd_create", err))
	}
	f := os.NewFile(uintptr(fd), "memfd:"+rec.Name)
	if err := f.Truncate(int64(rec.Size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd %q: %w", rec.Name, err)
	}
	if err := unix.Fchmod(fd, rec.Mode); err != nil {
		f.Close()
		return nil, fmt.Errorf("memfd %q: %w", rec.Name, os.NewSyscallError("fchmod", err))
	}
	return f, nil
}

// Seal adds the saved seals to f.
func Seal(f *os.File, rec format.SharedMem) error {
	if rec.Seals == 0 {
		return nil
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, rec.Seals); err != nil {
		return fmt.Errorf("memfd %q: seals %#x: %w", rec.Name, rec.Seals, os.NewSyscallError("fcntl(F_ADD_SEALS)", err))
	}
	return nil
}
