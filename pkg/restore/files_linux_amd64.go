package restore

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/signalfd"
)

// restoreFiles closes what the loader had and gives the process every fd
// of the image at its number. A description shared with fds seen before
// (in this process: dup3; in another: chpox's copy, through pidfd_getfd)
// is shared again, so offset and flags stay common.
func (x *target) restoreFiles(p *format.Process, o *objects) error {
	if _, err := x.call("close_range", unix.SYS_CLOSE_RANGE, 0, ^uint64(0)>>32, 0); err != nil {
		return err
	}
	x.caps = p.Creds.CapEff
	here := map[int]int{} // desc -> fd in this process
	x.freeFD = 0
	for _, f := range p.Files {
		x.freeFD = max(x.freeFD, uint64(f.FD)+1)
		for _, w := range f.Watches {
			// A watch of a closed fd puts its file at that number for a
			// moment: chpox's pidfd must not sit there.
			x.freeFD = max(x.freeFD, uint64(w.FD)+1)
		}
	}
	open := map[int]bool{} // fds installed so far
	// epoll instances last: the fds they watch must exist first.
	for _, f := range epollLast(p.Files) {
		if err := x.installFile(f, o, here, open); err != nil {
			return fmt.Errorf("fd %d (%s): %w", f.FD, f.Path, err)
		}
		here[f.Desc] = f.FD
		open[f.FD] = true
	}
	if err := x.controllingTerminal(p, o); err != nil {
		return err
	}
	if x.supPidfd != 0 {
		x.call("close", unix.SYS_CLOSE, x.supPidfd)
		x.supPidfd = 0
	}
	return nil
}

// epollLast orders the files for installing: every other kind first, then
// the epoll instances, each after the epoll instances it watches (epoll
// sets may watch epoll sets; the kernel forbids loops, so the order
// exists). An instance whose watched set is not among these files (an
// image that says otherwise) goes last and fails at its EPOLL_CTL_ADD.
func epollLast(files []format.File) []format.File {
	var out, eps []format.File
	for _, f := range files {
		if f.Kind == format.FileEpoll {
			eps = append(eps, f)
		} else {
			out = append(out, f)
		}
	}
	isEpoll := map[int]bool{} // by fd and by desc (negated)
	for _, f := range eps {
		isEpoll[f.FD], isEpoll[-f.Desc] = true, true
	}
	done := map[int]bool{}
	for len(eps) > 0 {
		var left []format.File
		for _, f := range eps {
			ready := true
			for _, w := range f.Watches {
				if w.Desc != 0 && isEpoll[-w.Desc] && !done[-w.Desc] || w.Desc == 0 && isEpoll[w.FD] && !done[w.FD] {
					ready = false
				}
			}
			if ready {
				out = append(out, f)
				done[f.FD], done[-f.Desc] = true, true
			} else {
				left = append(left, f)
			}
		}
		if len(left) == len(eps) {
			return append(out, left...)
		}
		eps = left
	}
	return out
}

func (x *target) installFile(f format.File, o *objects, here map[int]int, open map[int]bool) error {
	cloexec := uint64(f.Flags) & unix.O_CLOEXEC
	if fd, ok := here[f.Desc]; ok {
		_, err := x.call("dup3", unix.SYS_DUP3, uint64(fd), uint64(f.FD), cloexec)
		return err
	}
	sup, err := x.chpoxSide(f, x.pid(), o)
	if err != nil {
		return err
	}
	if sup != nil {
		return x.fromChpox(sup, f.FD, cloexec)
	}
	switch f.Kind {
	case format.FileEventfd:
		err = x.makeEventfd(f)
	case format.FileEpoll:
		err = x.makeEpoll(f, o, here, open)
	default:
		err = x.openFile(f, o)
	}
	if err != nil {
		return err
	}
	return o.keep(f.Desc, x.pid(), f.FD)
}

// chpoxSide returns chpox's file for the description of f (fd f.FD of
// process pid), creating it if it is of a kind chpox creates (pipes,
// sockets, external stand-ins, event descriptors); nil for the kinds the
// process creates itself.
func (x *target) chpoxSide(f format.File, pid int, o *objects) (*os.File, error) {
	if sup := o.descs[f.Desc]; sup != nil {
		return sup, nil
	}
	switch f.Kind {
	case format.FilePipe:
		return o.pipeEnd(f)
	case format.FileExternal:
		if sup := o.externals[[2]int{pid, f.FD}]; sup != nil {
			return sup, nil
		}
		return nil, fmt.Errorf("no stand-in for external object %d", f.External)
	case format.FileUnix, format.FileInet, format.FileNetlink:
		return nil, fmt.Errorf("socket %d was not created", f.Socket)
	case format.FileInotify, format.FileFanotify, format.FilePidfd:
		return x.eventObject(f, o)
	case format.FileTimerfd:
		t, err := o.timerfd(f)
		if err != nil {
			return nil, err
		}
		return t.File, nil
	case format.FilePTYMaster, format.FilePTYSlave:
		return o.ptyEnd(f)
	case format.FileSignalfd:
		// Made once in chpox: a signalfd reads the signals of the
		// process that reads it, not of its creator.
		sup, err := signalfd.Create(f)
		if err == nil {
			o.descs[f.Desc] = sup
		}
		return sup, err
	}
	return nil, nil
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
func (x *target) makeEpoll(f format.File, o *objects, here map[int]int, open map[int]bool) error {
	fd, err := x.call("epoll_create1", unix.SYS_EPOLL_CREATE1, uint64(f.Flags)&unix.O_CLOEXEC)
	if err != nil {
		return err
	}
	if err := x.moveFD(fd, f.FD, uint64(f.Flags)&unix.O_CLOEXEC); err != nil {
		return err
	}
	open[f.FD] = true // a watch of a closed fd puts back what is here
	for _, w := range f.Watches {
		if err := x.addEpollWatch(f.FD, w, o, here, open); err != nil {
			return err
		}
	}
	return nil
}

// fromChpox installs chpox's file sup at fd: pidfd_getfd(2) on chpox
// gives the process the very same open file description.
func (x *target) fromChpox(sup *os.File, fd int, cloexec uint64) error {
	if _, err := x.supFD(); err != nil {
		return err
	}
	tmp, err := x.call("pidfd_getfd", unix.SYS_PIDFD_GETFD, x.supPidfd, uint64(sup.Fd()), 0)
	if err != nil {
		return err
	}
	return x.moveFD(tmp, fd, cloexec)
}

// supFD returns the process's pidfd of chpox, opened on first use.
func (x *target) supFD() (uint64, error) {
	if x.supPidfd == 0 {
		pfd, err := x.call("pidfd_open(chpox)", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
		if err != nil {
			return 0, err
		}
		// Above every fd of the image, where installing them cannot hit it.
		high, err := x.call("fcntl(F_DUPFD_CLOEXEC)", unix.SYS_FCNTL, pfd, unix.F_DUPFD_CLOEXEC, x.freeFD)
		x.call("close", unix.SYS_CLOSE, pfd)
		if err != nil {
			return 0, err
		}
		x.supPidfd = high
	}
	return x.supPidfd, nil
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
	flags := uint64(f.Flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_TRUNC)
	if f.Kind == format.FilePath && f.Mode&unix.S_IFMT == unix.S_IFLNK {
		flags |= unix.O_NOFOLLOW // the symlink itself, as it was held
	}
	t := o.deleted[f.Desc]
	if f.Kind == format.FileMemfd {
		// A new description of chpox's memfd: the same object, which
		// mappings and other fds share, with this fd's flags and offset.
		if t = o.shm[f.Shm]; t == nil {
			return fmt.Errorf("memfd %d is missing from the image", f.Shm)
		}
	}
	if t != nil {
		// The magic link must be followed to reach the stand-in.
		flags &^= unix.O_NOFOLLOW
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
	if f.Kind == format.FileChar {
		flags |= unix.O_NOCTTY
	}
	fd, err := x.call("openat", unix.SYS_OPENAT, atFDCWD, at, flags, 0)
	if err != nil {
		return err
	}
	if f.Kind != format.FileChar && f.Kind != format.FilePath && f.Pos != 0 {
		if _, err := x.call("lseek", unix.SYS_LSEEK, fd, uint64(f.Pos), unix.SEEK_SET); err != nil {
			return err
		}
	}
	if err := x.moveFD(fd, f.FD, flags&unix.O_CLOEXEC); err != nil {
		return err
	}
	return x.sameFile(f)
}

// sameFile checks that what the process opened by path is the file of
// the image (checkFD looked before anything started; the path may have
// changed since, or resolve otherwise in the process's view).
func (x *target) sameFile(f format.File) error {
	if f.Inode == 0 || f.Deleted || f.Kind == format.FileDeleted || f.Kind == format.FileChar || f.Kind == format.FileBlock {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/fd/%d", x.pid(), f.FD), &st); err != nil {
		return err
	}
	if st.Ino != f.Inode || st.Dev != f.Dev {
		return fmt.Errorf("%s opened as another file (device %d:%d inode %d, it was %d:%d inode %d): %w",
			f.Path, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino, unix.Major(f.Dev), unix.Minor(f.Dev), f.Inode, ErrIncompatible)
	}
	return nil
}
