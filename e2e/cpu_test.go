package e2e

import (
	"encoding/binary"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/chpox/chpox/pkg/cpu"
	"github.com/chpox/chpox/pkg/format"
)

// rewriteImage writes the image at path again with edit applied to its
// records (the data section is copied as it is): an image as another
// machine would have made it.
func rewriteImage(t *testing.T, path, out string, edit func(*format.Image)) {
	t.Helper()
	img, err := format.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	edit(img)
	w, err := format.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	steps := []func() error{
		func() error { return w.WriteHeader(&img.Header) },
		func() error { return w.WriteObjects(&img.Objects) },
		func() error {
			for _, p := range img.Processes {
				if err := w.WriteProcess(p); err != nil {
					return err
				}
			}
			return nil
		},
		func() error { return w.BeginData(uint64(img.Header.DataBytes)) },
		func() error { _, err := io.Copy(w, img.Data()); return err },
		w.Commit,
	}
	for _, s := range steps {
		if err := s(); err != nil {
			w.Abort()
			t.Fatal(err)
		}
	}
}

// TestRestoreOtherCPU: an image from a CPU with an instruction-set
// extension this one lacks, with XSAVE state it does not save, or from a
// kernel with another vDSO is refused before anything is created (exit 5,
// naming what is missing); the untouched image restores.
func TestRestoreOtherCPU(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	img := dumpKill(t, p)
	have, err := cpu.Flags()
	if err != nil {
		t.Fatal(err)
	}
	if top, err := format.Open(img); err != nil || strings.Join(top.Header.CPUFlags, " ") != strings.Join(have, " ") {
		t.Fatalf("the image records CPU flags %v, this CPU has %v (%v)", top.Header.CPUFlags, have, err)
	}
	lacks := ""
	for _, f := range []string{"amx_tile", "avx512_fp16", "avx512f", "avx2", "sha_ni"} {
		if !strings.Contains(" "+strings.Join(have, " ")+" ", " "+f+" ") {
			lacks = f
			break
		}
	}
	if lacks != "" {
		other := t.TempDir() + "/flags.chp"
		rewriteImage(t, img, other, func(i *format.Image) { i.Header.CPUFlags = append(i.Header.CPUFlags, lacks) })
		r := runChpox(t, "restore", "--detach", other)
		if r.code != 5 || !strings.Contains(r.stderr, lacks) {
			t.Errorf("restore of an image from a CPU with %s: exit %d, %q; want 5 naming it", lacks, r.code, r.stderr)
		}
	}
	xfeat, err := cpu.XFeatures()
	if err != nil {
		t.Fatal(err)
	}
	other := t.TempDir() + "/xsave.chp"
	rewriteImage(t, img, other, func(i *format.Image) {
		xs := i.Processes[0].Threads[0].XSave
		binary.LittleEndian.PutUint64(xs[464:], xfeat|1<<18) // AMX tile data
	})
	if r := runChpox(t, "restore", "--detach", other); r.code != 5 || !strings.Contains(r.stderr, "XSAVE features") {
		t.Errorf("restore of a thread saved with AMX state: exit %d, %q; want 5 naming the XSAVE features", r.code, r.stderr)
	}
	// Another kernel's vDSO: the program's pointers into it would be wrong.
	if top, err := format.Open(img); err != nil || len(top.Header.VDSO) != 64 {
		t.Fatalf("the image records vDSO %q (%v), want a SHA-256", top.Header.VDSO, err)
	}
	other = t.TempDir() + "/vdso.chp"
	rewriteImage(t, img, other, func(i *format.Image) { i.Header.VDSO, i.Header.Kernel = strings.Repeat("0", 64), "6.1.0-other" })
	if r := runChpox(t, "restore", "--detach", other); r.code != 5 || !strings.Contains(r.stderr, "vDSO") || !strings.Contains(r.stderr, "6.1.0-other") {
		t.Errorf("restore of an image from another kernel's vDSO: exit %d, %q; want 5 naming it", r.code, r.stderr)
	}
	if pidExists(p.pid) {
		t.Fatal("a refused restore left a process behind")
	}
	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, 10, 10*time.Second)
}
