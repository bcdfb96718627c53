package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// dataSection records the data section's header. Its payload is not read
// here, except that a file whose data length is unknown (a stream saved to
// a file) is walked chunk by chunk to find where the payload ends.
func (img *Image) dataSection(h sectionHeader, off int64) error {
	img.dataOff, img.dataFlags = off, h.Flags
	img.order.trailer = h.Flags&FlagTrailer != 0
	img.dataCRC = h.CRC
	if h.Flags&FlagTrailer != 0 && h.CRC != 0 {
		return corrupt("data section with a trailer has CRC %#x in its header, want 0", h.CRC)
	}
	if h.Length == unknownLength && h.Flags&FlagTrailer == 0 {
		return corrupt("data section of unknown length without a trailer")
	}
	if img.Header.DataBytes < 0 {
		return corrupt("header says %d data bytes", img.Header.DataBytes)
	}
	img.dataLen = img.Header.DataBytes
	img.storedLen = int64(h.Length)
	if h.Flags&FlagZstd == 0 {
		if h.Length != unknownLength {
			img.dataLen = int64(h.Length) // validate compares it with data_bytes
		} else {
			img.storedLen = img.dataLen
		}
	} else if h.Length == unknownLength {
		img.storedLen = -1
	}
	if h.Flags&FlagZstd == 0 || img.stream != nil {
		return nil
	}
	// A file: walk the chunk headers, to find the end of a payload of
	// unknown length, and so that damage to the data section's header or
	// flags is caught by Open like damage to any other header (the chunk
	// headers are covered by the data CRC, which DataStream checks).
	pos, raw := off, int64(0)
	hb := make([]byte, chunkHdrLen)
	for raw < img.dataLen {
		if pos+chunkHdrLen > img.size {
			return fmt.Errorf("%w: data chunk at byte %d: file ends early", ErrTruncated, pos)
		}
		if err := readAt(img.r, hb, pos, "data chunk header"); err != nil {
			return err
		}
		stored, n, err := img.chunkHeader(hb, raw, pos)
		if err != nil {
			return err
		}
		pos += chunkHdrLen + stored
		raw += n
	}
	if pos > img.size {
		return fmt.Errorf("%w: data chunks run past the end of the file", ErrTruncated)
	}
	if img.storedLen >= 0 && pos-off != img.storedLen {
		return corrupt("data chunks fill %d bytes of a %d-byte data section", pos-off, img.storedLen)
	}
	img.storedLen = pos - off
	return nil
}

// chunkHeader checks one chunk header at raw bytes raw into the data.
func (img *Image) chunkHeader(hb []byte, raw, pos int64) (stored, n int64, err error) {
	stored = int64(binary.LittleEndian.Uint32(hb[0:]))
	n = int64(binary.LittleEndian.Uint32(hb[4:]))
	if n == 0 || n > MaxChunk || n > img.dataLen-raw || stored == 0 || stored > maxStoredChunk {
		return 0, 0, corrupt("data chunk at byte %d: %d bytes stored for %d (%d of %d data bytes before it)", pos, stored, n, raw, img.dataLen)
	}
	return stored, n, nil
}

// seqReader lets the section walk read a stream: every read continues
// where the last one stopped (skipped sections are read and dropped).
type seqReader struct {
	r   io.Reader
	pos int64
}

func (s *seqReader) ReadAt(p []byte, off int64) (int, error) {
	if off < s.pos {
		return 0, fmt.Errorf("stream cannot go back to byte %d from %d", off, s.pos)
	}
	if off > s.pos {
		k, err := io.CopyN(io.Discard, s.r, off-s.pos)
		s.pos += k
		if err != nil {
			return 0, err
		}
	}
	return s.read(p)
}

func (s *seqReader) read(p []byte) (int, error) {
	n, err := io.ReadFull(s.r, p)
	s.pos += int64(n)
	return n, err
}

// DataStream returns the logical data bytes in order (decompressed). It
// returns io.EOF only once everything checked out: the CRC, the chunk
// framing, and for a stream its trailer and end marker; any damage is the
// error of the last Read instead. A stream's data can be read once.
func (img *Image) DataStream() io.Reader {
	d := &dataReader{img: img}
	if img.stream != nil {
		if img.dataRead {
			return errReader{errors.New("the image's data was already read from its stream")}
		}
		img.dataRead = true
		d.src = img.stream
	} else {
		d.src = &seqReader{r: img.Data()}
	}
	return d
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type dataReader struct {
	img    *Image
	src    *seqReader // positioned at the payload start
	crc    uint32
	raw    int64 // logical bytes produced
	buf    []byte
	cbuf   []byte
	dec    *zstd.Decoder
	queue  []chan decoded // chunks being decompressed, in order
	tee    io.Writer      // Spool: the stored bytes go here
	nodec  bool           // Spool: chunks are copied, not decompressed
	err    error
	stored int64
}

func (d *dataReader) Read(p []byte) (int, error) {
	if left := d.img.dataLen - d.raw; d.img.dataFlags&FlagZstd == 0 && left > 0 && len(d.buf) == 0 && d.err == nil && len(p) > 0 {
		// Uncompressed: straight into the caller's buffer, no copy.
		b := p[:min(int64(len(p)), left)]
		if err := d.readStored(b); err != nil {
			d.err = err
			return 0, err
		}
		d.raw += int64(len(b))
		return len(b), nil
	}
	for len(d.buf) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		d.err = d.next()
	}
	n := copy(p, d.buf)
	d.buf = d.buf[n:]
	return n, nil
}

func (d *dataReader) readStored(p []byte) error {
	n, err := d.src.read(p)
	d.crc = Checksum(d.crc, p[:n])
	d.stored += int64(n)
	if d.tee != nil && n > 0 {
		if _, werr := d.tee.Write(p[:n]); werr != nil {
			return fmt.Errorf("spool data section: %w", werr)
		}
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("%w: data section ends after %d of its data bytes", ErrTruncated, d.raw)
	}
	if err != nil {
		return fmt.Errorf("read data section: %w", err)
	}
	return nil
}

// next fills d.buf with the next piece, or returns io.EOF after the checks
// of the end.
func (d *dataReader) next() error {
	img := d.img
	if img.dataFlags&FlagZstd == 0 {
		left := img.dataLen - d.raw
		if left == 0 {
			return d.finish()
		}
		if d.cbuf == nil {
			d.cbuf = make([]byte, 1<<20)
		}
		b := d.cbuf[:min(int64(len(d.cbuf)), left)]
		if err := d.readStored(b); err != nil {
			return err
		}
		d.raw += int64(len(b))
		if !d.nodec {
			d.buf = b
		}
		return nil
	}
	// Compressed: read chunks ahead and decompress them on all CPUs,
	// handing them out in order.
	for d.raw < img.dataLen && (d.nodec || len(d.queue) < d.workers()) {
		if err := d.readChunk(); err != nil {
			return err
		}
	}
	if len(d.queue) == 0 {
		return d.finish()
	}
	r := <-d.queue[0]
	d.queue = d.queue[1:]
	if r.err != nil {
		return r.err
	}
	d.buf = r.out
	return nil
}

type decoded struct {
	out []byte
	err error
}

func (d *dataReader) workers() int { return 2 * runtime.GOMAXPROCS(0) }

// readChunk reads the next chunk and, unless spooling, starts its
// decompression.
func (d *dataReader) readChunk() error {
	img := d.img
	hb := make([]byte, chunkHdrLen)
	at := img.dataOff + d.stored
	if err := d.readStored(hb); err != nil {
		return err
	}
	stored, n, err := img.chunkHeader(hb, d.raw, at)
	if err != nil {
		return err
	}
	if img.storedLen >= 0 && d.stored+stored > img.storedLen {
		return corrupt("data chunk at byte %d runs past the data section", at)
	}
	if d.nodec {
		if int64(cap(d.cbuf)) < stored {
			d.cbuf = make([]byte, stored)
		}
		d.raw += n
		return d.readStored(d.cbuf[:stored])
	}
	c := make([]byte, stored)
	if err := d.readStored(c); err != nil {
		return err
	}
	d.raw += n
	if d.dec == nil {
		d.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(MaxChunk))
		if err != nil {
			return err
		}
	}
	done := make(chan decoded, 1)
	d.queue = append(d.queue, done)
	go func() {
		out, err := d.dec.DecodeAll(c, make([]byte, 0, n))
		if err != nil || int64(len(out)) != n {
			// A CRC mismatch explains a bad frame best; it is known only
			// at the end, so the damage is reported as damage either way.
			err = fmt.Errorf("data chunk at byte %d does not decompress to its %d bytes (%v): %w", at, n, err, ErrChecksum)
		}
		done <- decoded{out, err}
	}()
	return nil
}

func (d *dataReader) finish() error {
	img := d.img
	if d.dec != nil {
		d.dec.Close()
		d.dec = nil
	}
	if img.stream != nil && img.stream == d.src {
		if img.storedLen >= 0 && d.stored != img.storedLen {
			return corrupt("data chunks fill %d of the data section's %d bytes", d.stored, img.storedLen)
		}
		img.storedLen = d.stored
		img.off = img.dataOff + d.stored
		if err := img.readSections(); err != nil {
			return err
		}
	} else if d.stored != img.storedLen {
		return corrupt("data chunks fill %d of the data section's %d bytes", d.stored, img.storedLen)
	}
	if d.crc != img.dataCRC {
		return fmt.Errorf("data section: %w", ErrChecksum)
	}
	return io.EOF
}

// Spool copies a stream's data payload into f (an unlinked temporary file),
// verifying it, its trailer and the end marker; the image then reads its
// data from f, which Close closes. Restore spools when it cannot build the tree before the data
// has arrived (the dumped processes still hold their PIDs on this machine).
func (img *Image) Spool(f *os.File) error {
	if img.stream == nil {
		return nil
	}
	d := &dataReader{img: img, src: img.stream, tee: f, nodec: true}
	img.dataRead = true
	for {
		err := d.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	img.stream, img.r, img.dataOff, img.dataRead = nil, f, 0, false
	if img.closer == nil {
		img.closer = f // Close closes the spool
	}
	return nil
}

// compressor encodes the data section in chunks on all CPUs and hands
// them out in order.
type compressor struct {
	size    int // raw bytes per chunk
	enc     *zstd.Encoder
	chunk   []byte
	pending []chan []byte
	max     int
}

// Compression levels for WriteOptions.Level.
const (
	LevelFastest = int(zstd.SpeedFastest)
	LevelDefault = int(zstd.SpeedDefault)
	LevelBetter  = int(zstd.SpeedBetterCompression)
	LevelBest    = int(zstd.SpeedBestCompression)
)

// CompressChunk is the raw size of one compressed chunk: large enough for
// a good ratio, small enough to keep every CPU busy on a small image.
const CompressChunk = 1 << 20

func newCompressor(opt WriteOptions, workers int) (*compressor, error) {
	level, size := opt.Level, opt.ChunkSize
	if level == 0 {
		level = LevelFastest
	}
	if size <= 0 || size > MaxChunk {
		size = CompressChunk
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.EncoderLevel(level)), zstd.WithEncoderConcurrency(workers))
	if err != nil {
		return nil, err
	}
	return &compressor{size: size, enc: enc, max: 2 * workers}, nil
}

// add takes raw data; emit receives finished chunks (header and frame) in
// order.
func (c *compressor) add(p []byte, emit func([]byte)) {
	for len(p) > 0 {
		if c.chunk == nil {
			c.chunk = make([]byte, 0, c.size)
		}
		n := min(len(p), c.size-len(c.chunk))
		c.chunk = append(c.chunk, p[:n]...)
		p = p[n:]
		if len(c.chunk) == c.size {
			c.submit(emit)
		}
	}
}

func (c *compressor) submit(emit func([]byte)) {
	raw := c.chunk
	c.chunk = nil
	done := make(chan []byte, 1)
	c.pending = append(c.pending, done)
	go func() {
		out := make([]byte, chunkHdrLen, chunkHdrLen+len(raw)/2)
		out = c.enc.EncodeAll(raw, out)
		binary.LittleEndian.PutUint32(out[0:], uint32(len(out)-chunkHdrLen))
		binary.LittleEndian.PutUint32(out[4:], uint32(len(raw)))
		done <- out
	}()
	for len(c.pending) > c.max {
		c.pop(emit)
	}
}

func (c *compressor) pop(emit func([]byte)) {
	emit(<-c.pending[0])
	c.pending = c.pending[1:]
}

// flush emits everything still pending.
func (c *compressor) flush(emit func([]byte)) {
	if len(c.chunk) > 0 {
		c.submit(emit)
	}
	for len(c.pending) > 0 {
		c.pop(emit)
	}
	c.enc.Close()
}
