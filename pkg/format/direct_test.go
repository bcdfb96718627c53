package format

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// With Direct, long page-aligned writes of page-aligned memory go past
// the page cache and the rest through it; the image must read back byte
// for byte whatever went which way, and pass its data check.
func TestDirect(t *testing.T) {
	s := makeSample(1, true)
	head := (len(s.data) + dataAlign - 1) / dataAlign * dataAlign
	big, err := unix.Mmap(-1, 0, 3<<20, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(big)
	for i := range big {
		big[i] = byte(i*7 + i>>12)
	}
	tail := []byte("the unaligned end of the data section")
	want := append(append(append(append([]byte{}, s.data...), make([]byte, head-len(s.data))...), big...), tail...)

	path := filepath.Join(t.TempDir(), "direct")
	w, err := CreateWith(path, WriteOptions{Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if w.direct == nil {
		t.Skip("this file system refuses O_DIRECT")
	}
	if err := w.WriteHeader(sampleHeader(1, len(want))); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteProcess(s.procs[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.BeginData(uint64(len(want))); err != nil {
		t.Fatal(err)
	}
	writes := [][]byte{want[:head], big[:2<<20], big[2<<20:], tail} // buffered, direct, direct, buffered
	for i, p := range writes {
		if i == 1 {
			if _, err := w.WriteSummed(p, Checksum(0, p)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if w.direct == nil {
		t.Fatal("the direct descriptor was dropped: a page-aligned write was refused")
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	img := openSample(t, path)
	defer img.Close()
	if err := img.VerifyData(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(img.Data())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the data section does not read back as written")
	}
}
