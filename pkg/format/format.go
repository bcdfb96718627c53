// Package format reads and writes chpox image files.
//
// An image is one file:
//
//	+----------------------------------------------+
//	| preamble: magic "\x89CHPOX\r\n", version u32, |  16 bytes
//	|           reserved u32                        |
//	+----------------------------------------------+
//	| section: type u32 | flags u32 | length u64 |  |  24-byte section header
//	|          crc32c u32 | reserved u32           |
//	|          payload (length bytes)              |
//	+----------------------------------------------+
//	| ... more sections ...                        |
//	+----------------------------------------------+
//
// Sections, in order: one header (JSON), one process section (JSON) per
// process, a pad section that makes the data payload start on a page
// boundary, the data section (raw page and file contents, referenced by
// offset from the process records) and an end section holding the length of
// everything before it. Every payload carries a CRC-32C. A reader skips
// section types it does not know unless their critical flag is set.
//
// The package holds plain data and the container; it never talks to the
// kernel, so images can be inspected on any platform. docs/format.md is the
// specification; keep the two in step.
package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Version is the image format version this package writes. It reads
// MinVersion up to Version: version 3 only added optional fields and
// records, so a version 2 image means what it always meant.
const Version = 3

// MinVersion is the oldest image format version this package reads.
const MinVersion = 2

// Magic opens every image (PNG-style: non-ASCII first byte, CR LF to catch
// text-mode mangling).
const Magic = "\x89CHPOX\r\n"

// Section types.
const (
	SecHeader  = 1
	SecProcess = 2
	SecData    = 3
	SecPad     = 4
	SecObjects = 5
	// SecTrailer (version 3) follows a data section flagged FlagTrailer and
	// carries its length and CRC, which a stream knows only at the end.
	SecTrailer = 6
	SecEnd     = 0x7fff
)

// FlagCritical marks a section a reader must understand to use the image.
const FlagCritical = 1

// Data section flags (version 3).
const (
	// FlagTrailer: the data section's CRC field is 0 and its length may be
	// unknownLength; the trailer section after it holds both (streams).
	FlagTrailer = 1 << 1
	// FlagZstd: the data payload is a sequence of zstd-compressed chunks.
	FlagZstd = 1 << 2
)

const (
	// unknownLength in a FlagTrailer data section's length: the payload
	// ends where its chunks add up to the header's data_bytes.
	unknownLength = ^uint64(0)
	trailerLen    = 16
	chunkHdrLen   = 8
	// MaxChunk bounds the raw bytes of one compressed chunk (and so what a
	// reader allocates for it); maxStoredChunk allows zstd's worst case.
	MaxChunk       = 8 << 20
	maxStoredChunk = MaxChunk + MaxChunk/128 + 1024
)

const (
	preambleSize  = 16
	sectionHdrLen = 24
	// maxMetaSection caps JSON sections so a damaged length cannot make the
	// reader allocate without bound.
	maxMetaSection = 64 << 20
	maxSections    = 1 << 16
	// Alignment of the data payload: restore reads it in page-sized blocks.
	dataAlign = 4096
)

// Errors a caller may need to tell apart.
var (
	ErrBadMagic  = errors.New("not a chpox image (bad magic)")
	ErrVersion   = errors.New("unsupported image format version")
	ErrChecksum  = errors.New("checksum mismatch: the image is damaged")
	ErrTruncated = errors.New("image is truncated")
	ErrCorrupt   = errors.New("image is malformed")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Checksum is the CRC-32C used for every section payload.
func Checksum(crc uint32, p []byte) uint32 { return crc32.Update(crc, castagnoli, p) }

type sectionHeader struct {
	Type     uint32
	Flags    uint32
	Length   uint64
	CRC      uint32
	Reserved uint32
}

func (h sectionHeader) marshal() []byte {
	b := make([]byte, sectionHdrLen)
	binary.LittleEndian.PutUint32(b[0:], h.Type)
	binary.LittleEndian.PutUint32(b[4:], h.Flags)
	binary.LittleEndian.PutUint64(b[8:], h.Length)
	binary.LittleEndian.PutUint32(b[16:], h.CRC)
	binary.LittleEndian.PutUint32(b[20:], h.Reserved)
	return b
}

func unmarshalSection(b []byte) sectionHeader {
	return sectionHeader{
		Type:     binary.LittleEndian.Uint32(b[0:]),
		Flags:    binary.LittleEndian.Uint32(b[4:]),
		Length:   binary.LittleEndian.Uint64(b[8:]),
		CRC:      binary.LittleEndian.Uint32(b[16:]),
		Reserved: binary.LittleEndian.Uint32(b[20:]),
	}
}

func preamble() []byte {
	b := make([]byte, preambleSize)
	copy(b, Magic)
	binary.LittleEndian.PutUint32(b[8:], Version)
	return b
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}
