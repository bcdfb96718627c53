// Package pipe checkpoints pipes and FIFOs with the bytes written to them
// and not yet read.
//
// Dump reads the unread bytes without consuming them: a new read end
// (opening /proc/PID/fd/N reopens the pipe) is tee(2)'d into a scratch
// pipe of the same capacity. Restore makes a new pipe (or opens the FIFO
// by path), sets its capacity and writes the bytes back before any process
// runs; every description of an end is then handed out by pkg/restore.
package pipe

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/ghost"
)

// Describe returns the record of the pipe that pid holds at fd (path is
// the fd's link target, "pipe:[INO]" or a FIFO's path) and its unread bytes.
func Describe(pid, fd int, path string, ino uint64) (format.Pipe, []byte, error) {
	pipe := format.Pipe{Inode: ino}
	if !IsAnonymous(path) {
		pipe.FIFO = path
	}
	src, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return pipe, nil, fmt.Errorf("open pipe: %w", err)
	}
	defer src.Close()
	capacity, err := unix.FcntlInt(src.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return pipe, nil, os.NewSyscallError("fcntl(F_GETPIPE_SZ)", err)
	}
	pipe.Capacity = capacity
	data, err := peek(int(src.Fd()), capacity)
	return pipe, data, err
}

// IsAnonymous tells a pipe from a named FIFO by its fd link target.
func IsAnonymous(path string) bool { return strings.HasPrefix(path, "pipe:[") }

// peek copies up to capacity unread bytes of the pipe at fd through tee(2).
func peek(fd, capacity int) ([]byte, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, capacity); err != nil {
		return nil, os.NewSyscallError("fcntl(F_SETPIPE_SZ)", err)
	}
	n, err := unix.Tee(fd, p[1], capacity, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		return nil, nil // empty
	}
	if err != nil {
		return nil, os.NewSyscallError("tee", err)
	}
	data := make([]byte, n)
	for got := 0; got < int(n); {
		k, err := unix.Read(p[0], data[got:])
		if err != nil {
			return nil, os.NewSyscallError("read", err)
		}
		got += k
	}
	return data, nil
}

// Pipe is a pipe created again, in chpox, with its unread bytes.
type Pipe struct {
	format.Pipe
	// Data receives the unread bytes from the image's data section.
	Data   []byte
	r, w   *os.File // the two ends; for a FIFO both are one O_RDWR keeper
	handed map[*os.File]bool
	opened []*os.File
}

// New creates the pipe of record p: a pipe(2) pair, or the FIFO opened by
// its path, with the saved capacity.
func New(p format.Pipe) (*Pipe, error) {
	po := &Pipe{Pipe: p, handed: map[*os.File]bool{}}
	if p.Deleted {
		// The FIFO was removed while open: a stand-in, removed again.
		f, err := ghost.Make(p.FIFO, unix.S_IFIFO|p.Mode, 0, p.Owner)
		if err != nil {
			return nil, fmt.Errorf("pipe %d: deleted FIFO: %w", p.ID, err)
		}
		po.r, po.w = f, f
	} else if p.FIFO != "" {
		// O_RDWR never blocks and keeps the FIFO's buffer alive;
		// O_NOFOLLOW: the path was checked to be a FIFO, not a link.
		f, err := os.OpenFile(p.FIFO, os.O_RDWR|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
		if err != nil {
			return nil, fmt.Errorf("pipe %d: open FIFO %s: %w", p.ID, p.FIFO, err)
		}
		po.r, po.w = f, f
	} else {
		var fds [2]int
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return nil, fmt.Errorf("pipe %d: %w", p.ID, os.NewSyscallError("pipe2", err))
		}
		po.r, po.w = os.NewFile(uintptr(fds[0]), "pipe-r"), os.NewFile(uintptr(fds[1]), "pipe-w")
	}
	po.opened = append(po.opened, po.r, po.w)
	if p.Capacity > 0 {
		if _, err := unix.FcntlInt(po.w.Fd(), unix.F_SETPIPE_SZ, p.Capacity); err != nil {
			po.Close()
			return nil, fmt.Errorf("pipe %d: %w", p.ID, os.NewSyscallError("fcntl(F_SETPIPE_SZ)", err))
		}
	}
	return po, nil
}

// Fill puts the unread bytes back; they fit, the capacity is restored.
func (p *Pipe) Fill() error {
	if len(p.Data) == 0 {
		return nil
	}
	if _, err := p.w.Write(p.Data); err != nil {
		return fmt.Errorf("refill pipe %d: %w", p.ID, err)
	}
	p.Data = nil
	return nil
}

// End returns a file for a new open file description of the pipe with the
// access mode and status flags of flags: the pipe's own end the first time,
// a reopened end for another description of the same direction.
func (p *Pipe) End(flags int) (*os.File, error) {
	acc := flags & unix.O_ACCMODE
	end := p.w
	if acc == unix.O_RDONLY {
		end = p.r
	}
	if p.FIFO != "" || p.handed[end] {
		// A FIFO end, or a second description of one direction: a new
		// open of the same pipe (through /proc, which reopens it).
		reopened, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", end.Fd()), acc|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("reopen pipe %d: %w", p.ID, err)
		}
		p.opened = append(p.opened, reopened)
		end = reopened
	}
	p.handed[end] = true
	const settable = unix.O_APPEND | unix.O_ASYNC | unix.O_DIRECT | unix.O_NOATIME | unix.O_NONBLOCK
	if _, err := unix.FcntlInt(end.Fd(), unix.F_SETFL, flags&settable); err != nil {
		return nil, os.NewSyscallError("fcntl(F_SETFL)", err)
	}
	return end, nil
}

// Close closes chpox's ends; the processes keep theirs.
func (p *Pipe) Close() {
	seen := map[*os.File]bool{}
	for _, f := range p.opened {
		if !seen[f] {
			seen[f] = true
			f.Close()
		}
	}
}

// CheckFIFO makes sure a named FIFO is still a FIFO before chpox opens it.
func CheckFIFO(p format.Pipe) error {
	if p.FIFO == "" || p.Deleted {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Lstat(p.FIFO, &st); err != nil {
		return fmt.Errorf("FIFO %s: %w", p.FIFO, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return fmt.Errorf("%s: %w", p.FIFO, ErrNotFIFO)
	}
	return nil
}

// ErrNotFIFO reports a FIFO path that now holds something else.
var ErrNotFIFO = errors.New("no longer a FIFO")
