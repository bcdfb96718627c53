package format

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// writeMode is one of the four ways the writer stores an image.
type writeMode struct {
	name             string
	stream, compress bool
}

var writeModes = []writeMode{
	{"file", false, false},
	{"file-zstd", false, true},
	{"stream", true, false},
	{"stream-zstd", true, true},
}

// writeWith writes an image in mode m and returns its bytes.
func writeWith(t testing.TB, m writeMode, h *Header, objs *Objects, procs []*Process, data []byte, chunk int) []byte {
	t.Helper()
	var buf bytes.Buffer
	opt := WriteOptions{Compress: m.compress, Workers: 3, ChunkSize: testChunk}
	var w *Writer
	var err error
	path := filepath.Join(t.TempDir(), "img")
	if m.stream {
		w, err = NewStream(&buf, opt)
	} else {
		w, err = CreateWith(path, opt)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.WriteHeader(h))
	if objs != nil {
		must(w.WriteObjects(objs))
	}
	for _, p := range procs {
		must(w.WriteProcess(p))
	}
	must(w.BeginData(uint64(len(data))))
	for d := data; len(d) > 0; {
		n := min(chunk, len(d))
		_, err := w.Write(d[:n])
		must(err)
		d = d[n:]
	}
	must(w.Commit())
	if m.stream {
		return buf.Bytes()
	}
	b, err := os.ReadFile(path)
	must(err)
	return b
}

// testChunk keeps the tests' images small and still of several chunks.
const testChunk = 8192

// compressibleSample is the standard sample with text after its data, so
// that it compresses and makes several chunks.
func compressibleSample() (sample, []byte) {
	s := makeSample(3, false)
	data := bytes.Clone(s.data)
	for len(data) < 4*len(s.data)+5*testChunk+123 {
		data = append(data, "chpox page "...)
	}
	return s, data
}

// readAll reads the image both ways a reader can (Decode of the bytes as a
// file, ReadStream of them as a pipe) and returns the logical data.
func readBoth(t *testing.T, b []byte) (file, stream []byte, fimg, simg *Image) {
	t.Helper()
	var err error
	fimg, err = decodeBytes(b)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if file, err = io.ReadAll(fimg.DataStream()); err != nil {
		t.Fatalf("file DataStream: %v", err)
	}
	simg, err = ReadStream(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("ReadStream: %v", err)
	}
	if stream, err = io.ReadAll(simg.DataStream()); err != nil {
		t.Fatalf("stream DataStream: %v", err)
	}
	return file, stream, fimg, simg
}

// Every mode round-trips through both readers; an uncompressed file image
// is what it always was, and a stream differs from it only in the data
// section's header and the trailer.
func TestStreamRoundTrip(t *testing.T) {
	s, _ := compressibleSample()
	_, data := compressibleSample()
	h := *s.h
	h.DataBytes = int64(len(data))
	images := map[string][]byte{}
	for _, m := range writeModes {
		t.Run(m.name, func(t *testing.T) {
			b := writeWith(t, m, &h, s.objs, s.procs, data, 100000)
			images[m.name] = b
			file, stream, fimg, simg := readBoth(t, b)
			if !bytes.Equal(file, data) || !bytes.Equal(stream, data) {
				t.Fatalf("data differs: file reader %d bytes, stream reader %d, want %d", len(file), len(stream), len(data))
			}
			for _, img := range []*Image{fimg, simg} {
				if img.Compressed() != m.compress || img.Streamed() != m.stream {
					t.Errorf("compressed %v streamed %v, want %v %v", img.Compressed(), img.Streamed(), m.compress, m.stream)
				}
				if m.compress && img.StoredBytes() >= int64(len(data))/2 {
					t.Errorf("compressed to %d of %d bytes", img.StoredBytes(), len(data))
				}
			}
			if fimg.StoredBytes() != simg.StoredBytes() {
				t.Errorf("stored bytes: file reader %d, stream reader %d", fimg.StoredBytes(), simg.StoredBytes())
			}
			// A stream's data can be read once.
			if _, err := io.ReadAll(simg.DataStream()); err == nil {
				t.Error("a stream's data was read twice")
			}
		})
	}
	// The plain file image is byte for byte what Create writes.
	path := filepath.Join(t.TempDir(), "old")
	if err := writeImage(path, &h, s.objs, s.procs, data, 4096); err != nil {
		t.Fatal(err)
	}
	old, _ := os.ReadFile(path)
	if !bytes.Equal(old, images["file"]) {
		t.Error("CreateWith without options writes other bytes than Create")
	}
	f, st := images["file"], images["stream"]
	img, _ := decodeBytes(f)
	hdr := int(img.DataFileOffset()) - sectionHdrLen
	if !bytes.Equal(f[:hdr], st[:hdr]) || !bytes.Equal(f[hdr+24:hdr+24+len(data)], st[hdr+24:hdr+24+len(data)]) {
		t.Error("the stream's metadata or data payload differ from the file image's")
	}
	if len(st) != len(f)+sectionHdrLen+trailerLen {
		t.Errorf("stream is %d bytes, file %d: want one trailer section more", len(st), len(f))
	}
}

// readFully reads an image as a stream to its end, as restore - does.
func readFully(b []byte) error {
	img, err := ReadStream(bytes.NewReader(b))
	if err != nil {
		return err
	}
	_, err = io.ReadAll(img.DataStream())
	return err
}

// Damage anywhere in a stream, and any truncation, is refused by
// ReadStream or at the latest by the last read of DataStream, with one of
// the package's errors; Decode of the same bytes refuses them too.
func TestStreamTamper(t *testing.T) {
	s, data := compressibleSample()
	h := *s.h
	h.DataBytes = int64(len(data))
	for _, m := range writeModes {
		t.Run(m.name, func(t *testing.T) {
			b := writeWith(t, m, &h, s.objs, s.procs, data, 65536)
			img, _ := decodeBytes(b)
			dataEnd := int(img.DataFileOffset() + img.StoredBytes())
			check := func(what string, bad []byte) {
				t.Helper()
				err := readFully(bad)
				if err == nil || !isOneOf(err, allErrs...) {
					t.Fatalf("%s: stream read: %v", what, err)
				}
				fimg, err := decodeBytes(bad)
				if err == nil {
					_, err = io.ReadAll(fimg.DataStream())
				}
				if err == nil || !isOneOf(err, allErrs...) {
					t.Fatalf("%s: file read: %v", what, err)
				}
			}
			// From the data header on, outside the payload (the header,
			// the trailer, the end marker), one bit of every byte, the
			// bits taking turns; samples of the payload and of the
			// metadata, whose every byte TestTamper flips already. Each
			// check reads the whole image, so this keeps to seconds under
			// -race.
			for off := 0; off < len(b); off++ {
				inPayload := off >= int(img.DataFileOffset()) && off < dataEnd
				inMeta := off < int(img.DataFileOffset())-sectionHdrLen
				if (inPayload || inMeta) && off%4093 != 0 {
					continue
				}
				bit := uint(off % 8)
				bad := bytes.Clone(b)
				bad[off] ^= 1 << bit
				if readableVersionFlip(b, off, bit) {
					continue
				}
				check("flip", bad)
			}
			for n := 0; n < len(b); n += 1 + n/3 {
				check("truncate", b[:n])
			}
			check("truncate by one", b[:len(b)-1])
			check("extra byte", append(bytes.Clone(b), 0))
		})
	}
}

// The version 3 rules of the data section's flags and the trailer, on
// images built by hand.
func TestStreamRules(t *testing.T) {
	s := makeSample(1, true)
	data := s.data
	trailer := func(n uint64, crc uint32) []byte {
		p := binary.LittleEndian.AppendUint64(nil, n)
		p = binary.LittleEndian.AppendUint32(p, crc)
		return binary.LittleEndian.AppendUint32(p, 0)
	}
	zero := uint32(0)
	unknown := unknownLength
	build := func(dataSec sec, after ...sec) []byte {
		secs := []sec{jsonSec(SecHeader, s.h)}
		for _, p := range s.procs {
			secs = append(secs, jsonSec(SecProcess, p))
		}
		secs = append(secs, sec{typ: SecPad, autoPad: true}, dataSec)
		secs = append(secs, after...)
		return assemble(Version, append(secs, sec{typ: SecEnd, flags: FlagCritical, autoEnd: true}))
	}
	crc := Checksum(0, data)
	good := build(sec{typ: SecData, flags: FlagCritical | FlagTrailer, payload: data, crc: &zero},
		sec{typ: SecTrailer, flags: FlagCritical, payload: trailer(uint64(len(data)), crc)})
	if err := readFully(good); err != nil {
		t.Fatalf("hand-built stream refused: %v", err)
	}
	goodUnknown := build(sec{typ: SecData, flags: FlagCritical | FlagTrailer, payload: data, crc: &zero, length: &unknown},
		sec{typ: SecTrailer, flags: FlagCritical, payload: trailer(uint64(len(data)), crc)})
	if err := readFully(goodUnknown); err != nil {
		t.Fatalf("stream of unknown length refused: %v", err)
	}
	if img, err := decodeBytes(goodUnknown); err != nil || img.VerifyData() != nil {
		t.Fatalf("stream of unknown length saved to a file refused: %v", err)
	}
	crcCopy := crc
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"trailer flag, CRC in the header", build(sec{typ: SecData, flags: FlagCritical | FlagTrailer, payload: data, crc: &crcCopy},
			sec{typ: SecTrailer, flags: FlagCritical, payload: trailer(uint64(len(data)), crc)}), ErrCorrupt},
		{"trailer flag, no trailer", build(sec{typ: SecData, flags: FlagCritical | FlagTrailer, payload: data, crc: &zero}), ErrCorrupt},
		{"trailer without the flag", build(sec{typ: SecData, flags: FlagCritical, payload: data},
			sec{typ: SecTrailer, flags: FlagCritical, payload: trailer(uint64(len(data)), crc)}), ErrCorrupt},
		{"unknown length without the flag", build(sec{typ: SecData, flags: FlagCritical, payload: data, length: &unknown}), ErrCorrupt},
		{"trailer length wrong", build(sec{typ: SecData, flags: FlagCritical | FlagTrailer, payload: data, crc: &zero},
			sec{typ: SecTrailer, flags: FlagCritical, payload: trailer(uint64(len(data))+1, crc)}), ErrCorrupt},
		{"trailer CRC wrong", build(sec{typ: SecData, flags: FlagCritical | FlagTrailer, payload: data, crc: &zero},
			sec{typ: SecTrailer, flags: FlagCritical, payload: trailer(uint64(len(data)), crc^1)}), ErrChecksum},
		{"trailer not critical", build(sec{typ: SecData, flags: FlagCritical | FlagTrailer, payload: data, crc: &zero},
			sec{typ: SecTrailer, payload: trailer(uint64(len(data)), crc)}), ErrCorrupt},
		{"trailer of 12 bytes", build(sec{typ: SecData, flags: FlagCritical | FlagTrailer, payload: data, crc: &zero},
			sec{typ: SecTrailer, flags: FlagCritical, payload: trailer(uint64(len(data)), crc)[:12]}), ErrCorrupt},
		{"zstd flag on raw data", build(sec{typ: SecData, flags: FlagCritical | FlagZstd, payload: data}), ErrCorrupt},
		{"undefined data flag", build(sec{typ: SecData, flags: FlagCritical | 1<<3, payload: data}), ErrCorrupt},
		{"zstd flag on the pad", assemble(Version, []sec{jsonSec(SecHeader, s.h), jsonSec(SecProcess, s.procs[0]),
			{typ: SecPad, flags: FlagZstd, autoPad: true}, {typ: SecData, flags: FlagCritical, payload: data},
			{typ: SecEnd, flags: FlagCritical, autoEnd: true}}), ErrCorrupt},
	} {
		err := readFully(c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: stream read: %v, want %v", c.name, err, c.want)
		}
		fimg, err := decodeBytes(c.b)
		if err == nil {
			err = fimg.VerifyData()
		}
		if !isOneOf(err, allErrs...) {
			t.Errorf("%s: file read: %v", c.name, err)
		}
	}
}

// A chunk that decompresses to other than its declared length, or claims
// more than MaxChunk, is refused even with a matching CRC.
func TestStreamChunkRules(t *testing.T) {
	s := makeSample(1, true)
	raw := bytes.Repeat([]byte("chunk"), len(s.data)/5+1)[:len(s.data)]
	h := *s.h
	h.DataBytes = int64(len(raw))
	b := writeWith(t, writeMode{"file-zstd", false, true}, &h, nil, s.procs, raw, 1000)
	img, err := decodeBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	off := int(img.DataFileOffset())
	for _, c := range []struct {
		name string
		raw  uint32
	}{{"one byte more", uint32(len(raw)) + 1}, {"one byte less", uint32(len(raw)) - 1}, {"beyond MaxChunk", MaxChunk + 1}, {"zero", 0}} {
		bad := bytes.Clone(b)
		binary.LittleEndian.PutUint32(bad[off+4:], c.raw)
		// Fix the data CRC so that only the chunk rule can refuse it.
		stored := bad[off : off+int(img.StoredBytes())]
		binary.LittleEndian.PutUint32(bad[off-8:], Checksum(0, stored))
		fimg, err := decodeBytes(bad)
		if err == nil {
			err = fimg.VerifyData()
		}
		if !isOneOf(err, allErrs...) {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
