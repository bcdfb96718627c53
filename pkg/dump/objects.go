package dump

import (
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/pipe"
)

const kcmpFile = 0 // KCMP_FILE, include/uapi/linux/kcmp.h

// compareFiles orders two fds by the open file description they refer
// to, as kcmp(2) does: 0 the same description, -1 or 1 an order that is
// consistent for the life of the descriptions (kernel/kcmp.c compares the
// obfuscated pointers), so descriptions can be sorted and searched.
func compareFiles(pid1, fd1, pid2, fd2 int) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpFile, uintptr(fd1), uintptr(fd2), 0)
	if e != 0 {
		return 0, os.NewSyscallError("kcmp", e)
	}
	switch r {
	case 0:
		return 0, nil
	case 1:
		return -1, nil
	case 2:
		return 1, nil
	}
	return 0, fmt.Errorf("kcmp: pid %d fd %d and pid %d fd %d cannot be ordered", pid1, fd1, pid2, fd2)
}

// descriptions numbers the open file descriptions: fds that kcmp(2) finds
// to be the same file (after dup or fork) get the same Desc, so restore
// creates the description once and they share one offset again. The
// descriptions of one inode are kept sorted by kcmp's order: a process
// with 10,000 descriptions of one file costs n log n comparisons, not n².
func (pl *plan) descriptions() error {
	type rep struct{ pid, fd, id int }
	byInode := map[[2]uint64][]rep{}
	next := 1
	for _, p := range pl.procs {
		for _, f := range p.files {
			key := [2]uint64{f.Dev, f.Ino}
			reps := byInode[key]
			var cmpErr error
			i, found := slices.BinarySearchFunc(reps, rep{}, func(r rep, _ rep) int {
				c, err := compareFiles(r.pid, r.fd, p.Info.PID, f.FD)
				if err != nil && cmpErr == nil {
					cmpErr = err
				}
				return c
			})
			if cmpErr != nil {
				return fmt.Errorf("pid %d: fd %d: %w", p.Info.PID, f.FD, cmpErr)
			}
			if found {
				f.Desc = reps[i].id
				continue
			}
			f.Desc = next
			next++
			byInode[key] = slices.Insert(reps, i, rep{p.Info.PID, f.FD, f.Desc})
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
				if f.Unlinked {
					rec.Deleted, rec.Mode, rec.Owner = true, f.Mode&0o7777, f.OwnerIDs
				}
				rec.Data = pl.blob(data)
				pl.objects.Pipes = append(pl.objects.Pipes, rec)
				ids[f.Ino] = id
			}
			f.Pipe, f.OwnerIDs = id, nil
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
