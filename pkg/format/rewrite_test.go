package format

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func rewriteFixture(t *testing.T) (string, []byte, *os.File) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "img.chp")
	data := bytes.Repeat([]byte("chpox image bytes "), 1<<20) // 18 MiB: three chunks
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return path, data, src
}

func temps(path string) []string {
	names, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".img.chp.tmp-*"))
	return names
}

// TestRewrite: the same bytes in another file under the same name, mode
// 0600, nothing left beside it.
func TestRewrite(t *testing.T) {
	path, data, src := rewriteFixture(t)
	before, _ := src.Stat()
	f, err := Rewrite(src, func() bool { return false })
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	after, _ := os.Stat(path)
	if os.SameFile(before, after) {
		t.Error("the name still holds the old file")
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
		t.Errorf("rewritten image differs: %d bytes, want %d", len(got), len(data))
	}
	if fst, _ := f.Stat(); !os.SameFile(fst, after) {
		t.Error("the returned file is not the one in place")
	}
	if after.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", after.Mode().Perm())
	}
	if left := temps(path); len(left) > 0 {
		t.Errorf("left %v", left)
	}
}

// TestRewriteStopped: stopped half way, or finding the name taken by
// another file, it leaves the image as it is and no temporary file.
func TestRewriteStopped(t *testing.T) {
	path, _, src := rewriteFixture(t)
	before, _ := src.Stat()
	chunks := 0
	_, err := Rewrite(src, func() bool { chunks++; return chunks > 1 })
	if !errors.Is(err, ErrCancelled) {
		t.Fatalf("stopped rewrite: %v, want ErrCancelled", err)
	}
	if now, _ := os.Stat(path); !os.SameFile(before, now) {
		t.Error("a stopped rewrite replaced the image")
	}
	if left := temps(path); len(left) > 0 {
		t.Errorf("left %v", left)
	}

	os.Remove(path)
	if err := os.WriteFile(path, []byte("a newer image"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Rewrite(src, func() bool { return false }); err == nil {
		t.Fatal("rewrote over another file")
	}
	if got, _ := os.ReadFile(path); string(got) != "a newer image" {
		t.Errorf("the newer image became %q", got)
	}
	if left := temps(path); len(left) > 0 {
		t.Errorf("left %v", left)
	}
}
