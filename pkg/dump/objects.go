package dump

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
)

const kcmpFile = 0 // KCMP_FILE, include/uapi/linux/kcmp.h

// sameFile tells whether two fds refer to one open file description.
func sameFile(pid1, fd1, pid2, fd2 int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	return e == 0 && r == 0
}

// descriptions numbers the open file descriptions: fds that kcmp(2) finds
// to be the same file (after dup or fork) get the same Desc, so restore
// creates the description once and they share one offset again.
func (pl *plan) descriptions() error {
	type rep struct{ pid, fd, id int }
	byInode := map[[2]uint64][]rep{}
	next := 1
	for _, p := range pl.procs {
		for _, f := range p.files {
			key := [2]uint64{f.Dev, f.Ino}
			for _, r := range byInode[key] {
				if sameFile(r.pid, r.fd, p.Info.PID, f.FD) {
					f.Desc = r.id
					break
				}
			}
			if f.Desc == 0 {
				f.Desc = next
				next++
				byInode[key] = append(byInode[key], rep{p.Info.PID, f.FD, f.Desc})
			}
		}
	}
	return nil
}

// pipeObjects gives every pipe one ID and saves its unread bytes. A pipe
// whose other end is held outside the dumped tree cannot be rebuilt (the
// peer would not be connected to the new pipe): dump refuses it.
func (pl *plan) pipeObjects() error {
	ids := map[uint64]int{}
	inTree := map[int]bool{}
	for _, p := range pl.procs {
		inTree[p.Info.PID] = true
	}
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind != format.FilePipe {
				continue
			}
			id, ok := ids[f.Ino]
			if !ok {
				if f.Path == fmt.Sprintf("pipe:[%d]", f.Ino) {
					if out := holderOutside(f.Ino, inTree); out != 0 {
						return fmt.Errorf("pid %d: fd %d is a pipe shared with pid %d, which is not part of the checkpoint (redirect to a file, or dump the common parent): %w",
							p.Info.PID, f.FD, out, ErrUnsupported)
					}
				}
				pipe, data, err := readPipe(p.Info.PID, f)
				if err != nil {
					return fmt.Errorf("pid %d: fd %d: %w", p.Info.PID, f.FD, err)
				}
				id = len(pl.pipes) + 1
				pipe.ID = id
				if len(data) > 0 {
					pipe.Data = []format.DataRun{{Off: pl.end, Len: uint64(len(data))}}
					pl.end += uint64(len(data))
				}
				pl.pipes = append(pl.pipes, data)
				pl.objects.Pipes = append(pl.objects.Pipes, pipe)
				ids[f.Ino] = id
			}
			f.Pipe = id
		}
	}
	return nil
}

// readPipe copies the unread bytes of a pipe without consuming them: a new
// read end (opening /proc/PID/fd/N reopens the pipe) is tee(2)'d into a
// scratch pipe of the same capacity.
func readPipe(pid int, f *procinfo.OpenFile) (format.Pipe, []byte, error) {
	pipe := format.Pipe{Inode: f.Ino}
	if !strings.HasPrefix(f.Path, "pipe:[") {
		pipe.FIFO = f.Path
	}
	src, err := os.OpenFile(fmt.Sprintf("/proc/%d/fd/%d", pid, f.FD), os.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return pipe, nil, fmt.Errorf("open pipe: %w", err)
	}
	defer src.Close()
	capacity, err := unix.FcntlInt(src.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		return pipe, nil, os.NewSyscallError("fcntl(F_GETPIPE_SZ)", err)
	}
	pipe.Capacity = capacity
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return pipe, nil, os.NewSyscallError("pipe2", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	if _, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, capacity); err != nil {
		return pipe, nil, os.NewSyscallError("fcntl(F_SETPIPE_SZ)", err)
	}
	n, err := unix.Tee(int(src.Fd()), p[1], capacity, unix.SPLICE_F_NONBLOCK)
	if err == unix.EAGAIN {
		return pipe, nil, nil // empty
	}
	if err != nil {
		return pipe, nil, os.NewSyscallError("tee", err)
	}
	data := make([]byte, n)
	for got := 0; got < int(n); {
		k, err := unix.Read(p[0], data[got:])
		if err != nil {
			return pipe, nil, os.NewSyscallError("read", err)
		}
		got += k
	}
	return pipe, data, nil
}

// holderOutside returns a process outside the tree that holds the pipe, or 0.
func holderOutside(ino uint64, inTree map[int]bool) int {
	want := fmt.Sprintf("pipe:[%d]", ino)
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || inTree[pid] || pid == self {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); l == want {
				return pid
			}
		}
	}
	return 0
}
