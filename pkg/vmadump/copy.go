package vmadump

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

const (
	bufSize = 8 << 20
	iovMax  = 1024 // IOV_MAX
)

// segment is part of a run that fits in one buffer.
type segment struct {
	addr, len uint64
	readable  bool
}

// Copy reads every planned run of pid into w, in data-section order. Reading
// and writing overlap: one goroutine fills a buffer while w drains the other.
func Copy(pid int, areas []*Area, w io.Writer) error {
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return fmt.Errorf("dump %d: open mem: %w", pid, err)
	}
	defer mem.Close()

	full := make(chan []byte, 1)
	free := make(chan []byte, 2)
	free <- make([]byte, bufSize)
	free <- make([]byte, bufSize)
	werr := make(chan error, 1)
	go func() {
		var err error
		for b := range full {
			if err == nil {
				_, err = w.Write(b)
			}
			free <- b[:cap(b)]
		}
		werr <- err
	}()

	rerr := fill(pid, mem, areas, full, free)
	close(full)
	if err := <-werr; err != nil {
		return fmt.Errorf("dump %d: write pages: %w", pid, err)
	}
	return rerr
}

// fill walks the runs, packing them into buffers.
func fill(pid int, mem *os.File, areas []*Area, full chan<- []byte, free <-chan []byte) error {
	buf := <-free
	var segs []segment
	used := uint64(0)
	flush := func() error {
		if used == 0 {
			return nil
		}
		if err := readSegs(pid, mem, segs, buf[:used]); err != nil {
			return err
		}
		full <- buf[:used]
		buf, segs, used = <-free, segs[:0], 0
		return nil
	}
	for _, a := range areas {
		readable := a.Prot&1 != 0
		for _, r := range a.Pages {
			for addr, left := r.Addr, r.Len; left > 0; {
				if used == bufSize || len(segs) == iovMax {
					if err := flush(); err != nil {
						return err
					}
				}
				n := min(left, bufSize-used)
				segs = append(segs, segment{addr: addr, len: n, readable: readable})
				used += n
				addr += n
				left -= n
			}
		}
	}
	return flush()
}

// readSegs fills buf from the segments: readable ones in one
// process_vm_readv, the rest (or whatever faulted) through /proc/PID/mem.
func readSegs(pid int, mem *os.File, segs []segment, buf []byte) error {
	remote := make([]unix.RemoteIovec, 0, len(segs))
	total := 0
	for _, s := range segs {
		if !s.readable {
			break
		}
		remote = append(remote, unix.RemoteIovec{Base: uintptr(s.addr), Len: int(s.len)})
		total += int(s.len)
	}
	done := 0
	if len(remote) > 0 {
		local := []unix.Iovec{{Base: &buf[0]}}
		local[0].SetLen(total)
		n, err := unix.ProcessVMReadv(pid, local, remote, 0)
		if err != nil && err != unix.EFAULT {
			return fmt.Errorf("dump %d: process_vm_readv: %w", pid, err)
		}
		done = max(n, 0)
	}
	// The rest, from where process_vm_readv stopped.
	off := 0
	for _, s := range segs {
		end := off + int(s.len)
		if end > done {
			from := max(off, done)
			addr := s.addr + uint64(from-off)
			if _, err := mem.ReadAt(buf[from:end], int64(addr)); err != nil {
				return fmt.Errorf("dump %d: read memory at %#x: %w", pid, addr, err)
			}
		}
		off = end
	}
	return nil
}
