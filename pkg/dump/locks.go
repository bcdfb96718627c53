package dump

import (
	"fmt"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/filelock"
	"github.com/chpox/chpox/pkg/procinfo"
)

// locks records the file locks of every process. A POSIX lock stays on the
// fd and process that show it. A lock of an open file description (flock,
// OFD, lease) shows on every fd of it: it is recorded once, on an fd of
// the process the kernel names as its holder if that one is in the tree,
// else on the first fd seen, and restore takes it there.
func (pl *plan) locks() error {
	type descLock struct {
		desc int
		lock format.Lock
	}
	type holder struct {
		p *proc
		f *procinfo.OpenFile
	}
	chosen := map[descLock]holder{}
	var order []descLock
	for _, p := range pl.procs {
		for _, f := range p.files {
			held, err := filelock.Read(p.Info.PID, f.FD, f.Path)
			if err != nil {
				return fmt.Errorf("pid %d: fd %d: %w", p.Info.PID, f.FD, err)
			}
			if len(held) > 0 && f.Kind != format.FileRegular && f.Kind != format.FileDeleted && f.Kind != format.FileDir {
				// flock(2) takes any fd; a device, pipe or socket is not
				// reopened as the same description, or not by chpox.
				return fmt.Errorf("pid %d: fd %d (%s, %s) holds a lock (%s), which chpox keeps only on files and directories: %w",
					p.Info.PID, f.FD, f.Path, f.Kind, held[0].Lock, ErrUnsupported)
			}
			for _, h := range held {
				if !h.ByDescription {
					f.Locks = append(f.Locks, h.Lock)
					continue
				}
				if h.Kind == format.LockLease {
					if h.LeaseSignal, err = filelock.LeaseSignal(p.Info.PID, f.FD); err != nil {
						return fmt.Errorf("pid %d: fd %d: lease on %s: %w", p.Info.PID, f.FD, f.Path, err)
					}
				}
				k := descLock{f.Desc, h.Lock}
				old, seen := chosen[k]
				if !seen {
					order = append(order, k)
				}
				if !seen || old.p.Info.PID != h.PID && p.Info.PID == h.PID {
					chosen[k] = holder{p, f}
				}
			}
		}
	}
	for _, k := range order {
		h := chosen[k]
		h.f.Locks = append(h.f.Locks, k.lock)
	}
	return nil
}
