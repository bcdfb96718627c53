package restore

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/filelock"
)

// restoreLocks takes the process's file locks again through its own fds,
// once every process of the tree holds its files and before any runs: a
// POSIX lock so belongs to this process, a flock or OFD lock to the open
// file description, and the kernel names the same holder. Nothing waits:
// a lock held now by someone else fails the restore, naming it.
func (x *target) restoreLocks(p *format.Process) error {
	for _, f := range p.Files {
		for _, l := range f.Locks {
			for _, c := range filelock.Calls(l, f.FD) {
				args := append([]uint64(nil), c.Args...)
				if c.Mem != nil {
					x.resetScratch()
					at, err := x.put(c.Mem)
					if err != nil {
						return err
					}
					args[2] = at
				}
				if _, err := x.call(c.Name, c.NR, args...); err != nil {
					if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
						err = fmt.Errorf("%w (another process holds a conflicting lock on it now: see /proc/locks)", err)
					}
					return fmt.Errorf("fd %d (%s): take its %s again: %w", f.FD, f.Path, l, err)
				}
			}
		}
	}
	return nil
}
