package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDumpOutputChecks: an -o that cannot work is refused before anything
// is frozen, with advice, and the process runs on untouched.
func TestDumpOutputChecks(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitLog(t, `count \d+`, 3, 10*time.Second)
	dir := t.TempDir()
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=1m"); err != nil {
		t.Fatalf("mount a read-only tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(ro, unix.MNT_DETACH) })
	full := filepath.Join(dir, "full")
	if err := os.Mkdir(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", full, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(full, unix.MNT_DETACH) })
	pid := strconv.Itoa(p.pid)
	for _, c := range []struct {
		out   string
		words []string
	}{
		{dir, []string{"is a directory", "name the image file"}},
		{filepath.Join(dir, "missing", "x.chp"), []string{"does not exist", "mkdir -p"}},
		{filepath.Join(ro, "x.chp"), []string{"read-only file system", "choose another -o"}},
		{filepath.Join(full, "x.chp"), []string{"KiB free", "free some space"}},
	} {
		r := runChpox(t, "dump", pid, "-o", c.out)
		wantFailure(t, r, 1, append(c.words, "nothing was frozen")...)
		if got := statusLines(t, p.pid)["TracerPid"]; got != "0" {
			t.Errorf("TracerPid %s after a refused dump", got)
		}
	}
	n := lastInt(p.log, `count (\d+)`)
	p.waitInt(t, `count (\d+)`, n+3, 5*time.Second)
}
