// Package inotify checkpoints inotify instances: every watch by path and
// mask, under its own watch descriptor.
//
// The kernel names a watch only by inode (fdinfo: wd, ino, sdev and a file
// handle, fs/notify/fdinfo.c); dump turns the handle into a path with
// open_by_handle_at(2), so a watch on a filesystem without file handles
// (procfs, sysfs ...) or on an unlinked inode is refused by name. Programs
// compare the wd of every event with the ones inotify_add_watch returned,
// so restore gives each watch its number again: wds come from an idr that
// hands out the next number after the last one given (idr_alloc_cyclic from
// 1, fs/notify/inotify/inotify_user.c), so the watches are added in wd
// order and a gap is used up by a watch on a scratch inode that is removed
// at once (its IN_IGNORED events are read away before the process runs).
//
// Events queued at dump time are the kernel's report of something that
// happened; they cannot be queued again, so dump refuses an instance with
// unread events (a moment later it is usually empty again). Events of
// changes made between dump and restore are lost, as for any watcher that
// was away. The package must not consume an event of the process.
package inotify

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
	"github.com/chpox/chpox/pkg/procinfo"
)

// ErrQueued reports an instance with unread events.
var ErrQueued = errors.New("has unread events, which cannot be queued again")

// MaxGap bounds the watch descriptors used up to recreate numbering: a
// watch that had wd 5,000,000 would need 5 million scratch watches.
// Measured here: about 9 µs per scratch watch (0.9 s for wd 100000).
const MaxGap = 1 << 17

// mark is one "inotify wd:..." line of fdinfo.
type mark struct {
	wd     int
	ino    uint64
	sdev   uint64 // the kernel's s_dev: major<<20 | minor
	mask   uint32
	htype  int32
	handle []byte
}

// parse reads the watch lines of an inotify fdinfo.
func parse(info string) ([]mark, error) {
	var out []mark
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(line, "inotify ")
		if !ok {
			continue
		}
		var m mark
		for _, kv := range strings.Fields(rest) {
			k, v, _ := strings.Cut(kv, ":")
			var err error
			var n uint64
			switch k {
			case "wd", "ino", "sdev", "mask", "fhandle-type":
				n, err = strconv.ParseUint(v, 16, 64)
			case "f_handle":
				m.handle, err = hex.DecodeString(v)
			}
			if err != nil {
				return nil, fmt.Errorf("inotify fdinfo %q: %w", line, err)
			}
			switch k {
			case "wd":
				m.wd = int(n)
			case "ino":
				m.ino = n
			case "sdev":
				m.sdev = n
			case "mask":
				m.mask = uint32(n)
			case "fhandle-type":
				m.htype = int32(n)
			}
		}
		if m.wd <= 0 {
			return nil, fmt.Errorf("inotify fdinfo %q: no watch descriptor", line)
		}
		out = append(out, m)
	}
	return out, nil
}

// Describe returns the watches, in wd order, of the inotify instance pid
// holds at fd, whose fdinfo is info.
func Describe(pid, fd int, info string) ([]format.InotifyWatch, error) {
	marks, err := parse(info)
	if err != nil {
		return nil, err
	}
	if err := queued(pid, fd); err != nil {
		return nil, err
	}
	var out []format.InotifyWatch
	for _, m := range marks {
		path, err := resolve(m)
		if err != nil {
			return nil, fmt.Errorf("inotify watch %d (inode %d on device %d:%d): %w", m.wd, m.ino, m.sdev>>20, m.sdev&0xfffff, err)
		}
		out = append(out, format.InotifyWatch{WD: m.wd, Path: path, Mask: m.mask})
	}
	// fdinfo lists the newest mark first; restore needs wd order.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].WD < out[j-1].WD; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	if n := len(out); n > 0 && out[n-1].WD-n > MaxGap {
		return nil, fmt.Errorf("inotify watch descriptor %d: recreating its number would take %d scratch watches (more than %d): %w", out[n-1].WD, out[n-1].WD-n, MaxGap, procinfo.ErrUnsupported)
	}
	return out, nil
}

// queued fails if events wait (FIONREAD on a copy of the instance: it
// counts them without taking any).
func queued(pid, fd int) error {
	f, err := objects.Dup(pid, fd)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := unix.IoctlGetInt(int(f.Fd()), fionread)
	if err != nil {
		return os.NewSyscallError("ioctl(FIONREAD)", err)
	}
	if n > 0 {
		return fmt.Errorf("%w (%d bytes of events wait): read them, or dump again in a moment", ErrQueued, n)
	}
	return nil
}

// resolve finds a path to the watched inode.
func resolve(m mark) (string, error) {
	return objects.PathOf(m.sdev, m.ino, m.htype, m.handle)
}

// Create makes the instance in chpox with the file status flags flags
// (O_NONBLOCK) and every watch under its wd. The caller has checked that
// the process may read every watched path.
func Create(flags int, watches []format.InotifyWatch) (*os.File, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("inotify_init1", err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	if err := rebuild(fd, watches); err != nil {
		f.Close()
		return nil, err
	}
	if flags&unix.O_NONBLOCK == 0 {
		if err := unix.SetNonblock(fd, false); err != nil {
			f.Close()
			return nil, os.NewSyscallError("fcntl(F_SETFL)", err)
		}
	}
	return f, nil
}

func rebuild(fd int, watches []format.InotifyWatch) error {
	var scratch string
	next := 1 // a new instance hands out 1 first
	for _, w := range watches {
		if w.WD > next && scratch == "" {
			mfd, err := unix.MemfdCreate("chpox-inotify-gap", unix.MFD_CLOEXEC)
			if err != nil {
				return os.NewSyscallError("memfd_create", err)
			}
			defer unix.Close(mfd)
			scratch = "/proc/self/fd/" + strconv.Itoa(mfd)
		}
		for ; next < w.WD; next++ {
			wd, err := unix.InotifyAddWatch(fd, scratch, unix.IN_ATTRIB)
			if err != nil {
				return fmt.Errorf("inotify: use up watch descriptor %d: %w", next, os.NewSyscallError("inotify_add_watch", err))
			}
			if _, err := unix.InotifyRmWatch(fd, uint32(wd)); err != nil {
				return fmt.Errorf("inotify: use up watch descriptor %d: %w", next, os.NewSyscallError("inotify_rm_watch", err))
			}
		}
		// The path leads to the inode itself: a watched symbolic link
		// stays the link.
		wd, err := unix.InotifyAddWatch(fd, w.Path, w.Mask|unix.IN_DONT_FOLLOW)
		if err != nil {
			return fmt.Errorf("inotify watch %d on %s: %w", w.WD, w.Path, os.NewSyscallError("inotify_add_watch", err))
		}
		if wd != w.WD {
			return fmt.Errorf("inotify watch on %s came back as wd %d, want %d", w.Path, wd, w.WD)
		}
		next++
	}
	if scratch != "" {
		return drain(fd)
	}
	return nil
}

// drain reads away the IN_IGNORED events of the scratch watches.
func drain(fd int) error {
	buf := make([]byte, 64<<10)
	for {
		_, err := unix.Read(fd, buf)
		if err == unix.EAGAIN {
			return nil
		}
		if err != nil {
			return os.NewSyscallError("read(inotify)", err)
		}
	}
}

const fionread = 0x541B // FIONREAD, include/uapi/asm-generic/ioctls.h
