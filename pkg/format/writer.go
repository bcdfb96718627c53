package format

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
)

// Writer writes an image to a temporary file next to its final path and
// renames it into place on Commit, so the final path always holds the latest
// complete image. The first error sticks: later calls return it.
type Writer struct {
	objects bool // the objects section is written
	f       *os.File
	st      os.FileInfo // of f, to recognise it at its temporary name
	path    string
	off     int64
	err     error
	dataHdr int64 // file offset of the data section header
	dataLen uint64
	dataCRC uint32
	dataPos uint64
	stored  uint64 // data payload bytes written (compressed: less)

	// a stream (NewStream) appends to out instead of writing f
	out    *bufio.Writer
	closer io.Closer
	comp   *compressor // WriteOptions.Compress

	stage    int // stage* below: which call may come next
	procs    int // process sections written
	hdrProcs int // what the header declared
	hdrData  int64

	// Progress, if set, counts the data bytes as they are written.
	Progress *Progress

	// Reused counts the data bytes CopyFrom took from another file,
	// Shared those of them that share its blocks (nothing was written).
	Reused  int64
	Shared  int64
	Clones  int  // the runs shared
	noClone bool // the file system cannot share blocks, or NoShare
	buf     []byte
	direct  *os.File // WriteOptions.Direct: the file again, O_DIRECT
}

const (
	stageHeader  = iota // WriteHeader must come next
	stageProcess        // WriteProcess or BeginData
	stageData           // Write or Commit
	stageDone           // committed or aborted
)

// errDone is returned by calls on a Writer after Commit or Abort.
var errDone = errors.New("image writer already committed or aborted")

// misuse makes a call out of order the sticky error.
func (w *Writer) misuse(call string) error {
	if w.err == nil {
		if w.stage == stageDone {
			w.err = fmt.Errorf("%s image %s: %w", call, w.path, errDone)
		} else {
			w.err = fmt.Errorf("%s image %s: called out of order", call, w.path)
		}
	}
	return w.err
}

// Create starts a new image that will replace path on Commit. The file is
// created 0600: it holds all of a process's memory.
//
// The temporary file is named .BASE.tmp-PID-N, created with O_CREATE|O_EXCL
// (which never follows a symlink: open(2)), so a name planted in a
// directory others can write is never opened; Commit checks the name still
// holds this file before and after the rename. Temporary files of writers
// that died (their PID is gone: a killed dump cannot clean up) are removed.
func Create(path string) (*Writer, error) {
	return CreateWith(path, WriteOptions{})
}

// WriteOptions choose how the data section is stored.
type WriteOptions struct {
	// Compress stores the data as zstd chunks (docs/format.md §6.2),
	// encoded on Workers goroutines (0: GOMAXPROCS) at Level (0:
	// LevelFastest).
	Compress bool
	Level    int
	Workers  int
	// ChunkSize is the raw bytes per chunk (0: CompressChunk; at most
	// MaxChunk).
	ChunkSize int
	// NoShare: CopyFrom copies, never shares the source's blocks.
	NoShare bool
	// Direct writes long page-aligned data past the page cache (O_DIRECT).
	// For data that is in memory already (a live copy's staged pages):
	// the page cache would be a second copy of it, and allocating that
	// much fresh memory is slow (on a VM whose host backs guest memory on
	// first touch, it ran at a quarter of the disk's speed). Ignored for
	// streams and compressed data.
	Direct bool
}

func (w *Writer) setOptions(opt WriteOptions) error {
	w.noClone = opt.NoShare
	if !opt.Compress {
		return nil
	}
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var err error
	w.comp, err = newCompressor(opt, workers)
	return err
}

// NewStream starts an image written in one pass to out (a pipe, stdout):
// nothing is patched later, so the data section's CRC (and, compressed,
// its length) go into a trailer section after it (docs/format.md §6.3).
// Commit closes out if it is an io.Closer. An aborted stream just stops:
// the reader sees it truncated and refuses it.
func NewStream(out io.Writer, opt WriteOptions) (*Writer, error) {
	w := &Writer{path: "stream", out: bufio.NewWriterSize(out, 1<<20)}
	if c, ok := out.(io.Closer); ok {
		w.closer = c
	}
	if err := w.setOptions(opt); err != nil {
		return nil, err
	}
	w.write(preamble())
	return w, w.err
}

// CreateWith is Create with options.
func CreateWith(path string, opt WriteOptions) (*Writer, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, fmt.Errorf("create image %s: is a directory", path)
	}
	f, err := createTemp(dir, base)
	if err != nil {
		return nil, fmt.Errorf("create image %s: %w", path, err)
	}
	// The umask may have taken bits away, never added: 0600 at most.
	st, err := f.Stat()
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("create image %s: %w", path, err)
	}
	w := &Writer{f: f, path: path, st: st}
	if err := w.setOptions(opt); err != nil {
		w.Abort()
		return nil, err
	}
	if opt.Direct && !opt.Compress {
		w.openDirect()
	}
	w.write(preamble())
	if w.err != nil {
		w.Abort()
		return nil, w.err
	}
	return w, nil
}

func (w *Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	if w.out != nil {
		n, err := w.out.Write(p)
		w.off += int64(n)
		if err != nil {
			w.err = fmt.Errorf("write image %s: %w", w.path, err)
		}
		return
	}
	if w.writeDirect(p) {
		return
	}
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	if err != nil {
		w.err = fmt.Errorf("write image %s: %w", w.path, err)
	}
}

func (w *Writer) section(typ, flags uint32, payload []byte) {
	w.write(sectionHeader{Type: typ, Flags: flags, Length: uint64(len(payload)), CRC: Checksum(0, payload)}.marshal())
	w.write(payload)
}

func (w *Writer) jsonSection(typ uint32, v any) error {
	b, err := json.Marshal(v)
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("encode image section %d: %w", typ, err)
	}
	if len(b) > maxMetaSection && w.err == nil {
		w.err = fmt.Errorf("encode image section %d: %d bytes exceeds the %d byte limit", typ, len(b), maxMetaSection)
	}
	w.section(typ, FlagCritical, b)
	return w.err
}

// WriteHeader writes the header section; it must come first, once.
func (w *Writer) WriteHeader(h *Header) error {
	if w.stage != stageHeader {
		return w.misuse("write header of")
	}
	w.stage = stageProcess
	w.hdrProcs, w.hdrData = h.Processes, h.DataBytes
	return w.jsonSection(SecHeader, h)
}

// WriteObjects writes the shared objects (pipes, shared memory), after the
// header and before BeginData, at most once.
func (w *Writer) WriteObjects(o *Objects) error {
	if w.stage != stageProcess || w.objects {
		return w.misuse("write objects to")
	}
	w.objects = true
	return w.jsonSection(SecObjects, o)
}

// WriteProcess writes one process record, after the header and before
// BeginData.
func (w *Writer) WriteProcess(p *Process) error {
	if w.stage != stageProcess {
		return w.misuse("write process to")
	}
	w.procs++
	return w.jsonSection(SecProcess, p)
}

// BeginData starts the data section of exactly n bytes, page-aligned in the
// file. Write then fills it in order. The header must have declared as many
// processes as were written and n data bytes.
func (w *Writer) BeginData(n uint64) error {
	if w.stage != stageProcess {
		return w.misuse("begin data of")
	}
	w.stage = stageData
	if w.err == nil && w.procs != w.hdrProcs {
		w.err = fmt.Errorf("write image %s: header declares %d processes, %d written", w.path, w.hdrProcs, w.procs)
	}
	if w.err == nil && (n > math.MaxInt64 || int64(n) != w.hdrData) {
		w.err = fmt.Errorf("write image %s: header declares %d data bytes, BeginData %d", w.path, w.hdrData, n)
	}
	// A pad section fills the gap so the data payload is page-aligned.
	gap := (dataAlign - (w.off+2*sectionHdrLen)%dataAlign) % dataAlign
	w.section(SecPad, 0, make([]byte, gap))
	w.dataHdr = w.off
	w.dataLen = n
	w.Progress.Start(int64(n))
	if w.out != nil {
		hdr := sectionHeader{Type: SecData, Flags: w.dataFlags(), Length: n}
		if w.comp != nil {
			hdr.Length = unknownLength
		}
		w.write(hdr.marshal())
	} else {
		w.write(make([]byte, sectionHdrLen)) // patched by Commit
	}
	return w.err
}

func (w *Writer) dataFlags() uint32 {
	f := uint32(FlagCritical)
	if w.out != nil {
		f |= FlagTrailer
	}
	if w.comp != nil {
		f |= FlagZstd
	}
	return f
}

// emit appends stored payload bytes.
func (w *Writer) emit(p []byte) {
	w.dataCRC = Checksum(w.dataCRC, p)
	w.stored += uint64(len(p))
	w.write(p)
}

// Size is the number of image bytes written so far (after Commit: the
// image's size).
func (w *Writer) Size() int64 { return w.off }

// StoredBytes is the data payload as stored (after Commit).
func (w *Writer) StoredBytes() uint64 { return w.stored }

// DataOffset is the file offset where the data payload starts (valid after
// BeginData). Restore relies on it being page-aligned.
func (w *Writer) DataOffset() int64 { return w.dataHdr + sectionHdrLen }

// Write appends p to the data section.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.reserve("write data to", uint64(len(p))); err != nil {
		return 0, err
	}
	if w.comp != nil {
		w.comp.add(p, w.emit)
	} else {
		w.emit(p)
	}
	w.Progress.Add(len(p))
	return len(p), w.err
}

// Commit finishes the image, fsyncs it and renames it over the final path.
func (w *Writer) Commit() error {
	if w.stage != stageData {
		err := w.misuse("commit")
		w.Abort()
		return err
	}
	if w.err == nil && w.dataPos != w.dataLen {
		w.err = fmt.Errorf("write image %s: data section has %d of %d bytes", w.path, w.dataPos, w.dataLen)
	}
	if w.comp != nil {
		w.comp.flush(w.emit)
	}
	if w.err != nil {
		w.Abort()
		return w.err
	}
	if w.out != nil {
		return w.commitStream()
	}
	hdr := sectionHeader{Type: SecData, Flags: w.dataFlags(), Length: w.stored, CRC: w.dataCRC}.marshal()
	if _, err := w.f.WriteAt(hdr, w.dataHdr); err != nil {
		w.err = fmt.Errorf("write image %s: %w", w.path, err)
	}
	end := make([]byte, 8)
	putUint64(end, uint64(w.off))
	w.section(SecEnd, FlagCritical, end)
	if w.err == nil {
		if err := w.f.Sync(); err != nil {
			w.err = fmt.Errorf("fsync image %s: %w", w.path, err)
		}
	}
	if w.err != nil {
		w.Abort()
		return w.err
	}
	w.closeDirect()
	tmp := w.f.Name()
	err := w.f.Close()
	w.f, w.stage = nil, stageDone
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("close image %s: %w", w.path, err)
	}
	// rename(2) moves whatever the name holds, a symlink included: make
	// sure it is still this file, in case someone replaced it.
	if st, err := os.Lstat(tmp); err != nil || !os.SameFile(st, w.st) {
		return fmt.Errorf("rename image into place %s: %s is no longer the file chpox wrote; the previous image is untouched", w.path, tmp)
	}
	if err := os.Rename(tmp, w.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("rename image into place %s: %w", w.path, err)
	}
	if st, err := os.Lstat(w.path); err != nil || !os.SameFile(st, w.st) {
		return fmt.Errorf("rename image into place %s: the name was replaced during the rename; check the directory's permissions", w.path)
	}
	return syncDir(filepath.Dir(w.path))
}

func (w *Writer) commitStream() error {
	tr := make([]byte, trailerLen)
	putUint64(tr, w.stored)
	binary.LittleEndian.PutUint32(tr[8:], w.dataCRC)
	w.section(SecTrailer, FlagCritical, tr)
	end := make([]byte, 8)
	putUint64(end, uint64(w.off))
	w.section(SecEnd, FlagCritical, end)
	if w.err == nil {
		if err := w.out.Flush(); err != nil {
			w.err = fmt.Errorf("write image %s: %w", w.path, err)
		}
	}
	w.stage = stageDone
	if w.closer != nil {
		if err := w.closer.Close(); err != nil && w.err == nil {
			w.err = fmt.Errorf("close image %s: %w", w.path, err)
		}
		w.closer = nil
	}
	return w.err
}

// createTemp makes the temporary file an image base is written to before
// it is renamed into place (0600), after removing those of writers that
// died.
func createTemp(dir, base string) (f *os.File, err error) {
	removeStale(dir, base)
	for i := 0; i < 100; i++ {
		name := filepath.Join(dir, fmt.Sprintf(".%s.tmp-%d-%d", base, os.Getpid(), rand.Uint32()))
		f, err = os.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if !errors.Is(err, os.ErrExist) {
			break
		}
	}
	return f, err
}

// removeStale removes temporary files of base left by writers that died.
func removeStale(dir, base string) {
	names, _ := filepath.Glob(filepath.Join(dir, "."+base+".tmp-*"))
	for _, name := range names {
		rest := strings.TrimPrefix(filepath.Base(name), "."+base+".tmp-")
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", pidStr)); errors.Is(err, os.ErrNotExist) {
			if st, err := os.Lstat(name); err == nil && st.Mode().IsRegular() {
				os.Remove(name)
			}
		}
	}
}

// Abort removes the temporary file; the previous image stays untouched.
// It does nothing after Commit, so it may be deferred.
func (w *Writer) Abort() {
	w.stage = stageDone
	if w.closer != nil {
		w.closer.Close()
		w.closer = nil
	}
	w.closeDirect()
	if w.f != nil {
		w.f.Close()
		os.Remove(w.f.Name())
		w.f = nil
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
