package restore

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// tmpIn stands in for a file that was deleted while open: an unlinked
// file (O_TMPFILE) in the same directory, or in $TMPDIR, that gets the saved
// content and that the process reopens through /proc/<chpox>/fd.
func tmpIn(dir string, mode uint32) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, mode)
	if err != nil {
		fd, err = unix.Open(os.TempDir(), unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, mode)
	}
	if err != nil {
		return nil, os.NewSyscallError("open(O_TMPFILE)", err)
	}
	return os.NewFile(uintptr(fd), "deleted"), nil
}

// restoreFiles closes what the loader had and gives the process every fd
// of the image at its number. A description shared with fds seen before
// (in this process: dup3; in another: chpox's copy, through pidfd_getfd)
// is shared again, so offset and flags stay common.
func (x *target) restoreFiles(p *format.Process, o *objects) error {
	if _, err := x.call("close_range", unix.SYS_CLOSE_RANGE, 0, ^uint64(0)>>32, 0); err != nil {
		return err
	}
	here := map[int]int{} // desc -> fd in this process
	x.freeFD = 0
	for _, f := range p.Files {
		x.freeFD = max(x.freeFD, uint64(f.FD)+1)
	}
	// epoll instances last: the fds they watch must exist first.
	for _, epollPass := range []bool{false, true} {
		for _, f := range p.Files {
			if (f.Kind == format.FileEpoll) != epollPass {
				continue
			}
			if err := x.installFile(f, o, here); err != nil {
				return fmt.Errorf("fd %d (%s): %w", f.FD, f.Path, err)
			}
			here[f.Desc] = f.FD
		}
	}
	if err := x.controllingTerminal(p, o); err != nil {
		return err
	}
	if x.supPidfd != 0 {
		x.call("close", unix.SYS_CLOSE, x.supPidfd)
	}
	return nil
}

func (x *target) installFile(f format.File, o *objects, here map[int]int) error {
	cloexec := uint64(f.Flags) & unix.O_CLOEXEC
	if fd, ok := here[f.Desc]; ok {
		_, err := x.call("dup3", unix.SYS_DUP3, uint64(fd), uint64(f.FD), cloexec)
		return err
	}
	sup := o.descs[f.Desc]
	if sup == nil {
		var err error
		switch f.Kind {
		case format.FilePipe:
			sup, err = o.pipeEnd(f)
		case format.FileExternal:
			if sup = o.externals[[2]int{x.pid(), f.FD}]; sup == nil {
				err = fmt.Errorf("no stand-in for external object %d", f.External)
			}
		case format.FilePTYMaster, format.FilePTYSlave:
			sup, err = o.ptyEnd(f)
		case format.FileUnix, format.FileInet, format.FileNetlink:
			err = fmt.Errorf("socket %d was not created", f.Socket)
		}
		if err != nil {
			return err
		}
	}
	if sup != nil {
		return x.fromChpox(sup, f.FD, cloexec)
	}
	var err error
	switch f.Kind {
	case format.FileEventfd:
		err = x.makeEventfd(f)
	case format.FileEpoll:
		err = x.makeEpoll(f)
	default:
		err = x.openFile(f, o)
	}
	if err != nil {
		return err
	}
	return o.keep(f.Desc, x.pid(), f.FD)
}

const efdSemaphore = 1 // EFD_SEMAPHORE

// makeEventfd creates an eventfd with the saved counter (written, as the
// initial value of eventfd2 is only 32 bits).
func (x *target) makeEventfd(f format.File) error {
	flags := uint64(f.Flags) & (unix.O_NONBLOCK | unix.O_CLOEXEC)
	if f.Semaphore {
		flags |= efdSemaphore
	}
	fd, err := x.call("eventfd2", unix.SYS_EVENTFD2, 0, flags)
	if err != nil {
		return err
	}
	if f.Count > 0 {
		x.resetScratch()
		at, err := x.put(u64s(f.Count))
		if err != nil {
			return err
		}
		if _, err := x.call("write(eventfd)", unix.SYS_WRITE, fd, at, 8); err != nil {
			return err
		}
	}
	return x.moveFD(fd, f.FD, uint64(f.Flags)&unix.O_CLOEXEC)
}

// makeEpoll creates an epoll instance watching the saved fds with their
// events and data.
func (x *target) makeEpoll(f format.File) error {
	fd, err := x.call("epoll_create1", unix.SYS_EPOLL_CREATE1, uint64(f.Flags)&unix.O_CLOEXEC)
	if err != nil {
		return err
	}
	if err := x.moveFD(fd, f.FD, uint64(f.Flags)&unix.O_CLOEXEC); err != nil {
		return err
	}
	for _, w := range f.Watches {
		x.resetScratch()
		ev := binary.LittleEndian.AppendUint32(nil, w.Events) // struct epoll_event is packed
		ev = binary.LittleEndian.AppendUint64(ev, w.Data)
		at, err := x.put(ev)
		if err != nil {
			return err
		}
		if _, err := x.call(fmt.Sprintf("epoll_ctl(ADD %d)", w.FD), unix.SYS_EPOLL_CTL, uint64(f.FD), unix.EPOLL_CTL_ADD, uint64(w.FD), at); err != nil {
			return err
		}
	}
	return nil
}

// fromChpox installs chpox's file sup at fd: pidfd_getfd(2) on chpox
// gives the process the very same open file description.
func (x *target) fromChpox(sup *os.File, fd int, cloexec uint64) error {
	if err := x.openChpox(); err != nil {
		return err
	}
	tmp, err := x.call("pidfd_getfd", unix.SYS_PIDFD_GETFD, x.supPidfd, uint64(sup.Fd()), 0)
	if err != nil {
		return err
	}
	return x.moveFD(tmp, fd, cloexec)
}

// openChpox gives the process a pidfd of chpox (x.supPidfd), once.
func (x *target) openChpox() error {
	if x.supPidfd != 0 {
		return nil
	}
	pfd, err := x.call("pidfd_open(chpox)", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	if err != nil {
		return err
	}
	// Above every fd of the image, where installing them cannot hit it.
	high, err := x.call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, pfd, unix.F_DUPFD_CLOEXEC, x.freeFD)
	x.call("close", unix.SYS_CLOSE, pfd)
	if err != nil {
		return err
	}
	x.supPidfd = high
	return nil
}

// moveFD puts the file at fd tmp at number fd with the given close-on-exec.
func (x *target) moveFD(tmp uint64, fd int, cloexec uint64) error {
	if tmp == uint64(fd) {
		flag := uint64(0)
		if cloexec != 0 {
			flag = unix.FD_CLOEXEC
		}
		_, err := x.call("fcntl(F_SETFD)", unix.SYS_FCNTL, tmp, unix.F_SETFD, flag)
		return err
	}
	if _, err := x.call("dup3", unix.SYS_DUP3, tmp, uint64(fd), cloexec); err != nil {
		return err
	}
	_, err := x.call("close", unix.SYS_CLOSE, tmp)
	return err
}

// openFile opens a file by path (a deleted one through chpox's stand-in)
// with the saved flags at the saved offset.
func (x *target) openFile(f format.File, o *objects) error {
	path := f.Path
	if t := o.deleted[f.Desc]; t != nil {
		// Reopened through a copy of chpox's stand-in in the process
		// itself: its own fd directory is open to it whatever its ids
		// (fs/proc/fd.c, proc_fd_permission), chpox's is not to a
		// process that runs as another user.
		cp, err := x.chpoxCopy(t)
		if err != nil {
			return err
		}
		defer x.call("close", unix.SYS_CLOSE, cp)
		path = fmt.Sprintf("/proc/self/fd/%d", cp)
	}
	x.resetScratch()
	at, err := x.cstring(path)
	if err != nil {
		return err
	}
	flags := uint64(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC)
	if f.Kind == format.FileChar {
		flags |= unix.O_NOCTTY
	}
	fd, err := x.call("openat", unix.SYS_OPENAT, atFDCWD, at, flags, 0)
	if err != nil {
		return err
	}
	if f.Kind != format.FileChar && f.Pos != 0 {
		if _, err := x.call("lseek", unix.SYS_LSEEK, fd, uint64(f.Pos), unix.SEEK_SET); err != nil {
			return err
		}
	}
	return x.moveFD(fd, f.FD, flags&unix.O_CLOEXEC)
}
