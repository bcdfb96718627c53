package dump

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/vmadump"
)

// imageWriter is an image whose data is written and which waits for Commit.
type imageWriter struct {
	*format.Writer
	dataBytes uint64
}

// write gathers memory and files of the frozen process and writes the whole
// image to a temporary file. The caller commits or aborts it.
func write(pid int, p *format.Process, out string) (*imageWriter, error) {
	areas, err := vmadump.Areas(pid)
	if err != nil {
		return nil, err
	}
	end, err := vmadump.Plan(pid, areas, 0)
	if err != nil {
		return nil, err
	}
	files, err := procinfo.Files(pid)
	if err != nil {
		return nil, fmt.Errorf("dump %d: %w", pid, err)
	}
	defer procinfo.CloseFiles(files)
	for _, f := range files {
		if f.Source != nil {
			f.Content = []format.DataRun{{Off: end, Len: uint64(f.Size)}}
			end += uint64(f.Size)
		}
		p.Files = append(p.Files, f.File)
	}
	for _, a := range areas {
		p.VMAs = append(p.VMAs, a.VMA)
	}

	w, err := format.Create(out)
	if err != nil {
		return nil, err
	}
	iw := &imageWriter{Writer: w, dataBytes: end}
	if err := fill(iw, pid, p, areas, files); err != nil {
		w.Abort()
		return nil, err
	}
	return iw, nil
}

func fill(w *imageWriter, pid int, p *format.Process, areas []*vmadump.Area, files []*procinfo.OpenFile) error {
	if err := w.WriteHeader(newHeader(1, w.dataBytes)); err != nil {
		return err
	}
	if err := w.WriteProcess(p); err != nil {
		return err
	}
	if err := w.BeginData(w.dataBytes); err != nil {
		return err
	}
	if err := vmadump.Copy(pid, areas, w); err != nil {
		return err
	}
	for _, f := range files {
		if f.Source != nil {
			if err := f.CopyContent(w); err != nil {
				return fmt.Errorf("dump %d: fd %d: %w", pid, f.FD, err)
			}
		}
	}
	return nil
}

func newHeader(nproc int, data uint64) *format.Header {
	var u unix.Utsname
	unix.Uname(&u)
	host, _ := os.Hostname()
	return &format.Header{
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
