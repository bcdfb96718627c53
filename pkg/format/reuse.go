package format

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Summed tells whether WriteSummed and CopyFrom save work: a plain image
// file, its data stored as given. Compressed, the CRC covers the stored
// (compressed) bytes; a stream cannot share a file's blocks.
func (w *Writer) Summed() bool { return w.comp == nil && w.out == nil && w.f != nil }

// WriteSummed appends p to the data section; sum is Checksum(0, p), which
// the caller computed (page by page, for the next incremental checkpoint).
func (w *Writer) WriteSummed(p []byte, sum uint32) (int, error) {
	if !w.Summed() {
		return w.Write(p)
	}
	if err := w.reserve("write data to", uint64(len(p))); err != nil {
		return 0, err
	}
	w.combine(sum, int64(len(p)))
	w.stored += uint64(len(p))
	w.write(p)
	w.Progress.Add(len(p))
	return len(p), w.err
}

// CopyFrom appends n bytes of src at off to the data section, whose
// Checksum(0, ...) is sum: shared with src (FICLONERANGE) where the file
// system can, else copied inside the kernel (copy_file_range). Both files'
// offsets must be block-aligned for sharing; they are for pages.
func (w *Writer) CopyFrom(src *os.File, off, n int64, sum uint32) error {
	if !w.Summed() {
		_, err := io.Copy(w, io.NewSectionReader(src, off, n))
		return err
	}
	if err := w.reserve("copy data to", uint64(n)); err != nil {
		return err
	}
	if err := w.share(src, off, n); err != nil {
		w.err = fmt.Errorf("write image %s: copy %d bytes from the previous image: %w", w.path, n, err)
		return w.err
	}
	w.combine(sum, n)
	w.stored += uint64(n)
	w.off += n
	w.Reused += n
	w.Progress.Add(int(n))
	return nil
}

// reserve checks that n more data bytes fit the declared section.
func (w *Writer) reserve(call string, n uint64) error {
	if w.stage != stageData {
		return w.misuse(call)
	}
	if w.err == nil && w.dataPos+n > w.dataLen {
		w.err = fmt.Errorf("write image %s: data section overflows its declared %d bytes", w.path, w.dataLen)
	}
	if w.err != nil {
		return w.err
	}
	w.dataPos += n
	return nil
}

// combine appends the CRC sum of n more bytes to the data CRC. A run of
// pages is shifted a page at a time (a nanosecond each): building the
// operator for an arbitrary length costs microseconds, and an incremental
// checkpoint appends a hundred thousand runs of a few pages.
func (w *Writer) combine(sum uint32, n int64) {
	c := w.dataCRC
	if n%dataAlign == 0 {
		for i := n / dataAlign; i > 0; i-- {
			c = PageShift.apply(c)
		}
		w.dataCRC = c ^ sum
		return
	}
	w.dataCRC = Combine(c, sum, Shift(n))
}

// share puts src's [off, off+n) at w.off: a reflink where the file system
// shares blocks and the run is long enough, else read and written. Not
// copy_file_range: without shared blocks (ext4) it copies through the page
// cache as a write does, and at the few pages an unchanged run holds its
// per-call cost made an incremental checkpoint of 1 GiB three times slower
// than a full one.
//
// Every shared run is an extent of its own, and cloning a range costs the
// file system (XFS: its reference count tree) per extent of the source:
// an image made of thousands of pieces makes the next clone slow. Short
// runs are copied (CloneMin), and the caller writes an image now and then
// without sharing (WriteOptions.NoShare), which joins them again.
func (w *Writer) share(src *os.File, off, n int64) error {
	if !w.noClone && n >= CloneMin {
		err := unix.IoctlFileCloneRange(int(w.f.Fd()), &unix.FileCloneRange{
			Src_fd: int64(src.Fd()), Src_offset: uint64(off), Src_length: uint64(n), Dest_offset: uint64(w.off)})
		if err == nil {
			w.Shared += n
			w.Clones++
			return nil
		}
		// EOPNOTSUPP on ext4 and tmpfs (EXDEV across file systems,
		// EINVAL for unaligned ranges): read and write from now on.
		w.noClone = true
	}
	if w.buf == nil {
		w.buf = make([]byte, 8<<20)
	}
	for done := int64(0); done < n; {
		b := w.buf[:min(int64(len(w.buf)), n-done)]
		if _, err := src.ReadAt(b, off+done); err != nil {
			return err
		}
		if _, err := w.f.WriteAt(b, w.off+done); err != nil {
			return err
		}
		done += int64(len(b))
	}
	return nil
}

// CloneMin is the shortest run CopyFrom shares rather than copies.
const CloneMin = 64 << 10

// Reopen opens the committed image read-only, making sure it is the file
// this Writer wrote: the next incremental checkpoint copies from it.
func (w *Writer) Reopen() (*os.File, error) {
	if w.st == nil || w.stage != stageDone || w.f != nil {
		return nil, fmt.Errorf("reopen image %s: not a committed image file", w.path)
	}
	f, err := os.Open(w.path)
	if err != nil {
		return nil, err
	}
	if st, err := f.Stat(); err != nil || !os.SameFile(st, w.st) {
		f.Close()
		return nil, fmt.Errorf("reopen image %s: the name holds another file now", w.path)
	}
	return f, nil
}
