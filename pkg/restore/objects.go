package restore

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/pipe"
	"github.com/chpox/chpox/pkg/objects/tty"
	"github.com/chpox/chpox/pkg/objects/unixsock"
)

// objects are the things chpox creates once and hands to every process
// that shares them: shared memory (a memfd each), pipes, stand-ins for
// deleted files, and copies of open file descriptions used by more than
// one fd. The processes reach them through /proc/<chpox>/fd or
// pidfd_getfd(2); chpox closes its copies when the tree runs.
type objects struct {
	shm     map[int]*os.File   // by SharedMem.ID
	pipes   map[int]*pipe.Pipe // by Pipe.ID
	deleted map[int]*os.File   // by File.Desc
	descs   map[int]*os.File   // by File.Desc: chpox's copy of a shared description
	uses    map[int]int        // by File.Desc: fds in the whole tree
	unix    *unixsock.Set      // UNIX sockets, nil if none
	inet    *inetObjects       // TCP and UDP sockets (inet.go)
	netlink []*os.File         // netlink sockets (netlink.go)
	opt     Options            // the user's choices (external descriptors ...)
	// externals stand in for descriptors shared with outside processes,
	// by {PID, FD}.
	externals map[[2]int]*os.File
	ttys      map[int]*tty.Pair  // pty pairs by TTY.ID
	ttyRecs   map[int]format.TTY // every terminal record by ID
	groups    map[int]bool       // process groups led in the tree
}

func newObjects(img *format.Image, opt Options, pairs map[int]*tty.Pair) (*objects, error) {
	o := &objects{opt: opt, shm: map[int]*os.File{}, pipes: map[int]*pipe.Pipe{}, deleted: map[int]*os.File{},
		descs: map[int]*os.File{}, uses: map[int]int{}, externals: map[[2]int]*os.File{},
		ttys: pairs, ttyRecs: map[int]format.TTY{}, groups: map[int]bool{}}
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
		po, err := pipe.New(p)
		if err != nil {
			return err
		}
		o.pipes[p.ID] = po
	}
	if err := o.createSockets(img); err != nil {
		return err
	}
	if err := o.openExternals(img); err != nil {
		return err
	}
	for _, t := range img.Objects.TTYs {
		o.ttyRecs[t.ID] = t
	}
	live := map[int]bool{}
	for _, p := range img.Processes {
		live[p.PID] = !p.Zombie
	}
	for _, p := range img.Processes {
		// Only groups led inside the tree exist again (createTree): a
		// group led outside is chpox's at restore.
		if live[p.PGID] {
			o.groups[p.PGID] = true
		}
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

// fill puts saved bytes back into the objects that hold them (pipes,
// sockets),
// once the data section was read and before any process runs.
func (o *objects) fill() error {
	for _, p := range o.pipes {
		if err := p.Fill(); err != nil {
			return err
		}
	}
	if err := o.fillPairs(); err != nil {
		return err
	}
	return o.fillSockets()
}

// pipeEnd returns chpox's file for the description f names and keeps it
// for the other fds that share it.
func (o *objects) pipeEnd(f format.File) (*os.File, error) {
	p := o.pipes[f.Pipe]
	if p == nil {
		return nil, fmt.Errorf("fd %d names pipe %d, which the image lacks", f.FD, f.Pipe)
	}
	end, err := p.End(f.Flags)
	if err != nil {
		return nil, err
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
	for _, f := range o.externals {
		all[f] = true
	}
	for _, f := range o.netlink {
		all[f] = true
	}
	for f := range all {
		f.Close() // pipe ends among the descs: closing an os.File twice is harmless
	}
	for _, p := range o.pipes {
		p.Close()
	}
	if o.unix != nil {
		o.unix.Close()
	}
	o.closeInet()
	o.closePairs()
}
