package restore

import (
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/ghost"
	memfdobj "github.com/chpox/chpox/pkg/objects/memfd"
	"github.com/chpox/chpox/pkg/objects/pipe"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/objects/timerfd"
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
	events  []*os.File         // inotify instances, pidfds (events_linux_amd64.go)
	async   map[int]bool       // by File.Desc: O_ASYNC registered
	firstFD map[int]fileAt     // by File.Desc: its first fd in the image
	sysv    *sysv.Set          // System V IPC objects (sysv.go)
	done    bool               // the tree runs: the objects are its own
	opt     Options            // the user's choices (external descriptors ...)
	img     *format.Image
	// timerfds are created unarmed and armed just before the run.
	timerfds []*timerfd.Timer
	// externals stand in for descriptors shared with outside processes,
	// by {PID, FD}.
	externals map[[2]int]*os.File

	// perms: the final mode of each stand-in of deleted (given once every
	// process reopened it); exes: by PID, the stand-in of a deleted
	// executable.
	perms   map[*os.File]uint32
	exes    map[int]*os.File
	ttys    map[int]*tty.Pair  // pty pairs by TTY.ID
	ttyRecs map[int]format.TTY // every terminal record by ID
	groups  map[int]bool       // process groups led in the tree
	// embedded: by EmbeddedFile.ID, the copies of mapped files that
	// differ or are missing here (embed.go).
	embedded map[int]*os.File
}

func newObjects(img *format.Image, opt Options, pairs map[int]*tty.Pair) (*objects, error) {
	o := &objects{opt: opt, img: img, shm: map[int]*os.File{}, pipes: map[int]*pipe.Pipe{}, deleted: map[int]*os.File{},
		descs: map[int]*os.File{}, uses: map[int]int{}, async: map[int]bool{}, firstFD: map[int]fileAt{}, externals: map[[2]int]*os.File{},
		perms: map[*os.File]uint32{}, exes: map[int]*os.File{},
		ttys: pairs, ttyRecs: map[int]format.TTY{}, groups: map[int]bool{}}
	if err := o.create(img); err != nil {
		o.close()
		return nil, err
	}
	return o, nil
}

func (o *objects) create(img *format.Image) error {
	for _, s := range img.Objects.Shm {
		var f *os.File
		var err error
		if s.Deleted != "" {
			f, err = deletedShared(img, s)
		} else {
			f, err = memfd(s)
		}
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
	if err := o.createSysV(img); err != nil {
		return err
	}
	if err := o.createSockets(img); err != nil {
		return err
	}
	if err := o.openExternals(img); err != nil {
		return err
	}
	if err := o.createEmbedded(img); err != nil {
		return err
	}
	for _, t := range img.Objects.TTYs {
		o.ttyRecs[t.ID] = t
	}
	live := map[int]bool{}
	for _, p := range img.Processes {
		live[p.PID] = !p.Zombie
	}
	byInode := map[[2]uint64]*os.File{} // one stand-in for the descriptions of one deleted file
	for _, p := range img.Processes {
		if f := p.ExeFile; f != nil {
			// Its final mode at once: the exe link needs it executable.
			t, err := ghost.Make(f.Path, unix.S_IFREG|f.Mode&0o7777, 0, f.OwnerIDs)
			if err == nil && f.Size > 0 {
				err = t.Truncate(f.Size)
			}
			if err != nil {
				return fmt.Errorf("pid %d: recreate deleted executable %s: %w", p.PID, f.Path, err)
			}
			o.exes[p.PID] = t
		}
		// Only groups led inside the tree exist again (createTree): a
		// group led outside is chpox's at restore.
		if live[p.PGID] {
			o.groups[p.PGID] = true
		}
		for _, f := range p.Files {
			o.uses[f.Desc]++
			if _, ok := o.firstFD[f.Desc]; !ok {
				o.firstFD[f.Desc] = fileAt{p.PID, f}
			}
			for _, w := range f.Watches {
				if w.Desc != 0 {
					// An epoll watch needs chpox's copy of the file.
					o.uses[w.Desc] += 2
				}
			}
			if f.Kind == format.FileDeleted && f.Shm != 0 {
				// The file a shared mapping of it maps, too.
				if o.deleted[f.Desc] = o.shm[f.Shm]; o.deleted[f.Desc] == nil {
					return fmt.Errorf("pid %d: fd %d: shared memory %d is missing from the image", p.PID, f.FD, f.Shm)
				}
				continue
			}
			if (f.Kind == format.FileDeleted || f.Deleted) && o.deleted[f.Desc] == nil {
				key := [2]uint64{f.Dev, f.Inode}
				if t := byInode[key]; t != nil && f.Inode != 0 {
					o.deleted[f.Desc] = t
					continue
				}
				t, err := o.standIn(p, f)
				if err != nil {
					return fmt.Errorf("pid %d: fd %d: recreate deleted %s %s: %w", p.PID, f.FD, f.Kind, f.Path, err)
				}
				o.deleted[f.Desc], byInode[key] = t, t
			}
		}
	}
	return nil
}

// fileAt is a descriptor of the image and its process.
type fileAt struct {
	pid int
	f   format.File
}

// standIn makes the unlinked file that stands in for a deleted one
// (pkg/objects/ghost): a regular file truncated to its size (its data
// comes with the data section, holes stay holes), an empty directory, a
// device node. Owned as the original was; an older image says nothing of
// the owner: then the process's fs ids, which open it after switching.
func (o *objects) standIn(p *format.Process, f format.File) (*os.File, error) {
	owner := f.OwnerIDs
	if owner == nil {
		owner = &format.Ownership{UID: p.Creds.UID[3], GID: p.Creds.GID[3]}
	}
	mode := f.Mode
	if f.Kind == format.FileDeleted {
		mode = unix.S_IFREG | mode&0o7777
	}
	// Open to all until every process has reopened it with its own fs
	// ids and flags (the original may have been chmod'ed after it was
	// opened); nothing but chpox and its tree reaches it meanwhile.
	open := uint32(0o666)
	if mode&unix.S_IFMT == unix.S_IFDIR {
		open = 0o777
	}
	t, err := ghost.Make(f.Path, mode&unix.S_IFMT|open, f.Rdev, owner)
	if err != nil {
		return nil, err
	}
	o.perms[t] = mode & 0o1777
	if f.Size > 0 {
		if err := t.Truncate(f.Size); err != nil {
			t.Close()
			return nil, err
		}
	}
	return t, nil
}

func memfd(s format.SharedMem) (*os.File, error) {
	if s.Memfd {
		return memfdobj.Create(s)
	}
	if f, err := anonShared(s.Size); err == nil {
		return f, nil
	}
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

// deletedShared stands in for an unlinked file that is mapped MAP_SHARED:
// an unlinked file at its path (as for a deleted file's fd, standIn),
// of its size, owned by the fs ids of the first process that maps it or
// holds it, which reopen it after switching to them.
func deletedShared(img *format.Image, s format.SharedMem) (*os.File, error) {
	var owner *format.Ownership
	for _, p := range img.Processes {
		uses := slices.ContainsFunc(p.VMAs, func(v format.VMA) bool { return v.Shm == s.ID }) ||
			slices.ContainsFunc(p.Files, func(fl format.File) bool { return fl.Shm == s.ID })
		if uses {
			owner = &format.Ownership{UID: p.Creds.UID[3], GID: p.Creds.GID[3]}
			break
		}
	}
	f, err := ghost.Make(s.Deleted, unix.S_IFREG|s.Mode&0o777, 0, owner)
	if err != nil {
		return nil, fmt.Errorf("recreate deleted file %s: %w", s.Deleted, err)
	}
	err = f.Truncate(int64(s.Size))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("recreate deleted file %s: %w", s.Deleted, err)
	}
	return f, nil
}

// anonShared makes the object MAP_SHARED|MAP_ANONYMOUS memory has: chpox
// maps such memory itself and opens it through /proc/self/map_files (which
// needs CAP_CHECKPOINT_RESTORE, as restoring PIDs does). Mapped from that
// file, the processes' areas are named "/dev/zero (deleted)" as they were
// (mm/shmem.c, shmem_zero_setup), not "/memfd:...".
func anonShared(size uint64) (*os.File, error) {
	if size == 0 || size%uint64(os.Getpagesize()) != 0 {
		return nil, fmt.Errorf("shared memory of %d bytes", size)
	}
	// The raw call gives the address as a number: nothing here touches the
	// memory, which only serves to name the object.
	start, _, e := unix.Syscall6(unix.SYS_MMAP, 0, uintptr(size), unix.PROT_NONE, unix.MAP_SHARED|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if e != 0 {
		return nil, os.NewSyscallError("mmap", e)
	}
	defer unix.Syscall(unix.SYS_MUNMAP, start, uintptr(size), 0)
	return os.OpenFile(fmt.Sprintf("/proc/self/map_files/%x-%x", start, start+uintptr(size)), os.O_RDWR, 0)
}

// fill puts saved bytes back into the objects that hold them (pipes,
// sockets),
// once the data section was read and before any process runs.
func (o *objects) fill() error {
	// Every area that maps a memfd exists and its content is in: the seals
	// may now forbid writes and new writable mappings.
	for _, s := range o.img.Objects.Shm {
		if err := memfdobj.Seal(o.shm[s.ID], s); err != nil {
			return err
		}
	}
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
	if o.sysv != nil && !o.done {
		o.sysv.Remove() // a failed restore leaves no object behind
	}
	all := map[*os.File]bool{}
	for _, m := range []map[int]*os.File{o.shm, o.deleted, o.descs, o.exes, o.embedded} {
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
	for _, f := range o.events {
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

// finishStandIns gives the deleted files' stand-ins their modes, once the
// processes opened them.
func (o *objects) finishStandIns() error {
	for t, perm := range o.perms {
		if err := ghost.Chmod(t, perm); err != nil {
			return fmt.Errorf("deleted file %s: %w", t.Name(), err)
		}
	}
	return nil
}
