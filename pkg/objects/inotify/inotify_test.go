package inotify

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// TestRoundTrip: watches with gaps between their wds are described from a
// live instance and come back under the same numbers, with no event left
// from the scratch watches; an event then carries the restored wd.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, p := range []string{a, b} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	add := func(p string, mask uint32) int {
		wd, err := unix.InotifyAddWatch(fd, p, mask)
		if err != nil {
			t.Fatal(err)
		}
		return wd
	}
	for i := 0; i < 5; i++ { // wds 1..5 used and gone
		unix.InotifyRmWatch(fd, uint32(add(dir, unix.IN_CREATE)))
	}
	wa := add(a, unix.IN_MODIFY|unix.IN_ONESHOT)
	unix.InotifyRmWatch(fd, uint32(add(dir, unix.IN_CREATE)))
	wb := add(b, unix.IN_ATTRIB|unix.IN_EXCL_UNLINK)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(a, link); err != nil {
		t.Fatal(err)
	}
	wl := add(link, unix.IN_ATTRIB|unix.IN_DONT_FOLLOW) // the link itself
	drain(fd)
	info, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Describe(os.Getpid(), fd, string(info))
	if err != nil {
		t.Fatal(err)
	}
	want := []format.InotifyWatch{{WD: wa, Path: a, Mask: unix.IN_MODIFY | unix.IN_ONESHOT}, {WD: wb, Path: b, Mask: unix.IN_ATTRIB | unix.IN_EXCL_UNLINK},
		{WD: wl, Path: link, Mask: unix.IN_ATTRIB}}
	if len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("Describe = %+v, want %+v", got, want)
	}
	began := time.Now()
	f, err := Create(unix.O_NONBLOCK, got)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Logf("created with %d scratch watches in %v", wb-2, time.Since(began))
	buf := make([]byte, 4096)
	if n, err := unix.Read(int(f.Fd()), buf); err != unix.EAGAIN {
		t.Fatalf("the new instance has %d bytes of events queued (%v)", n, err)
	}
	if err := os.Chmod(b, 0o600); err != nil {
		t.Fatal(err)
	}
	n, err := unix.Read(int(f.Fd()), buf)
	if err != nil || n < unix.SizeofInotifyEvent {
		t.Fatalf("no event after chmod: %d %v", n, err)
	}
	if wd := int32(uint32(buf[0]) | uint32(buf[1])<<8 | uint32(buf[2])<<16 | uint32(buf[3])<<24); int(wd) != wb {
		t.Errorf("event has wd %d, want %d", wd, wb)
	}
}

// TestGapCost measures the scratch watches for a large wd.
func TestGapCost(t *testing.T) {
	dir := t.TempDir()
	began := time.Now()
	f, err := Create(0, []format.InotifyWatch{{WD: 10000, Path: dir, Mask: unix.IN_CREATE}})
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Logf("wd 10000: %v", time.Since(began))
}
