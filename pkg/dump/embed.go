package dump

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// embedding is what --embed-files adds to a plan: the mapped files that go
// into the image, each open (the very inode mapped) until it is copied.
type embedding struct {
	on    bool
	files []*os.File // by EmbeddedFile.ID-1
}

func (e *embedding) close() {
	for _, f := range e.files {
		f.Close()
	}
	e.files = nil
}

// embedFiles stores every file the tree maps (the executable, libraries,
// other mapped files, private or shared) once, by device and inode, at the
// end of the data section, so the image restores where they differ or are
// missing (docs/usage.md, "Portable images").
func (pl *plan) embedFiles() error {
	if !pl.embed.on {
		return nil
	}
	ids := map[[2]uint64]int{}
	for _, p := range pl.procs {
		for _, a := range p.areas {
			if a.Kind != format.VMAFile || a.File == nil {
				continue
			}
			key := [2]uint64{a.File.Dev, a.File.Inode}
			if id, ok := ids[key]; ok {
				a.File.Embedded = id
				continue
			}
			f, err := openMapped(p.Info.PID, a.Start, a.End, a.File)
			if err != nil {
				return err
			}
			var st unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &st); err != nil {
				f.Close()
				return fmt.Errorf("pid %d: embed %s: fstat: %w", p.Info.PID, a.File.Path, err)
			}
			e := format.EmbeddedFile{ID: len(pl.embed.files) + 1, Path: a.File.Path, Dev: a.File.Dev, Inode: a.File.Inode,
				Size: st.Size, MtimeNS: st.Mtim.Nano(), Mode: st.Mode & 0o7777}
			if st.Size > 0 {
				// One run, the whole file: mapped files (ELF objects)
				// have no holes worth keeping.
				e.Content = []format.DataRun{{Addr: 0, Off: pl.end, Len: uint64(st.Size)}}
				pl.end += uint64(st.Size)
			}
			pl.embed.files = append(pl.embed.files, f)
			pl.objects.Embedded = append(pl.objects.Embedded, e)
			ids[key] = e.ID
			a.File.Embedded = e.ID
		}
	}
	return nil
}

// openMapped opens the file mapped at start-end of pid: through
// /proc/PID/map_files, the inode mapped even if its path names another
// file now; without CAP_CHECKPOINT_RESTORE by path, if that is still the
// inode mapped.
func openMapped(pid int, start, end uint64, ref *format.FileRef) (*os.File, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%x-%x", pid, start, end))
	if err == nil {
		return f, nil
	}
	if f, err = os.Open(ref.Path); err != nil {
		return nil, fmt.Errorf("pid %d: embed mapped file %s: %w", pid, ref.Path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Ino != ref.Inode {
		f.Close()
		return nil, fmt.Errorf("pid %d: embed mapped file %s: the path names inode %d, the mapping has %d, and without CAP_CHECKPOINT_RESTORE the mapped one cannot be reached: %w",
			pid, ref.Path, st.Ino, ref.Inode, ErrUnsupported)
	}
	return f, nil
}

// copyEmbedded writes the embedded files' content, in data order.
func (pl *plan) copyEmbedded(w io.Writer) error {
	for i, f := range pl.embed.files {
		e := pl.objects.Embedded[i]
		if e.Size == 0 {
			continue
		}
		if _, err := io.Copy(w, io.NewSectionReader(f, 0, e.Size)); err != nil {
			return fmt.Errorf("embed %s: %w", e.Path, err)
		}
	}
	return nil
}
