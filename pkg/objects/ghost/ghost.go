// Package ghost makes stand-ins for files a process held open after they
// were removed: a regular file, a directory, a FIFO or a device node that
// no path names any more. At dump such a file is recorded by kind (and a
// regular file's data, pkg/procinfo); at restore Make creates a new one
// of the same kind, mode and owner, opens it and removes it again, so the
// process holds an unlinked file as it did. Where the original path is
// free, the stand-in is made there, so /proc/PID/fd shows the same
// "PATH (deleted)"; where another file took the path meanwhile, that one
// is left alone and the stand-in gets a fresh name in the same directory
// (a regular file: an O_TMPFILE there).
package ghost

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// ErrNeedsRoot reports a stand-in only root can make (a device node).
var ErrNeedsRoot = errors.New("needs root")

// Make creates, opens and unlinks a stand-in for the removed file path of
// type and permission mode (st_mode), device number rdev (devices), owned
// by owner (nil: chpox's ids). Set-id bits are dropped: an image must not
// make root create a setuid program. A regular file and a FIFO come back
// open for reading and writing, a directory read-only, a device as O_PATH
// (opening a device can act on it; the process reopens it with its own
// flags through /proc/self/fd).
func Make(path string, mode uint32, rdev uint64, owner *format.Ownership) (*os.File, error) {
	typ, perm := mode&unix.S_IFMT, mode&0o1777
	var f *os.File
	var err error
	if name, ok := strings.CutPrefix(path, "/memfd:"); ok && typ == unix.S_IFREG {
		// A memfd (memfd_create(2)) is one again, with its name; its
		// seals are not kept.
		f, err = memfd(name)
	} else {
		// Another name where the path is taken or its directory not
		// writable (by chpox's fs ids).
		for _, at := range candidates(path) {
			if f, err = create(at, typ, rdev); err == nil || errors.Is(err, ErrNeedsRoot) {
				break
			}
		}
		if err != nil && typ == unix.S_IFREG {
			f, err = tmpfile(filepath.Dir(path))
		}
	}
	if err != nil {
		return nil, fmt.Errorf("stand-in for %s: %w", path, err)
	}
	if err := finish(f, typ, perm, rdev, owner); err != nil {
		f.Close()
		return nil, fmt.Errorf("stand-in for %s: %w", path, err)
	}
	return f, nil
}

// candidates are the names tried in turn: the original, then fresh names
// beside it, then (its directory is gone too) in $TMPDIR.
func candidates(path string) []string {
	dir, base := filepath.Split(path)
	out := []string{path}
	for i := 0; i < 4; i++ {
		out = append(out, filepath.Join(dir, fmt.Sprintf("%s.chpox-%d-%d", base, os.Getpid(), i)))
	}
	if _, err := os.Stat(dir); err != nil {
		out = nil
	}
	return append(out, filepath.Join(os.TempDir(), fmt.Sprintf("%s.chpox-%d", base, os.Getpid())))
}

func memfd(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	return os.NewFile(uintptr(fd), "memfd:"+name), nil
}

// create makes the node at path, opens it and unlinks it. Nothing is
// followed: a symlink planted at path fails the open.
func create(path string, typ uint32, rdev uint64) (*os.File, error) {
	const nofollow = unix.O_NOFOLLOW | unix.O_CLOEXEC
	var fd int
	var err error
	switch typ {
	case unix.S_IFREG:
		if fd, err = unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|nofollow, 0o600); err != nil {
			return nil, pathErr("create", path, err)
		}
	case unix.S_IFDIR:
		if err = unix.Mkdir(path, 0o700); err != nil {
			return nil, pathErr("mkdir", path, err)
		}
		if fd, err = unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|nofollow, 0); err != nil {
			unix.Rmdir(path)
			return nil, pathErr("open", path, err)
		}
	case unix.S_IFIFO:
		if err = unix.Mkfifo(path, 0o600); err != nil {
			return nil, pathErr("mkfifo", path, err)
		}
		// O_RDWR never blocks and keeps the FIFO's buffer alive.
		if fd, err = unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|nofollow, 0); err != nil {
			unix.Unlink(path)
			return nil, pathErr("open", path, err)
		}
	case unix.S_IFCHR, unix.S_IFBLK:
		if err = unix.Mknod(path, typ|0o600, int(rdev)); err != nil {
			if err == unix.EPERM {
				return nil, fmt.Errorf("mknod %s (device %d:%d): only root (CAP_MKNOD) can make a device node: %w",
					path, unix.Major(rdev), unix.Minor(rdev), ErrNeedsRoot)
			}
			return nil, pathErr("mknod", path, err)
		}
		if fd, err = unix.Open(path, unix.O_PATH|nofollow, 0); err != nil {
			unix.Unlink(path)
			return nil, pathErr("open", path, err)
		}
	default:
		return nil, fmt.Errorf("no stand-in for a file of type %#o", typ)
	}
	f := os.NewFile(uintptr(fd), path)
	rm := unix.Unlink
	if typ == unix.S_IFDIR {
		rm = unix.Rmdir
	}
	if err := rm(path); err != nil {
		f.Close()
		return nil, pathErr("remove", path, err)
	}
	return f, nil
}

func pathErr(op, path string, err error) error { return &os.PathError{Op: op, Path: path, Err: err} }

// tmpfile is an unlinked regular file in dir (or $TMPDIR).
func tmpfile(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		fd, err = unix.Open(os.TempDir(), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	}
	if err != nil {
		return nil, os.NewSyscallError("open(O_TMPFILE)", err)
	}
	return os.NewFile(uintptr(fd), "deleted"), nil
}

// finish checks that the open file is the node chpox made and unlinked
// (not one swapped in meanwhile), then gives it its owner and mode.
func finish(f *os.File, typ, perm uint32, rdev uint64, owner *format.Ownership) error {
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return os.NewSyscallError("fstat", err)
	}
	if st.Mode&unix.S_IFMT != typ || st.Nlink != 0 || (typ == unix.S_IFCHR || typ == unix.S_IFBLK) && st.Rdev != rdev {
		return fmt.Errorf("the node made is not what was opened (mode %#o, %d links): something changed the directory meanwhile", st.Mode, st.Nlink)
	}
	if owner != nil && (owner.UID != st.Uid || owner.GID != st.Gid) {
		if err := unix.Fchownat(fd, "", int(owner.UID), int(owner.GID), unix.AT_EMPTY_PATH); err != nil {
			if err == unix.EPERM {
				return fmt.Errorf("the original belonged to uid %d gid %d; only root can give a file to another user: %w",
					owner.UID, owner.GID, ErrNeedsRoot)
			}
			return os.NewSyscallError("fchownat", err)
		}
	}
	return Chmod(f, perm)
}

// Chmod sets the permission bits of a stand-in (set-id bits dropped).
// Through the fd's own /proc link: an O_PATH fd cannot fchmod, and the
// link leads to this very inode, never to a path someone could swap.
func Chmod(f *os.File, perm uint32) error {
	if err := unix.Chmod(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), perm&0o1777); err != nil {
		return os.NewSyscallError("chmod", err)
	}
	return nil
}
