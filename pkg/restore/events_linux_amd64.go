package restore

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/fanotify"
	"github.com/chpox/chpox/pkg/objects/inotify"
	"github.com/chpox/chpox/pkg/objects/pidfd"
)

// eventObject creates in chpox the event descriptor f describes (inotify,
// fanotify, pidfd), once per description; nil for other kinds.
func (x *target) eventObject(f format.File, o *objects) (*os.File, error) {
	var sup *os.File
	var err error
	switch f.Kind {
	case format.FileInotify:
		// chpox may read what the process may not: the process itself
		// checks, with its own filesystem ids, each path inotify_add_watch
		// would need read permission on (fs/notify/inotify/inotify_user.c).
		for _, w := range f.Inotify {
			if err := x.mayRead(w.Path); err != nil {
				return nil, fmt.Errorf("inotify watch %d: %w", w.WD, err)
			}
		}
		sup, err = inotify.Create(f.Flags, f.Inotify)
	case format.FileFanotify:
		for _, m := range f.Fanotify.Marks {
			if err := x.mayMark(m); err != nil {
				return nil, fmt.Errorf("fanotify %s mark on %s: %w", m.Kind, m.Path, err)
			}
		}
		if sup, err = fanotify.Create(f.Fanotify); err == nil {
			err = unix.SetNonblock(int(sup.Fd()), f.Flags&unix.O_NONBLOCK != 0)
		}
	case format.FilePidfd:
		sup, err = pidfd.Create(f.PidfdPID, f.Flags)
	default:
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	o.descs[f.Desc] = sup
	o.events = append(o.events, sup)
	return sup, nil
}

// capSysAdmin is CAP_SYS_ADMIN's bit (include/uapi/linux/capability.h).
const capSysAdmin = 21

// mayMark fails unless the process could make the fanotify mark m itself:
// read permission on an inode, CAP_SYS_ADMIN for a mount or filesystem
// (fs/notify/fanotify/fanotify_user.c, fanotify_find_path and
// do_fanotify_mark).
func (x *target) mayMark(m format.FanotifyMark) error {
	if m.Kind != format.FanotifyInode && x.caps&(1<<capSysAdmin) == 0 {
		return fmt.Errorf("the process lacks CAP_SYS_ADMIN, which this mark needs")
	}
	return x.mayRead(m.Path)
}

// mayRead fails unless the process may read path (faccessat2 with
// AT_EACCESS checks with the fs ids restore gave it).
func (x *target) mayRead(path string) error {
	x.resetScratch()
	at, err := x.cstring(path)
	if err != nil {
		return err
	}
	_, err = x.call("faccessat2("+path+", R_OK)", unix.SYS_FACCESSAT2, atFDCWD, at, unix.R_OK, unix.AT_EACCESS)
	return err
}

// addEpollWatch adds one watch to the epoll instance at epfd. A watch
// whose file is no longer the one at its fd (w.Desc) gets that file put at
// w.FD for the EPOLL_CTL_ADD only: epoll keys a watch by file and fd
// number, and the program's later EPOLL_CTL_MOD/DEL name that number.
func (x *target) addEpollWatch(epfd int, w format.EpollWatch, o *objects, here map[int]int, open map[int]bool) error {
	var saved, savedCloexec uint64
	hasSaved := false
	if w.Desc != 0 {
		src, err := x.descHere(w.Desc, o, here)
		if err != nil {
			return fmt.Errorf("epoll watch of fd %d: %w", w.FD, err)
		}
		if open[w.FD] {
			fdFlags, err := x.call("fcntl(F_GETFD)", unix.SYS_FCNTL, uint64(w.FD), unix.F_GETFD)
			if err != nil {
				return err
			}
			if fdFlags&unix.FD_CLOEXEC != 0 {
				savedCloexec = unix.O_CLOEXEC
			}
			if saved, err = x.call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, uint64(w.FD), unix.F_DUPFD_CLOEXEC, x.freeFD); err != nil {
				return err
			}
			hasSaved = true
		}
		// A new fd from chpox's copy may have landed on w.FD itself.
		if src != uint64(w.FD) {
			if _, err := x.call("dup3", unix.SYS_DUP3, src, uint64(w.FD), unix.O_CLOEXEC); err != nil {
				return err
			}
			if _, ok := here[w.Desc]; !ok {
				x.call("close", unix.SYS_CLOSE, src)
			}
		}
	}
	x.resetScratch()
	ev := binary.LittleEndian.AppendUint32(nil, w.Events) // struct epoll_event is packed
	ev = binary.LittleEndian.AppendUint64(ev, w.Data)
	at, err := x.put(ev)
	if err == nil {
		_, err = x.call(fmt.Sprintf("epoll_ctl(ADD %d)", w.FD), unix.SYS_EPOLL_CTL, uint64(epfd), unix.EPOLL_CTL_ADD, uint64(w.FD), at)
	}
	if w.Desc != 0 {
		// Put back what the fd holds in the process, or nothing.
		if hasSaved {
			if _, e := x.call("dup3", unix.SYS_DUP3, saved, uint64(w.FD), savedCloexec); e != nil && err == nil {
				err = e
			}
			x.call("close", unix.SYS_CLOSE, saved)
		} else {
			x.call("close", unix.SYS_CLOSE, uint64(w.FD))
		}
	}
	return err
}

// descHere returns an fd in the process of the description desc: its own
// fd, or a new one from chpox's copy (the caller closes that one).
func (x *target) descHere(desc int, o *objects, here map[int]int) (uint64, error) {
	if fd, ok := here[desc]; ok {
		return uint64(fd), nil
	}
	var sup *os.File
	if at, ok := o.firstFD[desc]; ok {
		var err error
		if sup, err = x.chpoxSide(at.f, at.pid, o); err != nil {
			return 0, err
		}
	}
	if sup == nil {
		// Dump takes such a file from this process or one restored before.
		return 0, fmt.Errorf("the watched file (description %d) is not created yet: it is open only in a process restored later", desc)
	}
	if _, err := x.supFD(); err != nil {
		return 0, err
	}
	return x.call("pidfd_getfd", unix.SYS_PIDFD_GETFD, x.supPidfd, uint64(sup.Fd()), 0)
}

// restoreOwners gives every description its SIGIO owner and signal, and
// turns O_ASYNC on where it was (open(2) ignores O_ASYNC; fcntl(F_SETFL)
// makes the driver send the signal, fs/fcntl.c setfl). It runs once the
// threads exist, as an owner may be one of them, and with the process's own
// credentials, which the kernel keeps with the owner.
func (x *target) restoreOwners(p *format.Process, o *objects) error {
	for _, f := range p.Files {
		if o := f.Owner; o != nil {
			if o.Sig != 0 {
				if _, err := x.call("fcntl(F_SETSIG)", unix.SYS_FCNTL, uint64(f.FD), unix.F_SETSIG, uint64(o.Sig)); err != nil {
					return fmt.Errorf("fd %d: %w", f.FD, err)
				}
			}
			if o.PID != 0 {
				x.resetScratch()
				ex := binary.LittleEndian.AppendUint32(nil, uint32(o.Type))
				ex = binary.LittleEndian.AppendUint32(ex, uint32(o.PID))
				at, err := x.put(ex)
				if err == nil {
					_, err = x.call("fcntl(F_SETOWN_EX)", unix.SYS_FCNTL, uint64(f.FD), unix.F_SETOWN_EX, at)
				}
				if err != nil {
					return fmt.Errorf("fd %d: owner %d: %w", f.FD, o.PID, err)
				}
			}
		}
		if f.Flags&unix.O_ASYNC != 0 && f.Kind != format.FileExternal && !o.async[f.Desc] {
			// The flags F_SETFL sets (fs/fcntl.c SETFL_MASK). Off, then on:
			// a description made in chpox may carry O_ASYNC already, and
			// only the change registers the fd the signal names (si_fd;
			// one per description, fs/fcntl.c fasync_insert_entry).
			fl := uint64(f.Flags) & (unix.O_APPEND | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME | unix.O_NONBLOCK)
			for _, v := range []uint64{fl &^ unix.O_ASYNC, fl} {
				if _, err := x.call("fcntl(F_SETFL, O_ASYNC)", unix.SYS_FCNTL, uint64(f.FD), unix.F_SETFL, v); err != nil {
					return fmt.Errorf("fd %d: %w", f.FD, err)
				}
			}
			o.async[f.Desc] = true
		}
	}
	return nil
}
