package vmadump

import (
	"bufio"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func parseFixture(t *testing.T, name string) map[uint64]smapsEntry {
	t.Helper()
	f, err := os.Open("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := parseSmaps(bufio.NewScanner(f))
	if err != nil {
		t.Fatalf("parseSmaps(%s): %v", name, err)
	}
	return got
}

// TestParseSmapsReal parses an excerpt of a real /proc/PID/smaps (coreutils
// sleep on kernel 6.18: its writable areas, heap, stack, vvar, vdso,
// vsyscall).
func TestParseSmapsReal(t *testing.T) {
	got := parseFixture(t, "smaps.txt")
	want := map[uint64]smapsEntry{
		0x5570ca64b000:     {rss: 4, anon: 4},   // /usr/bin/sleep rw-p
		0x557104d6e000:     {rss: 16, anon: 16}, // [heap]
		0x7fdefb56d000:     {rss: 8, anon: 8},
		0x7fdefb743000:     {rss: 8, anon: 8}, // libc rw-p
		0x7fdefb745000:     {rss: 20, anon: 20},
		0x7fdefb75b000:     {rss: 4, anon: 4},
		0x7fdefb75d000:     {},                                   // [vvar]
		0x7fdefb763000:     {rss: 4},                             // [vdso]: resident, not anonymous
		0x7fdefb798000:     {rss: 8, anon: 8},                    // ld.so rw-p
		0x7ffcc3560000:     {rss: 12, anon: 12, growsDown: true}, // [stack]
		0xffffffffff600000: {},                                   // [vsyscall]
	}
	if d := cmp.Diff(want, got, cmp.AllowUnexported(smapsEntry{}), cmpopts.IgnoreFields(smapsEntry{}, "flags", "mayWrite")); d != "" {
		t.Errorf("parseSmaps (-want +got):\n%s", d)
	}
}

// TestParseSmapsEdited is a real smaps excerpt edited by hand: a path with
// ": ", '-' and " (deleted)" in the header, swapped pages, a ProtectionKey
// line, a PROT_NONE area with no VmFlags of interest.
func TestParseSmapsEdited(t *testing.T) {
	got := parseFixture(t, "smaps-edited.txt")
	want := map[uint64]smapsEntry{
		0x55d0c0de0000: {rss: 4, anon: 4},
		0x7f3a10000000: {rss: 120, swap: 36, anon: 120},
		0x7f3a10400000: {},
		0x7ffe00100000: {rss: 16, swap: 4, anon: 16, growsDown: true},
	}
	if d := cmp.Diff(want, got, cmp.AllowUnexported(smapsEntry{}), cmpopts.IgnoreFields(smapsEntry{}, "flags", "mayWrite")); d != "" {
		t.Errorf("parseSmaps (-want +got):\n%s", d)
	}
}

func TestParseSmapsEmptyAndBad(t *testing.T) {
	got, err := parseSmaps(bufio.NewScanner(strings.NewReader("")))
	if err != nil || len(got) != 0 {
		t.Errorf("empty smaps: %v, %v; want no areas, no error", got, err)
	}
	_, err = parseSmaps(bufio.NewScanner(strings.NewReader("zzzz-10000 rw-p 00000000 00:00 0\nRss: 4 kB\n")))
	if err == nil {
		t.Error("a header with a bad start address parsed without error")
	}
}

// TestParseSmapsSelf parses our own smaps and checks it against our own
// maps: every area is found, and the stack grows down.
func TestParseSmapsSelf(t *testing.T) {
	got, err := readSmaps(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(got) < len(lines)-5 { // areas may come and go between the reads
		t.Errorf("smaps has %d areas, maps %d", len(got), len(lines))
	}
	stack := false
	for _, l := range lines {
		if strings.HasSuffix(l, "[stack]") {
			var start uint64
			startHex, _, _ := strings.Cut(l, "-")
			for _, c := range startHex {
				start = start<<4 | uint64(strings.IndexRune("0123456789abcdef", c))
			}
			e, ok := got[start]
			stack = ok && e.growsDown && e.rss > 0 && e.anon > 0
		}
	}
	if !stack {
		t.Error("our [stack] is not in smaps as a resident, anonymous, grows-down area")
	}
}
