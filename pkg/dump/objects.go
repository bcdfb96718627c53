package dump

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/pipe"
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
// also held by a process outside the dumped tree cannot be rebuilt
// connected to it: it is recorded as external.
func (pl *plan) pipeObjects() error {
	ids := map[uint64]int{}
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind != format.FilePipe {
				continue
			}
			if out := pl.outsideHolder(f.Path); out != 0 && pipe.IsAnonymous(f.Path) {
				pl.markExternal(f, "pipe", out, 0)
				continue
			}
			id, ok := ids[f.Ino]
			if !ok {
				rec, data, err := pipe.Describe(p.Info.PID, f.FD, f.Path, f.Ino)
				if err != nil {
					return fmt.Errorf("pid %d: fd %d: %w", p.Info.PID, f.FD, err)
				}
				id = len(pl.objects.Pipes) + 1
				rec.ID = id
				rec.Data = pl.blob(data)
				pl.objects.Pipes = append(pl.objects.Pipes, rec)
				ids[f.Ino] = id
			}
			f.Pipe = id
		}
	}
	return nil
}

// tree is the set of PIDs being dumped.
func (pl *plan) tree() map[int]bool {
	in := map[int]bool{}
	for _, p := range pl.procs {
		in[p.Info.PID] = true
	}
	return in
}

// blob places bytes an object saves (unread pipe or socket data) in the
// data section and returns their run; none for no bytes.
func (pl *plan) blob(data []byte) []format.DataRun {
	if len(data) == 0 {
		return nil
	}
	run := []format.DataRun{{Off: pl.end, Len: uint64(len(data))}}
	pl.end += uint64(len(data))
	pl.blobs = append(pl.blobs, data)
	return run
}
