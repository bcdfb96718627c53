package dump

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/cpu"
	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/external"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/ptrace"
	"github.com/chpox/chpox/pkg/vmadump"
)

// ImageWriter is an image whose content is written; the caller commits it
// (fsync and rename) or aborts it.
type ImageWriter struct {
	*format.Writer
	DataBytes uint64
	// OutsideTCP counts the established TCP connections to peers outside
	// the checkpoint.
	OutsideTCP int
	inet       *inetState
	kill       bool
	sysv       *format.SysVObjects
}

// Commit makes the image the latest checkpoint. If that fails, sockets a
// --kill left in repair mode and locked are given back to the processes,
// which run on. For a --kill, the caller kills the processes and then calls
// Finish.
func (w *ImageWriter) Commit() error {
	err := w.Writer.Commit()
	if err != nil {
		return errors.Join(err, w.inet.undo())
	}
	if !w.kill {
		err = w.inet.close()
	}
	return err
}

// Finish lets go of the sockets of the processes a --kill killed: until
// then a guard would give them back to the processes if chpox died. The
// System V objects of the image leave the namespace with the processes
// (docs/usage.md): a restore creates them again with their ids.
func (w *ImageWriter) Finish() error {
	return errors.Join(sysv.Remove(w.sysv), w.inet.close())
}

// Abort drops the image and gives the sockets back (see Commit).
func (w *ImageWriter) Abort() {
	w.inet.undo()
	w.Writer.Abort()
}

// proc is one live process with what write needs of it.
type proc struct {
	*Member
	areas []*vmadump.Area
	files []*procinfo.OpenFile
	exe   *procinfo.OpenFile // a deleted executable, else nil
}

// plan is everything that goes into the data section, in order.
type plan struct {
	procs   []*proc
	objects format.Objects
	shm     []*vmadump.Shm
	sysvShm []*vmadump.Shm // System V segments, after shm in the data section
	detach  []func()       // chpox's own attachments of System V segments
	ipc     []sysv.Ref     // System V objects named by the user
	blobs   [][]byte       // objects' saved bytes (unread pipe data ...), in data order
	end     uint64         // data section length
	holders map[string]int // pipes and sockets held outside the tree, by link target
	kill    bool           // the processes die after the dump (--kill)
	members []*Member      // every process of the tree, zombies too
	inet    *inetState
	live    *liveDump // memory comes from its staged copy
	embed   embedding // --embed-files (embed.go)
}

// frozenOnlyNeeds says the data section needs nothing more from the
// processes but their (staged) memory.
func (pl *plan) frozenOnlyNeeds() bool {
	if len(pl.shm) > 0 {
		return false
	}
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Content != nil {
				return false
			}
		}
	}
	return true
}

func (pl *plan) close() {
	pl.embed.close()
	for _, s := range append(pl.shm, pl.sysvShm...) {
		s.Close()
	}
	for _, d := range pl.detach {
		d()
	}
	for _, p := range pl.procs {
		procinfo.CloseFiles(p.files)
		if p.exe != nil {
			procinfo.CloseFiles([]*procinfo.OpenFile{p.exe})
		}
	}
}

// Write gathers the memory and files of the frozen processes and writes
// the whole image to a temporary file. kill says the processes will be
// killed once it is committed (their TCP connections are then locked and
// kept in repair mode, pkg/dump/inet.go).
// WriteOptions say how Write lays out and writes an image.
type WriteOptions struct {
	Kill     bool             // the processes die once it is committed
	Progress *format.Progress // counts the data bytes as they are written, if set
	Format   format.WriteOptions
	IPC      []sysv.Ref // System V objects to save besides those the tree uses
	// EmbedFiles stores the mapped files in the image (--embed-files).
	EmbedFiles bool
	// Serve, if set, runs the data write once the processes run again
	// (a live copy): the supervisor writes on another goroutine while its
	// tracing thread serves the job's events. Not called while frozen.
	Serve func(write func() error) error
}

// Write gathers and writes the image of the frozen tree ms to out ("-"
// is standard output: a stream, closed on Commit).
func Write(ms []*Member, out string, opt WriteOptions) (*ImageWriter, error) {
	return writeImage(ms, out, opt, nil, nil)
}

// writeImage is Write; with live, memory comes from the live copy, and
// release is called (the tree runs on) once everything the image needs
// from the processes is taken, before the data is written. The processes
// stay frozen through the write when they die after it, and when shared
// memory or the content of deleted files is read from them while writing.
func writeImage(ms []*Member, out string, opt WriteOptions, live *liveDump, release func() error) (iw *ImageWriter, err error) {
	pl := &plan{kill: opt.Kill, inet: &inetState{}, ipc: opt.IPC, live: live, embed: embedding{on: opt.EmbedFiles}}
	defer pl.close()
	defer func() {
		if err != nil {
			err = errors.Join(err, pl.inet.undo())
		}
	}()
	if err := pl.gather(ms); err != nil {
		return nil, err
	}
	serve := func(write func() error) error { return write() }
	if live != nil {
		slog.Debug("final freeze: gathered", "since", time.Since(live.frozen))
		if err := live.final(pl.procs); err != nil {
			return nil, err
		}
		slog.Debug("final freeze: pages staged", "since", time.Since(live.frozen))
		if !opt.Kill && pl.frozenOnlyNeeds() {
			if err := release(); err != nil {
				return nil, err
			}
			if opt.Serve != nil {
				serve = opt.Serve
			}
		}
	}
	var w *format.Writer
	if out == "-" {
		w, err = format.NewStream(os.Stdout, opt.Format)
	} else {
		w, err = format.CreateWith(out, opt.Format)
	}
	if err != nil {
		return nil, err
	}
	w.Progress = opt.Progress
	iw = &ImageWriter{Writer: w, DataBytes: pl.end, OutsideTCP: pl.inet.outside, inet: pl.inet, kill: opt.Kill, sysv: pl.objects.SysV}
	if err := serve(func() error { return pl.write(iw, ms) }); err != nil {
		w.Abort()
		return nil, err
	}
	return iw, nil
}

// gather reads areas and files of every process and lays out the data
// section: memory of each process, shared memory objects, objects' saved
// bytes (pipe contents), deleted files.
func (pl *plan) gather(ms []*Member) error {
	pl.members = ms
	for _, m := range ms {
		if m.T == nil {
			continue
		}
		p := &proc{Member: m}
		pl.procs = append(pl.procs, p)
		var err error
		list := vmadump.Areas
		if pl.live != nil {
			last := pl.live.tracker(m.Info.PID).Listing()
			list = func(pid int) ([]*vmadump.Area, error) { return vmadump.AreasSince(pid, last) }
		}
		if p.areas, err = list(m.Info.PID); err != nil {
			return err
		}
		// Parents come first (the tree is frozen top-down).
		for _, q := range pl.procs {
			if q.Info.PID == m.Info.PPID {
				if err := vmadump.Inherit(m.Info.PID, q.Info.PID, p.areas, q.areas); err != nil {
					return err
				}
			}
		}
		plan := vmadump.Plan
		if pl.live != nil {
			plan = func(pid int, areas []*vmadump.Area, off uint64) (uint64, error) {
				return pl.live.tracker(pid).Plan(areas, off)
			}
		}
		if pl.end, err = plan(m.Info.PID, p.areas, pl.end); err != nil {
			return err
		}
		if p.files, err = procinfo.Files(m.Info.PID); err != nil {
			return err
		}
		if p.exe, err = procinfo.DeletedExe(m.Info.PID); err != nil {
			return fmt.Errorf("pid %d: deleted executable: %w", m.Info.PID, err)
		}
	}
	steps := []func() error{pl.sharedMemory, pl.sysvObjects, pl.descriptions, pl.locks, pl.terminals, pl.pipeObjects, pl.sockets, pl.deletedFiles, pl.events, pl.timerfds, pl.embedFiles}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	for _, p := range pl.procs {
		in := &p.Info.Process
		in.VMAs, in.Files = nil, nil
		for _, a := range p.areas {
			in.VMAs = append(in.VMAs, a.VMA)
		}
		for _, f := range p.files {
			in.Files = append(in.Files, f.File)
		}
		if p.exe != nil {
			in.ExeFile = &p.exe.File
		}
	}
	return nil
}

// sharedMemory gives each shared memory object one ID and one copy.
func (pl *plan) sharedMemory() error {
	ids := map[uint64]int{}
	for _, p := range pl.procs {
		for _, a := range p.areas {
			if a.Kind != format.VMASharedAnon {
				continue
			}
			id, err := pl.shmObject(ids, a.Inode, func() (*vmadump.Shm, error) { return vmadump.OpenShm(p.Info.PID, a) })
			if err != nil {
				return err
			}
			a.Shm = id
		}
	}
	// Memfds held as fds: the object a mapping saved, or one of its own.
	// A deleted file's fd shares the object of its shared mapping, which
	// holds the content.
	for _, p := range pl.procs {
		for _, f := range p.files {
			if id, ok := ids[f.Ino]; ok && f.Kind == format.FileDeleted && pl.objects.Shm[id-1].Deleted != "" {
				f.Shm = id
				f.Source.Close()
				f.Source = nil
				continue
			}
			if f.Kind != format.FileMemfd {
				continue
			}
			id, err := pl.shmObject(ids, f.Ino, func() (*vmadump.Shm, error) { return vmadump.OpenMemfd(p.Info.PID, f.FD, f.Path) })
			if err != nil {
				return err
			}
			f.Shm = id
		}
	}
	return pl.memoryOutside()
}

// shmObject returns the ID of the shared memory object with inode ino,
// opening it and laying out its data the first time it is met.
func (pl *plan) shmObject(ids map[uint64]int, ino uint64, open func() (*vmadump.Shm, error)) (int, error) {
	if id, ok := ids[ino]; ok {
		return id, nil
	}
	s, err := open()
	if err != nil {
		return 0, err
	}
	s.ID = len(pl.shm) + 1
	pl.end = s.Plan(pl.end)
	pl.shm = append(pl.shm, s)
	pl.objects.Shm = append(pl.objects.Shm, s.SharedMem)
	ids[ino] = s.ID
	return s.ID, nil
}

// memoryOutside refuses shared memory that a process outside the tree
// maps or holds too: restored, the object would be a new one, no longer
// shared with it.
func (pl *plan) memoryOutside() error {
	objs := map[[2]uint64]bool{}
	for _, s := range pl.shm {
		objs[[2]uint64{s.Dev, s.Inode}] = true
	}
	for key, pid := range external.MemoryHolders(pl.tree(), objs) {
		for _, s := range pl.shm {
			if [2]uint64{s.Dev, s.Inode} != key {
				continue
			}
			what := "anonymous shared memory"
			switch {
			case s.Memfd:
				what = fmt.Sprintf("memfd %q", s.Name)
			case s.Deleted != "":
				what = "the unlinked file " + s.Deleted
			}
			return fmt.Errorf("%s (inode %d, %d bytes) is shared with pid %d, which is not in the checkpoint: restored, it could not stay shared with it; dump that process with the tree (its parent, without --no-children): %w",
				what, s.Inode, s.Size, pid, ErrUnsupported)
		}
	}
	return nil
}

func (pl *plan) deletedFiles() error {
	seen := map[[2]uint64]bool{} // by device and inode: one copy of a file however often open
	for _, p := range pl.procs {
		files := p.files
		if p.exe != nil {
			files = append(files[:len(files):len(files)], p.exe)
		}
		for _, f := range files {
			key := [2]uint64{f.Dev, f.Ino}
			if f.Source == nil || f != p.exe && seen[key] {
				continue
			}
			if f != p.exe {
				seen[key] = true
			}
			// Only the data: holes stay holes, restore truncates the
			// stand-in to the size first. No size limit: the image grows
			// by the data a deleted file holds.
			f.Content = []format.DataRun{}
			for _, r := range f.Runs {
				f.Content = append(f.Content, format.DataRun{Addr: r.Addr, Off: pl.end, Len: r.Len})
				pl.end += r.Len
			}
		}
	}
	return nil
}

func (pl *plan) write(w *ImageWriter, ms []*Member) error {
	if err := w.WriteHeader(newHeader(len(ms), pl.end)); err != nil {
		return err
	}
	if err := w.WriteObjects(&pl.objects); err != nil {
		return err
	}
	for _, m := range ms {
		if err := w.WriteProcess(&m.Info.Process); err != nil {
			return err
		}
	}
	if err := w.BeginData(pl.end); err != nil {
		return err
	}
	for _, p := range pl.procs {
		copy := func() error { return vmadump.Copy(p.Info.PID, p.areas, w) }
		if pl.live != nil {
			copy = func() error { return pl.live.tracker(p.Info.PID).CopyTo(p.areas, w) }
		}
		if err := copy(); err != nil {
			return err
		}
	}
	for _, s := range append(pl.shm, pl.sysvShm...) {
		if err := s.Copy(w); err != nil {
			return err
		}
	}
	for _, data := range pl.blobs {
		if _, err := w.Write(data); err != nil {
			return err
		}
	}
	for _, p := range pl.procs {
		files := p.files
		if p.exe != nil {
			files = append(files[:len(files):len(files)], p.exe)
		}
		for _, f := range files {
			if f.Source != nil && f.Content != nil {
				if err := f.CopyContent(w); err != nil {
					return fmt.Errorf("pid %d: fd %d: %w", p.Info.PID, f.FD, err)
				}
			}
		}
	}
	return pl.copyEmbedded(w)
}

func newHeader(nproc int, data uint64) *format.Header {
	var u unix.Utsname
	unix.Uname(&u)
	host, _ := os.Hostname()
	flags, _ := cpu.Flags()                     // none recorded: restore checks nothing
	vdso, _ := ptrace.VdsoIdentity(os.Getpid()) // the same kernel's as the tree's
	return &format.Header{
		CPUFlags:  flags,
		VDSO:      vdso,
		Arch:      runtime.GOARCH,
		Kernel:    strings.TrimRight(string(u.Release[:]), "\x00"),
		Created:   time.Now().UTC(),
		Processes: nproc,
		Tool:      Version,
		PageSize:  os.Getpagesize(),
		Hostname:  host,
		DataBytes: int64(data),
	}
}
