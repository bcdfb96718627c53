package format

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// An image whose data is partly copied from a previous image (CopyFrom)
// and partly written with caller-made sums (WriteSummed) must read back
// byte for byte and pass the data CRC check; a wrong sum must be caught.
func TestCopyFrom(t *testing.T) {
	s := makeSample(1, true)
	dir := t.TempDir()
	old := filepath.Join(dir, "old")
	s.write(t, old)
	first := openSample(t, old)
	defer first.Close()
	src, err := os.Open(old)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()

	for _, tc := range []struct {
		name  string
		wrong bool
	}{{"right sums", false}, {"wrong sum", true}} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "new-"+tc.name)
			w, err := Create(path)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			if err := w.WriteHeader(s.h); err != nil {
				t.Fatal(err)
			}
			for _, p := range s.procs {
				if err := w.WriteProcess(p); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.BeginData(uint64(len(s.data))); err != nil {
				t.Fatal(err)
			}
			if !w.Summed() {
				t.Fatal("a plain image file must take summed writes")
			}
			// Every other page from the old image, the rest summed.
			for off := 0; off < len(s.data); off += dataAlign {
				p := s.data[off:min(off+dataAlign, len(s.data))]
				sum := Checksum(0, p)
				if tc.wrong && off == dataAlign {
					sum ^= 1
				}
				if off/dataAlign%2 == 1 {
					err = w.CopyFrom(src, first.DataFileOffset()+int64(off), int64(len(p)), sum)
				} else {
					_, err = w.WriteSummed(p, sum)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			if w.Reused == 0 {
				t.Error("nothing was reused")
			}
			img, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			err = img.VerifyData()
			if tc.wrong {
				if err == nil {
					t.Fatal("a wrong sum was not caught by the data CRC")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(img.Data())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, s.data) {
				t.Error("data read back differs from what was written")
			}
		})
	}
}

func openSample(t *testing.T, path string) *Image {
	t.Helper()
	img, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
