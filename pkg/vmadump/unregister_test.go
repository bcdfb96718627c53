package vmadump

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/internal/testutil"
	"github.com/chpox/chpox/pkg/format"
)

// TestUnregister: Unregister ends the tracking of an area while chpox
// still holds the userfaultfd, a slice at a time (the area is split
// meanwhile, one area again at the end), so closing it has nothing left to
// do under the process's memory map lock.
func TestUnregister(t *testing.T) {
	testutil.NeedRoot(t)
	const size = 5*unregisterStep/2 + pageSize // slices that do not divide it
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	for i := 0; i < size; i += pageSize {
		mem[i] = 1
	}
	start := uint64(uintptr(unsafe.Pointer(&mem[0])))
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		t.Skipf("userfaultfd: %v", errno)
	}
	uffd := os.NewFile(fd, "userfaultfd")
	tr := &Tracker{PID: os.Getpid(), uffd: uffd}
	defer tr.Close()
	if err := uffdHandshake(uffd); err != nil {
		t.Skip(err)
	}
	if err := uffdRegisterWP(uffd, start, start+size); err != nil {
		t.Fatal(err)
	}
	if err := uffdProtect(uffd, start, start+size); err != nil {
		t.Fatal(err)
	}
	tr.regs = map[format.Span]bool{{Start: start, End: start + size}: true}
	if n, flags := vmFlags(t, start, start+size); n != 1 || !strings.Contains(flags, " uw") {
		t.Fatalf("registered: %d areas, flags %q; want one area, with uw", n, flags)
	}
	tr.Unregister()
	if n, flags := vmFlags(t, start, start+size); n != 1 || strings.Contains(flags, " uw") {
		t.Errorf("after Unregister, the userfaultfd still open: %d areas, flags %q; want one area, without uw", n, flags)
	}
	mem[0] = 2 // no longer protected: an ordinary write
}

// vmFlags counts this process's areas within [start, end) and returns the
// VmFlags of the first.
func vmFlags(t *testing.T, start, end uint64) (int, string) {
	t.Helper()
	data, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	n, flags, in := 0, "", false
	for _, l := range strings.Split(string(data), "\n") {
		var lo, hi uint64
		if _, err := fmt.Sscanf(l, "%x-%x ", &lo, &hi); err == nil && strings.Contains(l, "-") && !strings.HasPrefix(l, "VmFlags") {
			in = lo >= start && hi <= end
			if in {
				n++
			}
			continue
		}
		if v, ok := strings.CutPrefix(l, "VmFlags:"); ok && in && n == 1 && flags == "" {
			flags = v
		}
	}
	return n, flags
}
