package restore

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// mapMemory replaces the loader's address space with the image's areas:
// the vDSO moves to where it was (glibc keeps pointers into it), everything
// else of the loader goes, and every area is mapped, writable where pages
// will be written (writeData fills them, protect finishes).
func (x *target) mapMemory(p *format.Process, o *objects) error {
	if err := x.placeVDSO(p); err != nil {
		return err
	}
	files, err := x.mapAreas(p, o)
	for _, fd := range files {
		x.call("close", unix.SYS_CLOSE, fd)
	}
	return err
}

type namedSpan struct {
	span
	name string
}

func isVDSO(name string) bool {
	return name == "[vvar]" || name == "[vvar_vclock]" || name == "[vdso]"
}

// placeVDSO moves the loader's vDSO areas to the image's addresses (via a
// free staging range, since old and new places may overlap) and unmaps
// everything else the loader had except the scratch area.
func (x *target) placeVDSO(p *format.Process) error {
	want := map[string]format.VMA{}
	for _, v := range p.VMAs {
		if v.Kind == format.VMAVDSO {
			want[v.Name] = v
		}
	}
	own, err := namedMappings(x.pid())
	if err != nil {
		return err
	}
	var vdso []namedSpan
	for _, m := range own {
		if isVDSO(m.name) {
			w, ok := want[m.name]
			if !ok || w.End-w.Start != m.end-m.start {
				return fmt.Errorf("the vDSO differs from the one in the image (%s is %d bytes here): restore on the kernel the image was taken on: %w",
					m.name, m.end-m.start, ErrIncompatible)
			}
			vdso = append(vdso, m)
		}
	}
	if len(vdso) != len(want) {
		return fmt.Errorf("image has %d vDSO areas, this kernel %d: %w", len(want), len(vdso), ErrIncompatible)
	}
	if len(vdso) == 0 {
		return x.unmapAllBut(nil)
	}
	used := spansOf(p.VMAs)
	for _, m := range own {
		used = append(used, m.span)
	}
	lo, hi := vdso[0].start, vdso[len(vdso)-1].end
	stage, err := freeSpan(used, hi-lo)
	if err != nil {
		return err
	}
	for _, m := range vdso {
		if err := x.mremap(m.span, stage+m.start-lo); err != nil {
			return err
		}
	}
	if err := x.unmapAllBut(&span{stage, stage + hi - lo}); err != nil {
		return err
	}
	for _, m := range vdso {
		if err := x.mremap(span{stage + m.start - lo, stage + m.end - lo}, want[m.name].Start); err != nil {
			return err
		}
	}
	return nil
}

func (x *target) mremap(from span, to uint64) error {
	size := from.end - from.start
	_, err := x.call("mremap", unix.SYS_MREMAP, from.start, size, size, unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, to)
	return err
}

// unmapAllBut removes every loader mapping except the scratch area and keep.
func (x *target) unmapAllBut(keep *span) error {
	own, err := namedMappings(x.pid())
	if err != nil {
		return err
	}
	for _, m := range own {
		if m.start == x.scratch || (keep != nil && m.start >= keep.start && m.end <= keep.end) || m.name == "[vsyscall]" {
			continue
		}
		if _, err := x.call("munmap", unix.SYS_MUNMAP, m.start, m.end-m.start); err != nil {
			return fmt.Errorf("%s %#x-%#x: %w", m.name, m.start, m.end, err)
		}
	}
	return nil
}

// mapAreas maps every area of the image, writable where pages will be
// written. It returns the fds it opened for file mappings.
func (x *target) mapAreas(p *format.Process, o *objects) (map[string]uint64, error) {
	fds := map[string]uint64{}
	for _, v := range p.VMAs {
		if v.Kind == format.VMAVDSO {
			continue
		}
		if err := x.mapArea(v, fds, o); err != nil {
			return fds, fmt.Errorf("map %#x-%#x (%s): %w", v.Start, v.End, v.Name, err)
		}
	}
	return fds, nil
}

func (x *target) mapArea(v format.VMA, fds map[string]uint64, o *objects) error {
	if v.Kind == format.VMASysVShm {
		return x.shmat(v, o)
	}
	prot := uint64(v.Prot)
	if filled(v) {
		prot |= unix.PROT_READ | unix.PROT_WRITE
	}
	flags := uint64(unix.MAP_FIXED | unix.MAP_PRIVATE)
	if v.Shared {
		flags = unix.MAP_FIXED | unix.MAP_SHARED
	}
	if v.GrowsDown {
		flags |= unix.MAP_GROWSDOWN
	}
	if v.NoReserve {
		flags |= unix.MAP_NORESERVE
	}
	fd, off := ^uint64(0), uint64(0)
	switch {
	case v.Kind == format.VMAFile:
		var err error
		// A shared mapping that may be made writable later needs a file
		// open for writing, as it had (VM_MAYWRITE): mprotect checks.
		write := v.Shared && (v.Prot&format.ProtWrite != 0 || v.MayWrite != nil && *v.MayWrite)
		// The image's copy where the file here differs (embed.go).
		var copied bool
		if fd, copied, err = x.embeddedFD(v, o, fds); err != nil {
			return err
		}
		if !copied {
			if fd, err = x.openForMap(v.File.Path, write, fds); err != nil {
				return err
			}
		}
		off = v.Offset
	case v.Kind == format.VMASharedAnon && v.Shm != 0:
		// Shared memory is one memfd of chpox's, mapped by every process
		// that shares it.
		m := o.shm[v.Shm]
		if m == nil {
			return fmt.Errorf("shared memory object %d is missing from the image", v.Shm)
		}
		var err error
		if fd, err = x.shmFD(v, m, fds); err != nil {
			return err
		}
		off = v.Offset
	default:
		flags |= unix.MAP_ANONYMOUS
	}
	x.resetScratch()
	_, err := x.call("mmap", unix.SYS_MMAP, v.Start, v.End-v.Start, prot, flags, fd, off)
	return err
}

// shmFD returns the process's fd for shared memory object m: chpox's
// memfd itself, or, for a shared mapping that could not be made writable
// (a memfd opened read-only or write-sealed then), a read-only reopening
// of it, so that the mapping again lacks VM_MAYWRITE (mm/mmap.c, do_mmap).
func (x *target) shmFD(v format.VMA, m *os.File, fds map[string]uint64) (uint64, error) {
	key := fmt.Sprintf("shm:%d", v.Shm)
	fd, ok := fds[key]
	if !ok {
		var err error
		if fd, err = x.chpoxCopy(m); err != nil {
			return 0, err
		}
		fds[key] = fd
	}
	if !v.Shared || v.MayWrite == nil || *v.MayWrite {
		return fd, nil
	}
	return x.openForMap(fmt.Sprintf("/proc/self/fd/%d", fd), false, fds)
}

// chpoxCopy gives the process chpox's file sup, the same open file
// description, through pidfd_getfd(2), and returns its fd (close-on-exec).
// Opening /proc/CHPOX/fd/N instead would fail once the process has its own
// filesystem ids (nginx's workers run as nobody): chpox's fd directory is
// not theirs. pidfd_getfd checks the real ids, still chpox's here.
func (x *target) chpoxCopy(sup *os.File) (uint64, error) {
	pidfd, err := x.call("pidfd_open(chpox)", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	if err != nil {
		return 0, err
	}
	fd, err := x.call("pidfd_getfd", unix.SYS_PIDFD_GETFD, pidfd, uint64(sup.Fd()), 0)
	x.call("close", unix.SYS_CLOSE, pidfd)
	return fd, err
}

func (x *target) openForMap(path string, write bool, fds map[string]uint64) (uint64, error) {
	mode := uint64(unix.O_RDONLY)
	if write {
		mode = unix.O_RDWR
	}
	key := fmt.Sprintf("%d:%s", mode, path)
	if fd, ok := fds[key]; ok {
		return fd, nil
	}
	x.resetScratch()
	at, err := x.cstring(path)
	if err != nil {
		return 0, err
	}
	fd, err := x.call("openat "+path, unix.SYS_OPENAT, atFDCWD, at, mode|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	fds[key] = fd
	return fd, nil
}

// protect sets the final protection of areas that were mapped writable.
func (x *target) protect(p *format.Process) error {
	for _, v := range p.VMAs {
		// (System V attachments got theirs when attached: x.shmat.)
		if !filled(v) || v.Prot == format.ProtRead|format.ProtWrite {
			continue
		}
		if _, err := x.call("mprotect", unix.SYS_MPROTECT, v.Start, v.End-v.Start, uint64(v.Prot)); err != nil {
			return fmt.Errorf("%#x-%#x: %w", v.Start, v.End, err)
		}
	}
	return nil
}

// filled tells an area whose pages chpox writes (from the image, or from
// the parent it shares them with): it is mapped readable and writable
// until protect.
func filled(v format.VMA) bool { return len(v.Pages) > 0 || len(v.Inherited) > 0 }

// copyInherited gives every process the pages it shared copy-on-write
// with its parent, from the restored parent's memory (the image holds them
// once). Parents come before children, so a page a process inherited from
// its own parent is there before its child copies it. The areas in lazy
// (restore --lazy) get them from the image, through pkg/lazy.
func copyInherited(nodes []*node, lazy map[*format.VMA]bool) error {
	buf := make([]byte, chunkSize)
	for _, n := range nodes {
		for i := range n.p.VMAs {
			v := &n.p.VMAs[i]
			if lazy[v] {
				continue
			}
			for _, s := range v.Inherited {
				if n.parent == nil {
					return fmt.Errorf("pid %d: memory %#x-%#x is shared with a parent that is not in the image: %w", n.p.PID, s.Start, s.End, format.ErrCorrupt)
				}
				for at := s.Start; at < s.End; {
					l := min(s.End-at, uint64(len(buf)))
					if err := copyMem(n.parent.p.PID, n.p.PID, at, buf[:l]); err != nil {
						return fmt.Errorf("pid %d: copy the pages shared with its parent %d: %w", n.p.PID, n.parent.p.PID, err)
					}
					at += l
				}
			}
		}
	}
	return nil
}

func copyMem(from, to int, at uint64, buf []byte) error {
	local := []unix.Iovec{{Base: &buf[0]}}
	local[0].SetLen(len(buf))
	remote := []unix.RemoteIovec{{Base: uintptr(at), Len: len(buf)}}
	n, err := unix.ProcessVMReadv(from, local, remote, 0)
	if err == nil && n != len(buf) {
		err = fmt.Errorf("read %d of %d bytes", n, len(buf))
	}
	if err != nil {
		return fmt.Errorf("process_vm_readv at %#x: %w", at, err)
	}
	return writev(to, local, remote)
}

func spansOf(vmas []format.VMA) []span {
	out := make([]span, 0, len(vmas))
	for _, v := range vmas {
		out = append(out, span{v.Start, v.End})
	}
	return out
}
