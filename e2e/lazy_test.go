package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lazyRestore starts chpox restore --lazy --detach img (with env added),
// returns the restored process as soon as chpox prints its PID, and a
// function that waits for chpox to exit and returns its exit code and
// stderr.
func lazyRestore(t *testing.T, img string, want *proc, env ...string) (*proc, *exec.Cmd, func() (int, string)) {
	t.Helper()
	cmd := exec.Command(chpoxBin, "restore", "--lazy", "--detach", img)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	wait := func() (int, string) {
		select {
		case err := <-done:
			done <- err
			return exitCode(err), stderr.String()
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			t.Fatalf("chpox restore --lazy did not end within a minute")
		}
		return -1, ""
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		wait()
	})
	pid, perr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || perr != nil {
		code, serr := wait()
		t.Fatalf("restore --lazy --detach printed %q (exit %d), want the PID; stderr:\n%s", line, code, serr)
	}
	if pid != want.pid {
		t.Fatalf("restored as pid %d, want %d", pid, want.pid)
	}
	return adopt(t, want.name+"(restored)", pid, want.log), cmd, wait
}

// waitCopied waits for a lazy restore's chpox (wait from lazyRestore) to
// end with all memory in, and returns its stderr.
func waitCopied(t *testing.T, wait func() (int, string)) string {
	t.Helper()
	code, stderr := wait()
	if code != 0 || !strings.Contains(stderr, "all memory in") {
		t.Fatalf("restore --lazy: exit %d; stderr:\n%s", code, stderr)
	}
	return strings.TrimSpace(stderr)
}

var passRE = `(?m)^pass (\d+) ok`

// dumpKillAll is dumpKill for a tree: it waits until every PID of the
// image is free (lazymem's fork children that were checking memory then
// too, whose zombies only this test reaps), and returns the number of
// processes in the image.
func dumpKillAll(t *testing.T, p *proc) (string, int) {
	t.Helper()
	img := dumpKill(t, p)
	return img, waitImagePIDs(t, img)
}

// waitImagePIDs waits until every PID of img is free and returns how many
// processes it has.
func waitImagePIDs(t *testing.T, img string) int {
	t.Helper()
	out := mustChpox(t, "inspect", img)
	tree, _, _ := strings.Cut(out.stdout, "\n\n")
	pids := regexp.MustCompile(`(?m)^\s+(\d+) lazymem`).FindAllStringSubmatch(tree, -1)
	for _, m := range pids {
		pid, _ := strconv.Atoi(m[1])
		waitPIDFree(t, pid, 10*time.Second)
	}
	return len(pids)
}

// A lazily restored process runs while chpox fills its memory: three
// threads read random words of it and the main thread checks all of it
// (a 256 MiB area with holes every 8th MiB that must read zero, a sparse
// area, the malloc heap) and forks a child that checks it too, pass after
// pass, from the first instruction on. A block the program discards
// (MADV_DONTNEED) during the copy must read zero from then on, not come
// back from the image.
func TestLazyRestore(t *testing.T) {
	setup(t, "lazymem")
	p := start(t, "lazymem", "256")
	p.waitInt(t, passRE, 2, 30*time.Second)
	img, _ := dumpKillAll(t, p)
	before := lastInt(p.log, passRE)
	r, _, wait := lazyRestore(t, img, p)
	r.signal(t, unix.SIGUSR1) // discard block 3, likely before it came in
	code, stderr := wait()
	if code != 0 {
		t.Fatalf("restore --lazy: exit %d; stderr:\n%s", code, stderr)
	}
	m := regexp.MustCompile(`all memory in after \S+ \((\d+) MiB in the background, (\d+) faults`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("restore --lazy did not report the end of the copy; stderr:\n%s", stderr)
	}
	t.Logf("chpox: %s", strings.TrimSpace(stderr))
	if faults, _ := strconv.Atoi(m[2]); faults == 0 {
		t.Errorf("no page fault was served: the copy was not lazy")
	}
	r.waitLog(t, `(?m)^discarded$`, 1, 20*time.Second)
	// Passes after chpox has gone: the memory is all there, the holes and
	// the discarded block read zero, and the process runs on.
	n := lastInt(p.log, passRE)
	r.waitInt(t, passRE, max(n, before)+3, 30*time.Second)
	if r.exited() {
		t.Fatalf("restored process ended: %s", r.status)
	}
}

// Memory the program moves (mremap) again and again while the background
// pass copies into it gets the image's pages at its new place: a copy
// that finds no area at the old place must wait for the event that says
// where it went, not take the pages for unmapped.
func TestLazyMoves(t *testing.T) {
	setup(t, "lazymove")
	p := start(t, "lazymove", "128")
	p.waitInt(t, passRE, 1, 30*time.Second)
	img := dumpKill(t, p)
	before := lastInt(p.log, passRE)
	r, _, wait := lazyRestore(t, img, p)
	waitCopied(t, wait)
	r.waitInt(t, passRE, before+3, 30*time.Second)
}

// A child forked during the copy lacks an area of its parent's
// (MADV_DONTFORK), and no event says so: its copy takes the area for
// unmapped after a while, and ends; parent and child check their memory.
func TestLazyForkWithoutArea(t *testing.T) {
	setup(t, "lazymove")
	p := start(t, "lazymove", "64")
	p.waitInt(t, passRE, 1, 30*time.Second)
	img := dumpKill(t, p)
	before := lastInt(p.log, passRE)
	// The fork comes while the background pass is held back.
	r, _, wait := lazyRestore(t, img, p, "CHPOX_TEST_LAZY_STALL=2s")
	r.signal(t, unix.SIGUSR1)
	kidRE := `(?m)^kid pass (\d+) ok`
	// r's cleanup kills the kid too (killed first, the kid would stay a
	// zombie of r's until r went).
	r.waitInt(t, kidRE, 1, 30*time.Second)
	t.Logf("chpox: %s", waitCopied(t, wait))
	kid := lastInt(p.log, kidRE)
	r.waitInt(t, passRE, before+3, 30*time.Second)
	r.waitInt(t, kidRE, kid+2, 30*time.Second)
}

// With the background pass held back, the process runs on faults alone,
// also after it discards and moves memory and when the kernel reads its
// memory for it (write(2)); and if chpox dies then, the guard kills the process rather than let the
// kernel give it zero pages for what was never copied.
func TestLazyChpoxDies(t *testing.T) {
	setup(t, "lazymem")
	p := start(t, "lazymem", "256")
	p.waitInt(t, passRE, 2, 30*time.Second)
	img, _ := dumpKillAll(t, p)
	before := lastInt(p.log, passRE)
	r, cmd, wait := lazyRestore(t, img, p, "CHPOX_TEST_LAZY_STALL=1h")
	// Full checks by the process and its fork children, every page it
	// reads brought in by a fault.
	r.waitInt(t, passRE, before+3, 30*time.Second)
	// Discarded memory reads zero, and an area moved (mremap) while none
	// of it was copied yet is found at its new place.
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^kernel read ok$`, 1, 20*time.Second)
	r.waitLog(t, `(?m)^moved ok$`, 1, 20*time.Second)
	r.waitInt(t, passRE, lastInt(p.log, passRE)+2, 30*time.Second)
	cmd.Process.Signal(syscall.SIGKILL)
	wait()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the restored process outlived chpox in the lazy phase: %s", procState(r.pid))
	}
	if !strings.Contains(r.status, "killed") {
		t.Errorf("restored process ended with %q, want killed", r.status)
	}
	// Nobody read a zero page for one never copied: neither the process
	// nor a fork child of its that was checking its memory then.
	time.Sleep(200 * time.Millisecond)
	data, _ := os.ReadFile(p.log)
	if bad := failRE.Find(data); bad != nil {
		t.Errorf("after chpox died: %q; log:\n%s", bad, tailOf(data))
	}
}

// Compressed images are restored at once, with a note.
func TestLazyCompressedFallsBack(t *testing.T) {
	setup(t, "lazymem")
	p := start(t, "lazymem", "32")
	p.waitInt(t, passRE, 1, 30*time.Second)
	img := dump(t, p, "--kill", "--compress")
	p.waitExit(t, 10*time.Second)
	waitImagePIDs(t, img)
	before := lastInt(p.log, passRE)
	res := mustChpox(t, "restore", "--lazy", "--detach", img)
	if !strings.Contains(res.stderr, "--lazy not used: the image's data is compressed") {
		t.Errorf("no fallback note; stderr:\n%s", res.stderr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(res.stdout))
	r := adopt(t, "lazymem(restored)", pid, p.log)
	r.waitInt(t, passRE, before+2, 30*time.Second)
}

// A tree whose child and grandchild still share the root's pages
// copy-on-write (the image holds them once, in the root's record): all
// are filled lazily, the descendants from the root's pages of the image,
// and all check all their memory again and again.
func TestLazyFamily(t *testing.T) {
	setup(t, "lazymem")
	f, logPath := logFile(t, "lazymem")
	cmd := exec.Command(progs["lazymem"], "128")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), "LAZYMEM_FAMILY=1")
	p := startCmd(t, "lazymem", cmd, logPath)
	f.Close()
	kidRE, grandRE := `(?m)^kid pass (\d+) ok`, `(?m)^grandkid pass (\d+) ok`
	p.waitInt(t, passRE, 2, 30*time.Second)
	p.waitInt(t, kidRE, 2, 30*time.Second)
	p.waitInt(t, grandRE, 2, 30*time.Second)
	img, n := dumpKillAll(t, p)
	if n < 3 {
		t.Fatalf("want the parent, its kid and grandkid in the image, it has %d processes", n)
	}
	before, kidBefore, grandBefore := lastInt(p.log, passRE), lastInt(p.log, kidRE), lastInt(p.log, grandRE)
	r, _, wait := lazyRestore(t, img, p)
	for _, k := range descendants(r.pid) {
		adopt(t, "lazymem kid(restored)", k, p.log)
	}
	waitCopied(t, wait)
	r.waitInt(t, passRE, before+3, 30*time.Second)
	r.waitInt(t, kidRE, kidBefore+3, 30*time.Second)
	r.waitInt(t, grandRE, grandBefore+3, 30*time.Second)
}

// A foreground restore --lazy serves the copy while it waits for the
// process and ends with its status.
func TestLazyForeground(t *testing.T) {
	setup(t, "lazymem")
	p := start(t, "lazymem", "64")
	p.waitInt(t, passRE, 1, 30*time.Second)
	img, _ := dumpKillAll(t, p)
	before := lastInt(p.log, passRE)
	b := startChpox(t, "restore", "--lazy", img)
	waitFor(t, 20*time.Second, "the restored process", func() bool { return pidExists(p.pid) || b.exited() })
	r := adopt(t, "lazymem(restored)", p.pid, p.log)
	r.waitInt(t, passRE, before+3, 30*time.Second)
	r.signal(t, unix.SIGTERM)
	select {
	case <-b.done:
	case <-time.After(20 * time.Second):
		t.Fatal("foreground restore --lazy did not end with its process")
	}
	if b.status != "exit status 143" {
		t.Errorf("chpox restore --lazy: %s, want exit status 143 (the process's SIGTERM)", b.status)
	}
	if !strings.Contains(b.stderr.String(), "all memory in") {
		t.Errorf("no end-of-copy line; stderr:\n%s", b.stderr.String())
	}
}
