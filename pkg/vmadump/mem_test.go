package vmadump

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/chpox/chpox/internal/testutil"
	"github.com/chpox/chpox/pkg/format"
)

// pat is the pattern of testdata/mem.c: byte off of an area, tagged.
func pat(off uint64, tag uint64) byte {
	return byte(off*7 + (off>>12)*13 + tag*101)
}

type memChild struct {
	pid                     int
	big, none, shared, file uint64
	filePath                string
}

const (
	pg     = 4096
	bigLen = 256 << 20
)

// startMem runs testdata/mem.c, waits for its addresses and returns them.
func startMem(t *testing.T) *memChild {
	t.Helper()
	bin := testutil.BuildC(t, "mem")
	filePath := filepath.Join(t.TempDir(), "mapped")
	content := make([]byte, 4*pg)
	for i := range content {
		content[i] = byte(i * 3)
	}
	if err := os.WriteFile(filePath, content, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, filePath)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, cmd)
	c := &memChild{pid: cmd.Process.Pid, filePath: filePath}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("mem: %v; stderr: %s", err, stderr.String())
	}
	if _, err := fmt.Sscanf(line, "%x %x %x %x", &c.big, &c.none, &c.shared, &c.file); err != nil {
		t.Fatalf("mem printed %q: %v", line, err)
	}
	return c
}

// areaAt returns the area that starts at addr.
func areaAt(t *testing.T, areas []*Area, addr uint64) *Area {
	t.Helper()
	for _, a := range areas {
		if a.Start == addr {
			return a
		}
	}
	t.Fatalf("no area starts at %#x", addr)
	return nil
}

type run struct{ Addr, Len uint64 }

func runsOf(a *Area) []run {
	var out []run
	for _, r := range a.Pages {
		out = append(out, run{r.Addr, r.Len})
	}
	return out
}

// TestPlanAndCopy maps the shapes of testdata/mem.c and checks that Plan
// picks exactly the pages that hold data, and that Copy returns them.
func TestPlanAndCopy(t *testing.T) {
	c := startMem(t)
	areas, err := Areas(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	const base = 4096 // Plan's starting offset: not 0, to see it is honoured
	end, err := Plan(c.pid, areas, base)
	if err != nil {
		t.Fatal(err)
	}

	big := areaAt(t, areas, c.big)
	none := areaAt(t, areas, c.none)
	shared := areaAt(t, areas, c.shared)
	file := areaAt(t, areas, c.file)

	checks := []struct {
		name   string
		a      *Area
		len    uint64
		kind   string
		prot   int
		shared bool
		want   []run
		tag    uint64
	}{
		{"256 MiB anonymous", big, bigLen, format.VMAAnon, format.ProtRead | format.ProtWrite, false,
			[]run{{c.big, 3 * pg}, {c.big + 1000*pg, pg}, {c.big + 65535*pg, pg}}, 1},
		{"PROT_NONE", none, 4 * pg, format.VMAAnon, 0, false,
			[]run{{c.none, 3 * pg}}, 2},
		// Shared memory is saved per object (OpenShm), not per mapping.
		{"shared anonymous", shared, 1 << 20, format.VMASharedAnon, format.ProtRead | format.ProtWrite, true,
			nil, 3},
		{"private file, one page written", file, 4 * pg, format.VMAFile, format.ProtRead | format.ProtWrite, false,
			[]run{{c.file + 2*pg, pg}}, 4},
	}
	for _, ck := range checks {
		a := ck.a
		if a.End-a.Start != ck.len || a.Kind != ck.kind || a.Prot != ck.prot || a.Shared != ck.shared {
			t.Errorf("%s: area %#x-%#x kind %q prot %d shared %v; want %#x bytes, %q, prot %d, shared %v",
				ck.name, a.Start, a.End, a.Kind, a.Prot, a.Shared, ck.len, ck.kind, ck.prot, ck.shared)
		}
		if d := cmp.Diff(ck.want, runsOf(a)); d != "" {
			t.Errorf("%s: planned runs (-want +got):\n%s", ck.name, d)
		}
	}
	if file.File == nil || file.File.Path != c.filePath || file.File.Size != 4*pg {
		t.Errorf("private file area: File = %+v, want path %s size %d", file.File, c.filePath, 4*pg)
	} else if file.AnonKB != 4 {
		t.Errorf("private file area: AnonKB = %d, want 4 (one written page)", file.AnonKB)
	}
	if big.RssKB != 5*4 || big.AnonKB != 5*4 {
		t.Errorf("256 MiB area: RssKB %d AnonKB %d, want 20 and 20", big.RssKB, big.AnonKB)
	}

	// The data section offsets are consecutive from base, in area order.
	off := uint64(base)
	for _, a := range areas {
		for _, r := range a.Pages {
			if r.Off != off {
				t.Fatalf("area %#x: run %#x has offset %d, want %d", a.Start, r.Addr, r.Off, off)
			}
			if r.Addr < a.Start || r.Addr+r.Len > a.End || r.Len == 0 || r.Addr%pg != 0 || r.Len%pg != 0 {
				t.Errorf("area %#x-%#x: bad run %+v", a.Start, a.End, r)
			}
			off += r.Len
		}
		switch a.Kind {
		case format.VMAVDSO:
			if len(a.Pages) != 0 {
				t.Errorf("%s has planned pages", a.Name)
			}
		}
		if a.Name == "[vsyscall]" {
			t.Error("[vsyscall] is listed")
		}
		if a.Name == "[stack]" && !a.GrowsDown {
			t.Error("[stack] does not grow down")
		}
	}
	if end != off {
		t.Errorf("Plan returned %d, runs end at %d", end, off)
	}

	var buf bytes.Buffer
	if err := Copy(c.pid, areas, &buf); err != nil {
		t.Fatal(err)
	}
	if uint64(buf.Len()) != end-base {
		t.Fatalf("Copy wrote %d bytes, the plan has %d", buf.Len(), end-base)
	}
	data := buf.Bytes()
	for _, ck := range checks {
		for _, r := range ck.a.Pages {
			got := data[r.Off-base : r.Off-base+r.Len]
			want := make([]byte, r.Len)
			for i := range want {
				want[i] = pat(r.Addr-ck.a.Start+uint64(i), ck.tag)
			}
			if i := firstDiff(got, want); i >= 0 {
				t.Errorf("%s: copied byte at %#x is %#x, want %#x", ck.name, r.Addr+uint64(i), got[i], want[i])
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// TestShmSeekData: the data of MAP_SHARED|MAP_ANONYMOUS memory is found
// with SEEK_DATA on the shmem object even though MADV_DONTNEED emptied the
// page tables (pagemap shows nothing), and Shm.Copy returns it.
func TestShmSeekData(t *testing.T) {
	c := startMem(t)
	areas, err := Areas(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	a := areaAt(t, areas, c.shared)
	if a.Kind != format.VMASharedAnon || a.Inode == 0 {
		t.Fatalf("shared area: kind %q inode %d", a.Kind, a.Inode)
	}
	// Nothing is mapped any more: pagemap would find no page.
	pm, err := os.Open(fmt.Sprintf("/proc/%d/pagemap", c.pid))
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	present, err := pagemapRuns(pm, a, func(e uint64) bool { return e&(pmPresent|pmSwapped) != 0 })
	if err != nil {
		t.Fatal(err)
	}
	if len(present) != 0 {
		t.Fatalf("after MADV_DONTNEED pagemap still shows %v: the test would not show SEEK_DATA at work", present)
	}

	s, err := OpenShm(c.pid, a)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Size != 1<<20 || s.Inode != a.Inode {
		t.Errorf("Shm size %d inode %d, want %d and %d", s.Size, s.Inode, 1<<20, a.Inode)
	}
	var got []run
	for _, r := range s.Pages {
		got = append(got, run{r.Addr, r.Len})
	}
	want := []run{{3 * pg, 2 * pg}, {200 * pg, pg}} // offsets in the object
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("shared memory data runs (-want +got):\n%s", d)
	}
	const base = 8192
	if end := s.Plan(base); end != base+3*pg {
		t.Errorf("Shm.Plan returned %d, want %d", end, base+3*pg)
	}
	if s.Pages[0].Off != base || s.Pages[1].Off != base+2*pg {
		t.Errorf("Shm.Plan offsets %+v", s.Pages)
	}
	var buf bytes.Buffer
	if err := s.Copy(&buf); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 3*pg {
		t.Fatalf("Shm.Copy wrote %d bytes, want %d", buf.Len(), 3*pg)
	}
	data := buf.Bytes()
	for _, r := range s.Pages {
		for i := uint64(0); i < r.Len; i++ {
			if g, w := data[r.Off-base+i], pat(r.Addr+i, 3); g != w {
				t.Fatalf("shared byte at object offset %#x = %#x, want %#x", r.Addr+i, g, w)
			}
		}
	}
}

// TestCopyManyRuns makes Copy cross its buffer and iovec limits: every
// other page of the 256 MiB area is planned (more than 1024 runs, more than
// 8 MiB), and only the pages written hold the pattern; the others are zero.
func TestCopyManyRuns(t *testing.T) {
	c := startMem(t)
	areas, err := Areas(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	big := areaAt(t, areas, c.big)
	none := areaAt(t, areas, c.none)
	// A synthetic plan: 3000 one-page runs (2 pages apart) over the big
	// area, then the PROT_NONE area in between readable runs, then the big
	// area again, so readable and unreadable segments share a buffer.
	var runs []format.DataRun
	var off uint64
	for i := uint64(0); i < 6000; i += 2 {
		runs = append(runs, format.DataRun{Addr: c.big + i*pg, Off: off, Len: pg})
		off += pg
	}
	big.Pages = runs
	none.Pages = []format.DataRun{{Addr: c.none, Off: off, Len: 4 * pg}}
	off += 4 * pg
	tail := *big
	tail.Pages = []format.DataRun{{Addr: c.big + 65535*pg, Off: off, Len: pg}}
	off += pg
	var buf bytes.Buffer
	if err := Copy(c.pid, []*Area{big, none, &tail}, &buf); err != nil {
		t.Fatal(err)
	}
	if uint64(buf.Len()) != off {
		t.Fatalf("Copy wrote %d bytes, want %d", buf.Len(), off)
	}
	data := buf.Bytes()
	written := map[uint64]bool{0: true, 1: true, 2: true, 1000: true, 65535: true}
	check := func(what string, areaStart, addr, off uint64, tag uint64, hasData bool) {
		for i := uint64(0); i < pg; i++ {
			want := byte(0)
			if hasData {
				want = pat(addr-areaStart+i, tag)
			}
			if got := data[off+i]; got != want {
				t.Errorf("%s: byte at %#x = %#x, want %#x", what, addr+i, got, want)
				return
			}
		}
	}
	for _, r := range big.Pages {
		page := (r.Addr - c.big) / pg
		check("big", c.big, r.Addr, r.Off, 1, written[page])
	}
	for p := uint64(0); p < 4; p++ {
		check("PROT_NONE", c.none, c.none+p*pg, none.Pages[0].Off+p*pg, 2, p < 3)
	}
	check("big tail", c.big, c.big+65535*pg, tail.Pages[0].Off, 1, true)
}

// TestAreasNoProcess: a PID that is gone is an error, not an empty list.
func TestAreasNoProcess(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if a, err := Areas(cmd.Process.Pid); err == nil {
		t.Errorf("Areas of a reaped process = %d areas, no error", len(a))
	}
}
