package restore

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// objects are the things chpox creates once and hands to every process
// that shares them: shared memory (a memfd each), pipes, stand-ins for
// deleted files, and copies of open file descriptions used by more than
// one fd. The processes reach them through /proc/<chpox>/fd or
// pidfd_getfd(2); chpox closes its copies when the tree runs.
type objects struct {
	shm     map[int]*os.File // by SharedMem.ID
	pipes   map[int]*pipeObj // by Pipe.ID
	deleted map[int]*os.File // by File.Desc
	descs   map[int]*os.File // by File.Desc: chpox's copy of a shared description
	uses    map[int]int      // by File.Desc: fds in the whole tree
}

type pipeObj struct {
	format.Pipe
	r, w    *os.File // the two ends; for a FIFO both are one O_RDWR keeper
	data    []byte   // unread bytes, filled from the data section
	usedEnd map[*os.File]bool
}

func newObjects(img *format.Image) (*objects, error) {
	o := &objects{shm: map[int]*os.File{}, pipes: map[int]*pipeObj{}, deleted: map[int]*os.File{},
		descs: map[int]*os.File{}, uses: map[int]int{}}
	if err := o.create(img); err != nil {
		o.close()
		return nil, err
	}
	return o, nil
}

func (o *objects) create(img *format.Image) error {
	for _, s := range img.Objects.Shm {
		f, err := memfd(s)
		if err != nil {
			return err
		}
		o.shm[s.ID] = f
	}
	for _, p := range img.Objects.Pipes {
		po, err := newPipe(p)
		if err != nil {
			return fmt.Errorf("pipe %d: %w", p.ID, err)
		}
		o.pipes[p.ID] = po
	}
	for _, p := range img.Processes {
		for _, f := range p.Files {
			o.uses[f.Desc]++
			if f.Kind == format.FileDeleted && o.deleted[f.Desc] == nil {
				// No set-id bits (a stand-in owned by root must not become
				// a setuid program); owned by the process's fs ids, which
				// open it after switching to them.
				t, err := tmpIn(filepath.Dir(f.Path), f.Mode&0o777)
				if err == nil {
					err = t.Chown(int(p.Creds.UID[3]), int(p.Creds.GID[3]))
				}
				if err != nil {
					return fmt.Errorf("pid %d: fd %d: recreate deleted file %s: %w", p.PID, f.FD, f.Path, err)
				}
				o.deleted[f.Desc] = t
			}
		}
	}
	return nil
}

func memfd(s format.SharedMem) (*os.File, error) {
	fd, err := unix.MemfdCreate("chpox-shm", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, os.NewSyscallError("memfd_create", err)
	}
	f := os.NewFile(uintptr(fd), "shm")
	if err := f.Truncate(int64(s.Size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("shared memory %d: %w", s.ID, err)
	}
	return f, nil
}

func newPipe(p format.Pipe) (*pipeObj, error) {
	po := &pipeObj{Pipe: p, usedEnd: map[*os.File]bool{}}
	if p.FIFO != "" {
		// O_RDWR never blocks and keeps the FIFO's buffer alive;
		// O_NOFOLLOW: the path was checked to be a FIFO, not a link.
		f, err := os.OpenFile(p.FIFO, os.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("open FIFO %s: %w", p.FIFO, err)
		}
		po.r, po.w = f, f
	} else {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return nil, os.NewSyscallError("pipe2", err)
		}
		po.r, po.w = os.NewFile(uintptr(fds[0]), "pipe-r"), os.NewFile(uintptr(fds[1]), "pipe-w")
	}
	if p.Capacity > 0 {
		if _, err := unix.FcntlInt(po.w.Fd(), unix.F_SETPIPE_SZ, p.Capacity); err != nil {
			return nil, os.NewSyscallError("fcntl(F_SETPIPE_SZ)", err)
		}
	}
	return po, nil
}

// fillPipes puts the unread bytes back; they fit, the capacity is restored.
func (o *objects) fillPipes() error {
	for _, p := range o.pipes {
		if len(p.data) == 0 {
			continue
		}
		if _, err := p.w.Write(p.data); err != nil {
			return fmt.Errorf("refill pipe %d: %w", p.ID, err)
		}
	}
	return nil
}

// pipeEnd returns chpox's file for the description f names: the pipe's
// own end the first time, a reopened end for another description of the
// same direction. Status flags (O_NONBLOCK ...) are set on it.
func (o *objects) pipeEnd(f format.File) (*os.File, error) {
	p := o.pipes[f.Pipe]
	if p == nil {
		return nil, fmt.Errorf("fd %d names pipe %d, which the image lacks", f.FD, f.Pipe)
	}
	acc := f.Flags & unix.O_ACCMODE
	end := p.w
	if acc == unix.O_RDONLY {
		end = p.r
	}
	if p.FIFO != "" || p.usedEnd[end] {
		// A FIFO end, or a second description of one direction: a new
		// open of the same pipe (through /proc, which reopens it).
		reopened, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", end.Fd()), acc|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("reopen pipe %d: %w", p.ID, err)
		}
		end = reopened
	}
	p.usedEnd[end] = true
	const settable = unix.O_APPEND | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME | unix.O_NONBLOCK
	if _, err := unix.FcntlInt(end.Fd(), unix.F_SETFL, f.Flags&settable); err != nil {
		return nil, os.NewSyscallError("fcntl(F_SETFL)", err)
	}
	o.descs[f.Desc] = end
	return end, nil
}

// keep stores chpox's copy of a description a process created, when other
// fds in the tree share it.
func (o *objects) keep(desc, pid, fd int) error {
	if o.uses[desc] < 2 {
		return nil
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return os.NewSyscallError("pidfd_open", err)
	}
	defer unix.Close(pidfd)
	cp, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		return os.NewSyscallError("pidfd_getfd", err)
	}
	o.descs[desc] = os.NewFile(uintptr(cp), "desc")
	return nil
}

func (o *objects) close() {
	all := map[*os.File]bool{}
	for _, m := range []map[int]*os.File{o.shm, o.deleted, o.descs} {
		for _, f := range m {
			all[f] = true
		}
	}
	for _, p := range o.pipes {
		all[p.r], all[p.w] = true, true
		for f := range p.usedEnd {
			all[f] = true
		}
	}
	for f := range all {
		f.Close()
	}
}
