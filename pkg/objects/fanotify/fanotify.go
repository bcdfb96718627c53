// Package fanotify checkpoints fanotify groups: fanotify_init's flags and
// every mark (inode, mount, filesystem) with its mask, ignore mask and
// flags.
//
// fdinfo shows the group (fs/notify/fdinfo.c, fanotify_show_fdinfo) and
// each mark: an inode mark by file handle (a path is found for it as for
// inotify), a mount mark by mount id, a filesystem mark by device. Events
// queued at dump time cannot be queued again: dump refuses a group with
// unread events. A permission event the program had read but not answered
// when the original was killed is answered "allow" by the kernel then; the
// restored program's answer for it fails with ENOENT. Events of what
// happened between dump and restore are lost. A mark on a mount namespace
// is refused.
package fanotify

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
)

// ErrQueued reports a group with unread events.
var ErrQueued = errors.New("has unread events, which cannot be queued again")

// Mark flags of fanotify_mark(2) (include/uapi/linux/fanotify.h).
const (
	markIgnoredMask       = 0x20  // FAN_MARK_IGNORED_MASK
	markIgnoredSurvModify = 0x40  // FAN_MARK_IGNORED_SURV_MODIFY
	markEvictable         = 0x200 // FAN_MARK_EVICTABLE
	markIgnore            = 0x400 // FAN_MARK_IGNORE
	markMount             = 0x10  // FAN_MARK_MOUNT
	markFilesystem        = 0x100 // FAN_MARK_FILESYSTEM
)

const fionread = 0x541B // FIONREAD, include/uapi/asm-generic/ioctls.h

// Describe returns the group pid holds at fd, whose fdinfo is info.
func Describe(pid, fd int, info string) (*format.Fanotify, error) {
	rec := &format.Fanotify{}
	for _, line := range strings.Split(info, "\n") {
		rest, ok := strings.CutPrefix(line, "fanotify ")
		if !ok {
			continue
		}
		kv := map[string]string{}
		for _, f := range strings.Fields(rest) {
			k, v, _ := strings.Cut(f, ":")
			kv[k] = v
		}
		num := func(k string) uint64 {
			n, err := strconv.ParseUint(kv[k], 16, 64)
			if err != nil && ok {
				ok = false
			}
			return n
		}
		ok = true
		if _, group := kv["event-flags"]; group {
			rec.Flags, rec.EventFlags = uint32(num("flags")), uint32(num("event-flags"))
			if !ok {
				return nil, fmt.Errorf("fanotify fdinfo %q: bad number", line)
			}
			continue
		}
		m := format.FanotifyMark{MFlags: uint32(num("mflags")), Mask: uint32(num("mask")), IgnoredMask: uint32(num("ignored_mask"))}
		var err error
		switch {
		case kv["ino"] != "":
			m.Kind = format.FanotifyInode
			h, herr := hex.DecodeString(kv["f_handle"])
			if herr != nil {
				return nil, fmt.Errorf("fanotify fdinfo %q: %w", line, herr)
			}
			m.Path, err = objects.PathOf(num("sdev"), num("ino"), int32(num("fhandle-type")), h)
		case kv["mnt_id"] != "":
			m.Kind = format.FanotifyMount
			m.Path, err = objects.MountByID(int(num("mnt_id")))
		case kv["sdev"] != "":
			m.Kind = format.FanotifyFilesystem
			sdev := num("sdev")
			m.Path, err = objects.MountOf(unix.Mkdev(uint32(sdev>>20), uint32(sdev&0xfffff)))
		default:
			return nil, fmt.Errorf("a fanotify mark of a kind chpox does not know (%q): %w", line, objects.ErrUnsupported)
		}
		if !ok {
			return nil, fmt.Errorf("fanotify fdinfo %q: bad number", line)
		}
		if err != nil {
			return nil, fmt.Errorf("fanotify %s mark: %w", m.Kind, err)
		}
		rec.Marks = append(rec.Marks, m)
	}
	f, err := objects.Dup(pid, fd)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := unix.IoctlGetInt(int(f.Fd()), fionread)
	if err != nil {
		return nil, os.NewSyscallError("ioctl(FIONREAD)", err)
	}
	if n > 0 {
		return nil, fmt.Errorf("%w (%d bytes of events wait): read them, or dump again in a moment", ErrQueued, n)
	}
	return rec, nil
}

// Create makes the group in chpox with its marks. The caller has checked
// that the process may make them.
func Create(rec *format.Fanotify) (*os.File, error) {
	fd, err := unix.FanotifyInit(uint(rec.Flags), uint(rec.EventFlags))
	if err != nil {
		return nil, os.NewSyscallError("fanotify_init", err)
	}
	f := os.NewFile(uintptr(fd), "fanotify")
	unix.CloseOnExec(fd)
	for _, m := range rec.Marks {
		if err := mark(fd, m); err != nil {
			f.Close()
			return nil, fmt.Errorf("fanotify %s mark on %s: %w", m.Kind, m.Path, err)
		}
	}
	return f, nil
}

func mark(fd int, m format.FanotifyMark) error {
	kind := map[string]uint{format.FanotifyInode: 0, format.FanotifyMount: markMount, format.FanotifyFilesystem: markFilesystem}[m.Kind]
	base := unix.FAN_MARK_ADD | kind | uint(m.MFlags&markEvictable)
	if m.Kind == format.FanotifyInode {
		base |= unix.FAN_MARK_DONT_FOLLOW // the path leads to the inode itself
	}
	if m.Mask != 0 {
		if err := unix.FanotifyMark(fd, base, uint64(m.Mask), unix.AT_FDCWD, m.Path); err != nil {
			return os.NewSyscallError("fanotify_mark", err)
		}
	}
	if m.IgnoredMask != 0 {
		ign := uint(markIgnoredMask)
		if m.MFlags&markIgnore != 0 {
			ign = markIgnore
		}
		if err := unix.FanotifyMark(fd, base|ign|uint(m.MFlags&markIgnoredSurvModify), uint64(m.IgnoredMask), unix.AT_FDCWD, m.Path); err != nil {
			return os.NewSyscallError("fanotify_mark(ignore)", err)
		}
	}
	return nil
}
