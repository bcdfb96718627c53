package dump

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
	"github.com/chpox/chpox/pkg/objects/fanotify"
	"github.com/chpox/chpox/pkg/objects/inotify"
	"github.com/chpox/chpox/pkg/objects/pidfd"
	"github.com/chpox/chpox/pkg/procinfo"
)

// events describes the event descriptors (inotify, fanotify, pidfd), finds the file
// every epoll watch really watches, reads each description's SIGIO owner
// and checks descriptors opened on /proc entries of processes.
func (pl *plan) events() error {
	pids, tids := map[int]bool{}, map[int]bool{}
	for _, m := range pl.members { // zombies too: restore makes them first
		pids[m.Info.PID] = true
		tids[m.Info.PID] = true
		for _, t := range m.Others {
			tids[t.PID] = true
		}
	}
	owners := map[int]*format.FileOwner{} // by Desc, read once
	for _, p := range pl.procs {
		pid := p.Info.PID
		// One pidfd per process for the owner queries: a pidfd_open per
		// descriptor doubled their cost (5000 fds: 100 ms).
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			return fmt.Errorf("pid %d: %w", pid, os.NewSyscallError("pidfd_open", err))
		}
		err = pl.eventsOf(p, pidfd, owners, pids, tids)
		unix.Close(pidfd)
		if err != nil {
			return err
		}
	}
	return nil
}

// eventsOf is events for one process; pfd is its pidfd.
func (pl *plan) eventsOf(p *proc, pfd int, owners map[int]*format.FileOwner, pids, tids map[int]bool) error {
	pid := p.Info.PID
	for _, f := range p.files {
		var err error
		switch f.Kind {
		case format.FileInotify:
			f.Inotify, err = inotify.Describe(pid, f.FD, f.FDInfo)
			if errors.Is(err, inotify.ErrQueued) {
				err = fmt.Errorf("an inotify instance %w: %w", err, ErrUnsupported)
			}
		case format.FileFanotify:
			f.Fanotify, err = fanotify.Describe(pid, f.FD, f.FDInfo)
			if errors.Is(err, fanotify.ErrQueued) {
				err = fmt.Errorf("a fanotify group %w: %w", err, ErrUnsupported)
			}
		case format.FilePidfd:
			f.PidfdPID, err = pidfd.Describe(f.FDInfo, f.Flags, func(n int) bool { return tids[n] })
			if err == nil && f.PidfdPID > 0 && !pids[f.PidfdPID] {
				err = fmt.Errorf("a pidfd of thread %d (PIDFD_THREAD), which restore cannot open before the thread exists: %w", f.PidfdPID, ErrUnsupported)
			}
		case format.FileEpoll:
			err = pl.epollTargets(p, f)
		case format.FileRegular, format.FileDir:
			err = procEntry(f.Path, pids, tids)
		}
		if err == nil {
			err = pl.owner(pfd, f, owners, pids, tids)
		}
		if err != nil {
			return fmt.Errorf("pid %d: fd %d: %w", pid, f.FD, err)
		}
	}
	return nil
}

// procEntry refuses a file under /proc/N of a process outside the tree
// (after a restore N may be any process, or none) or of a thread other than
// a main one (threads are created after the files).
func procEntry(path string, pids, tids map[int]bool) error {
	m := procPID.FindStringSubmatch(path)
	if m == nil {
		return nil
	}
	n, _ := strconv.Atoi(m[1])
	if !tids[n] {
		return fmt.Errorf("%s is an entry of process %d, which is not in the checkpoint: dump it with its process: %w", path, n, ErrUnsupported)
	}
	if t := m[2]; t != "" {
		tid, _ := strconv.Atoi(t)
		if !pids[tid] {
			return fmt.Errorf("%s is an entry of thread %d, which restore creates after the files: %w", path, tid, ErrUnsupported)
		}
	}
	return nil
}

var procPID = regexp.MustCompile(`^/proc/(\d+)(?:/task/(\d+))?(?:/|$)`)

// owner records the SIGIO owner and signal of f's description (read once
// per description, on a pidfd_getfd copy). An owner outside the tree is
// refused: after a restore its number may be any process.
func (pl *plan) owner(pidfd int, f *procinfo.OpenFile, owners map[int]*format.FileOwner, pids, tids map[int]bool) error {
	o, seen := owners[f.Desc]
	if !seen {
		if f.Kind == format.FileExternal || f.Kind == format.FilePath {
			// The outside object keeps its own; an O_PATH descriptor has
			// none (fcntl(F_GETOWN_EX) on it is EBADF: fs/fcntl.c).
			owners[f.Desc] = nil
			return nil
		}
		fd, err := unix.PidfdGetfd(pidfd, f.FD, 0)
		if err != nil {
			return os.NewSyscallError("pidfd_getfd", err)
		}
		cp := os.NewFile(uintptr(fd), "owner query")
		typ, pid, sig, err := objects.Owner(cp)
		cp.Close()
		if err != nil {
			return err
		}
		if pid != 0 || sig != 0 {
			known := map[int]map[int]bool{fOwnerTID: tids, fOwnerPID: pids, fOwnerPGRP: pids}[typ]
			if pid != 0 && !known[pid] {
				what := map[int]string{fOwnerTID: "thread", fOwnerPID: "process", fOwnerPGRP: "process group"}[typ]
				return fmt.Errorf("its SIGIO owner (F_SETOWN) is %s %d, which is not in the checkpoint: %w", what, pid, ErrUnsupported)
			}
			o = &format.FileOwner{Type: typ, PID: pid, Sig: sig}
		}
		owners[f.Desc] = o
	}
	if o != nil {
		cp := *o
		f.Owner = &cp
	}
	return nil
}

// epollTargets finds, for each watch whose fd no longer holds the watched
// file (it was closed, or dup2'd over, after epoll_ctl added it), the
// description that still is that file: in the same process first, then in
// another of the tree. A watched file that is open nowhere in the tree
// cannot be handed to epoll_ctl again.
func (pl *plan) epollTargets(p *proc, f *procinfo.OpenFile) error {
	pid := p.Info.PID
	for i := range f.Watches {
		w := &f.Watches[i]
		t := procinfo.EpollTarget{}
		if i < len(f.EpollTargets) {
			t = f.EpollTargets[i]
		}
		same, err := objects.EpollWatches(pid, w.FD, pid, f.FD, w.FD, t.Toff)
		if err != nil {
			return fmt.Errorf("epoll watch of fd %d: %w", w.FD, err)
		}
		if same {
			continue
		}
		desc, err := pl.findWatched(p, f, w.FD, t)
		if err != nil {
			return err
		}
		if desc == 0 {
			return fmt.Errorf("an epoll instance watches a file once at fd %d (inode %d) that is no longer open in any process of the checkpoint, so it cannot be added again: %w", w.FD, t.Ino, ErrUnsupported)
		}
		w.Desc = desc
	}
	return nil
}

// findWatched returns the Desc of a file of the tree that is the target of
// epoll file ep's watch (tfd, t), or 0. Restore makes the files a process
// opens itself (by path, eventfd, epoll) process by process, in image
// order, so such a file must be in ep's process or one before it; chpox
// makes the others (pipes, sockets ...) whenever they are needed.
func (pl *plan) findWatched(ep *proc, f *procinfo.OpenFile, tfd int, t procinfo.EpollTarget) (int, error) {
	order := []*proc{ep}
	before := map[*proc]bool{}
	for _, p := range pl.procs {
		if p == ep {
			break
		}
		before[p] = true
	}
	for _, p := range pl.procs {
		if p != ep {
			order = append(order, p)
		}
	}
	var later *procinfo.OpenFile
	laterPID := 0
	for _, p := range order {
		for _, c := range p.files {
			if c.Dev != t.Dev || c.Ino != t.Ino {
				continue
			}
			same, err := objects.EpollWatches(p.Info.PID, c.FD, ep.Info.PID, f.FD, tfd, t.Toff)
			if err != nil {
				return 0, fmt.Errorf("epoll watch of fd %d: %w", tfd, err)
			}
			if !same {
				continue
			}
			if p == ep || before[p] || !madeByProcess(c.Kind) {
				return c.Desc, nil
			}
			later, laterPID = c, p.Info.PID
		}
	}
	if later != nil {
		return 0, fmt.Errorf("an epoll instance watches a file once at fd %d that only process %d holds now (fd %d, %s), which restore makes after this one: %w", tfd, laterPID, later.FD, later.Path, ErrUnsupported)
	}
	return 0, nil
}

// madeByProcess tells the kinds restore creates inside the process (the
// others chpox creates and hands over).
func madeByProcess(kind string) bool {
	switch kind {
	case format.FileRegular, format.FileDir, format.FileChar, format.FileDeleted, format.FileEventfd, format.FileEpoll:
		return true
	}
	return false
}

// struct f_owner_ex types, include/uapi/asm-generic/fcntl.h.
const (
	fOwnerTID  = 0 // F_OWNER_TID
	fOwnerPID  = 1 // F_OWNER_PID
	fOwnerPGRP = 2 // F_OWNER_PGRP
)
