package format

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
)

// Image is a decoded image: its metadata is in memory and verified; the data
// section is read on demand through DataStream (or Data) and verified on the
// way.
type Image struct {
	Version   uint32 // the preamble's format version
	Header    Header
	Processes []*Process
	Objects   Objects

	haveObjects bool

	r         io.ReaderAt
	closer    io.Closer
	stream    *seqReader // set while the image is read from a stream
	dataOff   int64
	dataLen   int64 // logical (uncompressed) bytes: the header's data_bytes
	storedLen int64 // payload bytes as stored; -1 until a stream has read them
	dataFlags uint32
	dataCRC   uint32
	dataRead  bool // a stream's data has been handed out

	// where readSections stands, so a stream can resume after the data
	off   int64
	size  int64
	nsec  int
	order order
}

// Open reads and checks the metadata of the image at path.
func Open(path string) (*Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	img, err := Decode(f, st.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	img.closer = f
	return img, nil
}

// ReadStream reads and checks the metadata of an image arriving on r (a
// pipe: read once, in order, never seeked). It returns when the data
// section begins; DataStream then reads the data, the trailer and the end
// marker and verifies them, so nothing of the image may be trusted to be
// complete before DataStream has returned io.EOF.
func ReadStream(r io.Reader) (*Image, error) {
	s := &seqReader{r: r}
	return decode(s, math.MaxInt64, s)
}

// Close releases the file behind the image.
func (img *Image) Close() error {
	if img.closer != nil {
		return img.closer.Close()
	}
	return nil
}

// Data returns a reader over the stored data payload of a file image (for
// an uncompressed image these are the logical data bytes). DataStream is
// what a restore reads.
func (img *Image) Data() *io.SectionReader {
	return io.NewSectionReader(img.r, img.dataOff, img.storedLen)
}

// DataFileOffset is where the data payload starts in the file.
func (img *Image) DataFileOffset() int64 { return img.dataOff }

// DataCRC is the CRC-32C the stored data payload must have (0 for a stream
// until its data has been read: the trailer carries it).
func (img *Image) DataCRC() uint32 { return img.dataCRC }

// Compressed reports a data section of zstd chunks.
func (img *Image) Compressed() bool { return img.dataFlags&FlagZstd != 0 }

// Streamed reports a data section whose length and CRC follow it (an image
// written to a pipe).
func (img *Image) Streamed() bool { return img.dataFlags&FlagTrailer != 0 }

// StoredBytes is the size of the data payload as stored: compressed, it
// is less than Header.DataBytes. -1 for a stream whose data is unread.
func (img *Image) StoredBytes() int64 { return img.storedLen }

// VerifyData reads the whole data section and checks its checksum.
func (img *Image) VerifyData() error {
	_, err := io.Copy(io.Discard, img.DataStream())
	return err
}

// VerifyMapped checks that b, the stored data payload of an uncompressed
// file image (a restore --lazy maps it), has the data section's length
// and checksum, as DataStream would find when read to the end. The
// mapping is checked in place: reading it through DataStream would copy
// every byte once more.
func (img *Image) VerifyMapped(b []byte) error {
	if img.Compressed() || img.stream != nil {
		return errors.New("only an uncompressed image file can be verified in place")
	}
	if int64(len(b)) != img.storedLen {
		return corrupt("data payload is %d bytes, the data section has %d", len(b), img.storedLen)
	}
	if ChecksumParallel(b) != img.dataCRC {
		return fmt.Errorf("data section: %w", ErrChecksum)
	}
	return nil
}

// Decode reads an image of the given size from r. It checks the preamble,
// every metadata checksum, the section order, the end marker and that every
// reference into the data section is in bounds; it does not read the data.
func Decode(r io.ReaderAt, size int64) (*Image, error) {
	return decode(r, size, nil)
}

func decode(r io.ReaderAt, size int64, stream *seqReader) (*Image, error) {
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrTruncated, size)
	}
	pre := make([]byte, preambleSize)
	n := int64(preambleSize)
	if size < n {
		n = size
	}
	if err := readAt(r, pre[:n], 0, "preamble"); err != nil {
		return nil, err
	}
	// A file whose first bytes are not (a prefix of) the magic is something
	// else; one that stops inside the preamble is a truncated image.
	m := n
	if m > int64(len(Magic)) {
		m = int64(len(Magic))
	}
	if string(pre[:m]) != Magic[:m] {
		return nil, ErrBadMagic
	}
	if size < preambleSize {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the %d-byte preamble", ErrTruncated, size, preambleSize)
	}
	v := binary.LittleEndian.Uint32(pre[8:])
	if v < MinVersion || v > Version {
		return nil, fmt.Errorf("%w: image has version %d, this chpox reads versions %d to %d", ErrVersion, v, MinVersion, Version)
	}
	if res := binary.LittleEndian.Uint32(pre[12:]); res != 0 {
		return nil, corrupt("reserved preamble field is %#x, want 0", res)
	}
	img := &Image{Version: v, r: r, stream: stream, dataOff: -1, off: preambleSize, size: size}
	if err := img.readSections(); err != nil {
		return nil, err
	}
	if err := img.validate(); err != nil {
		return nil, err
	}
	return img, nil
}

// readSections walks the sections from img.off to the end marker; reading
// a stream it stops at the data payload, and is called again after it.
func (img *Image) readSections() error {
	hb := make([]byte, sectionHdrLen)
	size := img.size
	for ; ; img.nsec++ {
		off := img.off
		if img.nsec >= maxSections {
			return corrupt("more than %d sections", maxSections)
		}
		if off+sectionHdrLen > size {
			return fmt.Errorf("%w: no end marker (file ends at byte %d)", ErrTruncated, size)
		}
		if err := readAt(img.r, hb, off, "section header"); err != nil {
			return err
		}
		h := unmarshalSection(hb)
		if err := h.check(off); err != nil {
			return err
		}
		if err := img.order.next(h.Type, off); err != nil {
			return err
		}
		off += sectionHdrLen
		if h.Length > uint64(size-off) && !(h.Type == SecData && h.Length == unknownLength) {
			return fmt.Errorf("%w: section %d at byte %d claims %d bytes, file has %d left", ErrTruncated, h.Type, off-sectionHdrLen, h.Length, size-off)
		}
		done, err := img.section(h, off)
		if err != nil {
			return err
		}
		if done {
			if img.stream != nil {
				if k, _ := img.stream.r.Read(make([]byte, 1)); k != 0 {
					return corrupt("bytes after the end marker")
				}
				return nil
			}
			if off+int64(h.Length) != size {
				return corrupt("%d bytes after the end marker", size-off-int64(h.Length))
			}
			return nil
		}
		if h.Type == SecData {
			if img.stream != nil {
				img.off = off
				img.nsec++
				return nil
			}
			img.off = off + img.storedLen
			continue
		}
		img.off = off + int64(h.Length)
	}
}

// check refuses section header fields that version 1 fixes: the reserved
// word, undefined flag bits, type 0, and known sections with the wrong
// critical flag. The header is not covered by the checksum, so these rules
// are what catch damage to it.
func (h sectionHeader) check(off int64) error {
	if h.Reserved != 0 {
		return corrupt("section at byte %d: reserved field is %#x, want 0", off, h.Reserved)
	}
	flags := h.Flags
	if h.Type == SecData {
		// version 3: the data section alone may carry these
		flags &^= FlagTrailer | FlagZstd
	}
	if flags&^FlagCritical != 0 {
		return corrupt("section at byte %d: undefined flags %#x", off, h.Flags)
	}
	want := uint32(FlagCritical)
	switch h.Type {
	case 0:
		return corrupt("section at byte %d has type 0", off)
	case SecPad:
		want = 0
	case SecHeader, SecProcess, SecObjects, SecData, SecEnd, SecTrailer:
	default:
		return nil
	}
	if flags != want {
		return corrupt("section %d at byte %d has flags %#x, want %#x", h.Type, off, h.Flags, want)
	}
	return nil
}

// order enforces the section order: header, then process sections and
// unknown sections, then exactly one pad, the data section, its trailer if
// it is flagged to have one, and the end marker.
type order struct {
	n       int
	prev    uint32
	trailer bool // the data section has FlagTrailer
}

func (o *order) next(typ uint32, off int64) error {
	ok := true
	switch {
	case o.n == 0:
		ok = typ == SecHeader
	case o.prev == SecPad:
		ok = typ == SecData
	case o.prev == SecData && o.trailer:
		ok = typ == SecTrailer
	case o.prev == SecData, o.prev == SecTrailer:
		ok = typ == SecEnd
	case typ == SecHeader, typ == SecData, typ == SecEnd, typ == SecTrailer:
		// a second header, data without a pad, an end without data
		ok = false
	}
	if !ok {
		return corrupt("section %d at byte %d is out of order", typ, off)
	}
	o.n++
	o.prev = typ
	return nil
}

// section handles one section; it reports true at the end marker.
func (img *Image) section(h sectionHeader, off int64) (bool, error) {
	switch h.Type {
	case SecHeader, SecProcess, SecObjects, SecEnd:
		payload, err := img.readMeta(h, off)
		if err != nil {
			return false, err
		}
		return img.meta(h.Type, payload, off)
	case SecPad:
		if h.Length >= dataAlign {
			return false, corrupt("pad section of %d bytes", h.Length)
		}
		payload, err := img.readMeta(h, off)
		if err != nil {
			return false, err
		}
		for _, b := range payload {
			if b != 0 {
				return false, corrupt("pad section at byte %d is not zero", off-sectionHdrLen)
			}
		}
	case SecData:
		if off%dataAlign != 0 {
			return false, corrupt("data payload at byte %d is not %d-aligned", off, dataAlign)
		}
		return false, img.dataSection(h, off)
	case SecTrailer:
		payload, err := img.readMeta(h, off)
		if err != nil {
			return false, err
		}
		if len(payload) != trailerLen || binary.LittleEndian.Uint32(payload[12:]) != 0 {
			return false, corrupt("data trailer at byte %d is malformed", off-sectionHdrLen)
		}
		if n := getUint64(payload); n != uint64(img.storedLen) {
			return false, corrupt("data trailer says %d payload bytes, the data section has %d", n, img.storedLen)
		}
		img.dataCRC = binary.LittleEndian.Uint32(payload[8:])
	default:
		if h.Flags&FlagCritical != 0 {
			return false, fmt.Errorf("%w: section type %d is required but unknown to this chpox; upgrade chpox", ErrVersion, h.Type)
		}
	}
	return false, nil
}

func (img *Image) readMeta(h sectionHeader, off int64) ([]byte, error) {
	if h.Length > maxMetaSection {
		return nil, corrupt("section %d is %d bytes, limit %d", h.Type, h.Length, maxMetaSection)
	}
	payload := make([]byte, h.Length)
	if err := readAt(img.r, payload, off, fmt.Sprintf("section %d", h.Type)); err != nil {
		return nil, err
	}
	if Checksum(0, payload) != h.CRC {
		return nil, fmt.Errorf("section %d at byte %d: %w", h.Type, off-sectionHdrLen, ErrChecksum)
	}
	return payload, nil
}

func (img *Image) meta(typ uint32, payload []byte, off int64) (bool, error) {
	switch typ {
	case SecHeader:
		return false, decodeJSON(payload, &img.Header, "header")
	case SecProcess:
		p := new(Process)
		if err := decodeJSON(payload, p, "process"); err != nil {
			return false, err
		}
		img.Processes = append(img.Processes, p)
		return false, nil
	case SecObjects:
		if img.haveObjects {
			return false, corrupt("two objects sections")
		}
		img.haveObjects = true
		return false, decodeJSON(payload, &img.Objects, "objects")
	default: // SecEnd
		if len(payload) != 8 || int64(getUint64(payload)) != off-sectionHdrLen {
			return false, corrupt("end marker does not match the file")
		}
		return true, nil
	}
}

func decodeJSON(b []byte, v any, what string) error {
	// Unknown fields are allowed: a newer chpox may add optional ones.
	if err := json.Unmarshal(b, v); err != nil {
		return corrupt("%s section: %v", what, err)
	}
	return nil
}

// readAt fills p from off. A ReaderAt may return io.EOF with a full read at
// the end of its data, and may return io.EOF for an empty read there, so
// only a short read counts; one that ends at EOF means the file is shorter
// than the size Decode was given.
func readAt(r io.ReaderAt, p []byte, off int64, what string) error {
	if len(p) == 0 {
		return nil
	}
	k, err := r.ReadAt(p, off)
	if k == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s at byte %d: file ends early", ErrTruncated, what, off)
	}
	return fmt.Errorf("read %s at byte %d: %w", what, off, err)
}

func putUint64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }
func getUint64(b []byte) uint64    { return binary.LittleEndian.Uint64(b) }
