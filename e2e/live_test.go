package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var liveOK = regexp.MustCompile(`(?m)^live ok (\d+) (\d+)$`)

// liveCheck asks livewriter to check every page and returns the longest
// gap between two of its loop iterations since the last reset. seen holds
// the generations of the checks logged so far: a restored process writes
// its log from the offset of the checkpoint, over later lines.
func liveCheck(t *testing.T, p *proc, seen map[string]bool) time.Duration {
	t.Helper()
	p.signal(t, unix.SIGUSR1)
	deadline := time.Now().Add(60 * time.Second)
	for {
		data, _ := os.ReadFile(p.log)
		if bad := failRE.Find(data); bad != nil {
			t.Fatalf("%s (pid %d) reported %q", p.name, p.pid, bad)
		}
		for _, m := range liveOK.FindAllStringSubmatch(string(data), -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				us, _ := strconv.Atoi(m[2])
				return time.Duration(us) * time.Microsecond
			}
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("%s (pid %d): no new check result (%s); log:\n%s", p.name, p.pid, procState(p.pid), tailOf(data))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// liveReset makes livewriter forget its longest gap (the n-th reset).
func liveReset(t *testing.T, p *proc, n int) {
	t.Helper()
	p.signal(t, unix.SIGUSR2)
	p.waitLog(t, `(?m)^reset$`, n, 30*time.Second)
}

// untouched checks that a live dump left nothing behind in p: no tracer,
// no userfaultfd in its descriptor table, no area still registered for
// write-protect (VmFlags "uw").
func untouched(t *testing.T, p *proc) {
	t.Helper()
	if st := procState(p.pid); !strings.Contains(st, "TracerPid:\t0") && !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("the process is still traced: %s", st)
	}
	dir := fmt.Sprintf("/proc/%d/fd", p.pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if link, _ := os.Readlink(filepath.Join(dir, e.Name())); strings.Contains(link, "userfaultfd") {
			t.Errorf("fd %s is left in the process: %s", e.Name(), link)
		}
	}
	smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", p.pid))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`(?m)^VmFlags:.*\buw\b.*$`).Find(smaps); m != nil {
		t.Errorf("an area is still registered for write-protect: %s", m)
	}
}

// TestDumpLive: a process writing random pages of 256 MiB (one per loop
// iteration through the kernel, read(2), the rest by the CPU; every 5th
// iteration a page dropped with MADV_DONTNEED, and every other time read
// again: new content without a write; and a private file mapping whose
// pages are written or dropped, reading as the file again) is dumped
// with --live while it runs. It goes on unharmed (every page consistent,
// nothing left behind), and the image, restored, holds a consistent state:
// every page exactly the generation its index records.
func TestDumpLive(t *testing.T) {
	setup(t, "livewriter")
	p := start(t, "livewriter", "256", "64", "1000", "5", filepath.Join(t.TempDir(), "private"))
	p.waitLog(t, `(?m)^ready$`, 1, 60*time.Second)
	liveReset(t, p, 1)
	img := filepath.Join(t.TempDir(), "live.img")
	r := mustChpox(t, "dump", strconv.Itoa(p.pid), "-o", img, "--live")
	if !strings.Contains(r.stdout+r.stderr, "live copy:") {
		t.Fatalf("dump --live did not copy live: %q %q", r.stdout, r.stderr)
	}
	seen := map[string]bool{}
	gap := liveCheck(t, p, seen)
	t.Logf("longest loop gap during dump --live of 256 MiB: %v", gap)
	if gap > time.Second {
		t.Errorf("the process was stalled %v by dump --live", gap)
	}
	untouched(t, p)
	killOriginal(t, p)
	q := restoreDetached(t, img, p)
	liveCheck(t, q, seen)
}

// TestDumpLiveKill: dump --live --kill, restore, every page consistent.
func TestDumpLiveKill(t *testing.T) {
	setup(t, "livewriter")
	p := start(t, "livewriter", "256", "64", "1000", "5", filepath.Join(t.TempDir(), "private"))
	p.waitLog(t, `(?m)^ready$`, 1, 60*time.Second)
	time.Sleep(200 * time.Millisecond)
	img := dump(t, p, "--live", "--kill")
	if st := p.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --live --kill the original ended with %q", st)
	}
	waitPIDFree(t, p.pid, 10*time.Second)
	q := restoreDetached(t, img, p)
	seen := map[string]bool{}
	liveCheck(t, q, seen)
	liveCheck(t, q, seen) // and it goes on writing
}

// TestDumpLiveChpoxKilled: chpox SIGKILLed at various instants of a live
// dump leaves the process running unharmed: not traced, no userfaultfd
// left, no write-protection in force, every page consistent.
func TestDumpLiveChpoxKilled(t *testing.T) {
	setup(t, "livewriter")
	p := start(t, "livewriter", "256", "64", "1000")
	p.waitLog(t, `(?m)^ready$`, 1, 60*time.Second)
	dir := t.TempDir()
	seen := map[string]bool{}
	for _, delay := range []time.Duration{2, 20, 60, 150, 300, 600, 1000, 1500} {
		delay *= time.Millisecond
		b := startChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(dir, "killed.img"), "--live")
		time.Sleep(delay)
		b.cmd.Process.Kill()
		<-b.done
		t.Logf("chpox killed after %v: %s", delay, b.status)
		// The kernel closes chpox's userfaultfd as it exits; a thread
		// it left in the trampoline finds its own way out.
		time.Sleep(50 * time.Millisecond)
		untouched(t, p)
		liveCheck(t, p, seen)
	}
}

// TestDumpLiveFallback: a process whose descriptor table is full cannot
// open the userfaultfd a live copy needs: chpox says so and copies its
// memory frozen, and the image restores.
func TestDumpLiveFallback(t *testing.T) {
	setup(t)
	py := `import os, resource, time
resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
try:
    while True: os.open("/dev/null", os.O_RDONLY)
except OSError: pass
print("full", flush=True)
n = 0
while True:
    n += 1
    print("tick", n, flush=True)
    time.sleep(0.05)`
	p := startExe(t, "fdfull", "/usr/bin/python3", "-c", py)
	p.waitLog(t, `(?m)^full$`, 1, 30*time.Second)
	img := filepath.Join(t.TempDir(), "fallback.img")
	r := mustChpox(t, "dump", strconv.Itoa(p.pid), "-o", img, "--live", "--kill")
	if !strings.Contains(r.stderr, "--live not used") || !strings.Contains(r.stderr, "userfaultfd") {
		t.Errorf("dump --live of a process with a full fd table: want the fallback named, got %q", r.stderr)
	}
	p.waitExit(t, 10*time.Second)
	waitPIDFree(t, p.pid, 10*time.Second)
	n := lastInt(p.log, `(?m)^tick (\d+)$`)
	q := restoreDetached(t, img, p)
	q.waitInt(t, `(?m)^tick (\d+)$`, n+3, 30*time.Second)
}

// TestDumpLiveSparse: a live dump of testdata/memory.c (a 1 GiB area with
// a few pages touched, file mappings, shared memory, guard pages ...)
// copies only what exists (the kernel counts an unpopulated page of a
// tracked area as written) and restores with every check passing.
func TestDumpLiveSparse(t *testing.T) {
	setup(t, "memory")
	p := start(t, "memory", t.TempDir())
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	p.signal(t, unix.SIGUSR1)
	p.waitLog(t, `(?m)^malloc ok$`, 1, 10*time.Second)
	img := dump(t, p, "--live", "--kill")
	if st := p.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --live --kill the original ended with %q", st)
	}
	waitPIDFree(t, p.pid, 10*time.Second)
	if fi, err := os.Stat(img); err != nil || fi.Size() > 256<<20 {
		t.Fatalf("image: %v, %d MiB: untouched pages of the sparse area were dumped", err, fi.Size()>>20)
	}
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^verify ok$`, 2, 20*time.Second)
	r.waitLog(t, `(?m)^malloc ok$`, 2, 20*time.Second)
}

// TestDumpHealsLeftoverUffd: a userfaultfd made with the flags of the one
// a live dump injects and never set up is what a chpox killed mid-dump
// leaves; the next dump closes it in the process and goes on (live), and
// the process never notices. One the program set up (UFFDIO_API) is its
// own: the live copy is refused for it, and the frozen copy for the fd.
func TestDumpHealsLeftoverUffd(t *testing.T) {
	setup(t)
	py := `import ctypes, fcntl, os, struct, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.syscall(323, os.O_CLOEXEC | os.O_NONBLOCK | 1)
if sys.argv[1] == "setup":
    api = bytearray(struct.pack("QQQ", 0xAA, 0, 0))
    buf = (ctypes.c_char * 24).from_buffer(api)
    if libc.ioctl(fd, 0xc018aa3f, buf) != 0: raise OSError(ctypes.get_errno(), "UFFDIO_API")
print("uffd", fd, flush=True)
n = 0
while True:
    n += 1
    print("tick", n, flush=True)
    time.sleep(0.02)`
	p := startExe(t, "leftover", "/usr/bin/python3", "-c", py, "leftover")
	m := p.waitLog(t, `(?m)^uffd (\d+)$`, 1, 30*time.Second)
	fd := m[1]
	r := mustChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "healed.img"))
	if strings.Contains(r.stderr, "--live not used") {
		t.Errorf("the leftover userfaultfd made the dump copy frozen: %q", r.stderr)
	}
	if _, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.pid, fd)); err == nil {
		t.Errorf("fd %s, the leftover userfaultfd, is still open in the process", fd)
	}
	p.waitInt(t, `(?m)^tick (\d+)$`, lastInt(p.log, `(?m)^tick (\d+)$`)+3, 10*time.Second)

	q := startExe(t, "ownuffd", "/usr/bin/python3", "-c", py, "setup")
	q.waitLog(t, `(?m)^uffd (\d+)$`, 1, 30*time.Second)
	bad := runChpox(t, "dump", strconv.Itoa(q.pid), "-o", filepath.Join(t.TempDir(), "own.img"))
	if bad.code == 0 || !strings.Contains(bad.stderr, "userfaultfd") {
		t.Errorf("dump of a process with its own userfaultfd: exit %d, %q; want it refused, naming the userfaultfd", bad.code, bad.stderr)
	}
	q.waitInt(t, `(?m)^tick (\d+)$`, lastInt(q.log, `(?m)^tick (\d+)$`)+3, 10*time.Second)
}

var (
	forkedAt = regexp.MustCompile(`(?m)^forked at (\d+)\.(\d{6})$`)
	// Other lines may come between (a child that exited in the freeze).
	roundOneAt = regexp.MustCompile(`(?ms)^time=(\S+) level=DEBUG msg="live copy started".*?^time=(\S+) level=DEBUG msg="live round" round=1 `)
)

// TestRunForkDuringCopy: while chpox run copies a job's memory (its first
// round reads all 512 MiB, a second or more), the job's forks go on: each
// stops at the fork until the tracer serves the event, and it must not
// wait for the round to end. Before the copy ran in the background while
// the tracer served the job every few ms, a fork at 2 GiB waited 16 s.
func TestRunForkDuringCopy(t *testing.T) {
	setup(t, "forker")
	img := filepath.Join(t.TempDir(), "fork.chp")
	j := startRun(t, "-v", "--signal", "31", "-o", img, "--", progs["forker"], "512")
	p := &proc{name: "forker", pid: j.root, log: j.stdout, done: j.done}
	p.waitLog(t, `(?m)^ready$`, 1, 60*time.Second)
	p.signal(t, 31)
	// The image may hold a child between its fork and its exit: the
	// count of processes varies.
	j.waitFile(t, j.stderr, `(?m)^chpox: checkpoint 1 at .* -> `, 1, 60*time.Second)
	data, _ := os.ReadFile(j.stderr)
	m := roundOneAt.FindSubmatch(data)
	if m == nil {
		t.Fatalf("no live copy started and round 1 in the log:\n%s", data)
	}
	start, err1 := time.Parse(time.RFC3339Nano, string(m[1]))
	end, err2 := time.Parse(time.RFC3339Nano, string(m[2]))
	if err1 != nil || err2 != nil {
		t.Fatalf("log times: %v %v", err1, err2)
	}
	// A fork may complete just after the freeze that starts the copy;
	// the log's times have milliseconds.
	from, to := start.Add(50*time.Millisecond), end.Add(-10*time.Millisecond)
	if !to.After(from.Add(100 * time.Millisecond)) {
		t.Fatalf("round 1 took %v: too short to tell", end.Sub(start))
	}
	out, _ := os.ReadFile(j.stdout)
	forks := 0
	for _, f := range forkedAt.FindAllSubmatch(out, -1) {
		sec, _ := strconv.ParseInt(string(f[1]), 10, 64)
		usec, _ := strconv.ParseInt(string(f[2]), 10, 64)
		if at := time.Unix(sec, usec*1000); at.After(from) && at.Before(to) {
			forks++
		}
	}
	t.Logf("round 1 took %v; %d forks reported done within it", end.Sub(start), forks)
	if forks < 2 {
		t.Errorf("no fork of the job completed during round 1 of the copy (%v): its forks waited for the round", end.Sub(start))
	}
}
