package restore

import (
	"fmt"
	"io"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

const (
	chunkSize = 8 << 20
	iovMax    = 1024
)

// sink is where a range of the data section goes: memory of process pid
// at addr, or offset addr of a file (shared memory, deleted file, pipe).
type sink struct {
	off, len uint64
	addr     uint64
	pid      int
	file     io.WriterAt
}

// bufferAt collects an object's saved bytes (a pipe's unread data).
type bufferAt struct{ b *[]byte }

func (w bufferAt) WriteAt(p []byte, off int64) (int, error) {
	if need := int(off) + len(p); need > len(*w.b) {
		*w.b = append(*w.b, make([]byte, need-len(*w.b))...)
	}
	return copy((*w.b)[off:], p), nil
}

// writeData streams the data section once, in order, into the process's
// memory (process_vm_writev, batched) and into the deleted files' stand-ins,
// checking the section's CRC on the way. One goroutine reads the next chunk
// while the current one is written.
func writeData(img *format.Image, o *objects, progress *format.Progress) error {
	sinks := sinksOf(img, o, nil)
	progress.Start(int64(img.Header.DataBytes))
	type chunk struct {
		off uint64
		b   []byte
	}
	full := make(chan chunk, 1)
	free := make(chan []byte, 2)
	free <- make([]byte, chunkSize)
	free <- make([]byte, chunkSize)
	rerr := make(chan error, 1)
	stop := make(chan struct{})
	go func() {
		defer close(full)
		// DataStream verifies the CRC (and a stream's trailer) and
		// returns io.EOF only if everything checks out.
		data := img.DataStream()
		for off := uint64(0); ; {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				rerr <- nil
				return
			}
			n, err := io.ReadFull(data, b)
			if n > 0 {
				full <- chunk{off, b[:n]}
				off += uint64(n)
			}
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				rerr <- nil
				return
			}
			if err != nil {
				rerr <- err
				return
			}
		}
	}()
	var werr error
	for c := range full {
		if werr == nil {
			sinks, werr = deliver(c.off, c.b, sinks)
			if werr != nil {
				close(stop)
			}
			progress.Add(len(c.b))
		}
		free <- c.b[:cap(c.b)]
	}
	if err := <-rerr; err != nil {
		return err
	}
	return werr
}

// sinksOf lists where the data section goes, without the pages of the
// areas in skip (a lazy restore fills those later).
func sinksOf(img *format.Image, o *objects, skip map[*format.VMA]bool) []sink {
	var out []sink
	add := func(runs []format.DataRun, pid int, file io.WriterAt) {
		for _, r := range runs {
			out = append(out, sink{off: r.Off, len: r.Len, addr: r.Addr, pid: pid, file: file})
		}
	}
	for _, p := range img.Processes {
		for i := range p.VMAs {
			if !skip[&p.VMAs[i]] {
				add(p.VMAs[i].Pages, p.PID, nil)
			}
		}
		for _, f := range p.Files {
			if t := o.deleted[f.Desc]; t != nil {
				add(f.Content, 0, t)
			}
		}
		if t := o.exes[p.PID]; t != nil {
			add(p.ExeFile.Content, 0, t)
		}
	}
	for _, s := range img.Objects.Shm {
		add(s.Pages, 0, o.shm[s.ID])
	}
	for _, p := range img.Objects.Pipes {
		add(p.Data, 0, bufferAt{&o.pipes[p.ID].Data})
	}
	out = append(out, o.sysvSinks(img)...)
	out = append(out, o.unixSinks(img)...)
	out = append(out, o.inetSinks(img)...)
	out = append(out, o.ttySinks(img)...)
	out = append(out, o.embeddedSinks(img)...)
	sort.Slice(out, func(i, j int) bool { return out[i].off < out[j].off })
	return out
}

// deliver writes the parts of sinks that fall into the chunk at off and
// returns the sinks not yet complete.
func deliver(off uint64, b []byte, sinks []sink) ([]sink, error) {
	end := off + uint64(len(b))
	var local []unix.Iovec
	var remote []unix.RemoteIovec
	pid := 0
	flush := func() error {
		if len(local) == 0 {
			return nil
		}
		err := writev(pid, local, remote)
		local, remote = local[:0], remote[:0]
		return err
	}
	for len(sinks) > 0 && sinks[0].off < end {
		s := &sinks[0]
		from := max(s.off, off)
		to := min(s.off+s.len, end)
		part := b[from-off : to-off]
		dst := s.addr + (from - s.off)
		if s.file != nil {
			if _, err := s.file.WriteAt(part, int64(dst)); err != nil {
				return nil, fmt.Errorf("write saved content: %w", err)
			}
		} else {
			if s.pid != pid {
				if err := flush(); err != nil {
					return nil, err
				}
				pid = s.pid
			}
			iov := unix.Iovec{Base: &part[0]}
			iov.SetLen(len(part))
			local = append(local, iov)
			remote = append(remote, unix.RemoteIovec{Base: uintptr(dst), Len: len(part)})
			if len(local) == iovMax {
				if err := flush(); err != nil {
					return nil, err
				}
			}
		}
		if to < s.off+s.len {
			break // continues in the next chunk
		}
		sinks = sinks[1:]
	}
	return sinks, flush()
}

func writev(pid int, local []unix.Iovec, remote []unix.RemoteIovec) error {
	want := 0
	for _, r := range remote {
		want += r.Len
	}
	n, err := unix.ProcessVMWritev(pid, local, remote, 0)
	if err == nil && n != want {
		err = fmt.Errorf("wrote %d of %d bytes", n, want)
	}
	if err != nil {
		return fmt.Errorf("process_vm_writev at %#x: %w", remote[0].Base, err)
	}
	return nil
}
