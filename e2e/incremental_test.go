package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/internal/testutil"
)

var reusedRE = regexp.MustCompile(`(?m)^chpox: checkpoint (\d+) at .* (\d+) bytes, (\d+) unchanged taken from the last image(?:, (\d+) of them sharing its blocks)?, frozen (\S+) -> `)

// TestRunIncremental: chpox run checkpoints a process writing random
// pages of 256 MiB (some through the kernel, some dropped with
// MADV_DONTNEED and read again, a private file mapping written and
// dropped: content that changes without a write) three times while it
// runs. From the second checkpoint on, the pages not written since the
// last come from the last image: the log says how many bytes. The job
// goes on unharmed, and the third image, restored, holds every page at
// exactly the generation its index records (livewriter checks), so the
// pages taken from images one and two are the right ones.
func TestRunIncremental(t *testing.T) {
	t.Run("ext4", func(t *testing.T) { runIncremental(t, t.TempDir(), false) })
	// XFS shares the unchanged runs' blocks with the last image: the same
	// checks, on it, and some data must have been shared.
	t.Run("xfs", func(t *testing.T) { runIncremental(t, testutil.XFS(t, 2048), true) })
}

func runIncremental(t *testing.T, dir string, share bool) {
	setup(t, "livewriter")
	img := filepath.Join(dir, "inc.chp")
	j := startRun(t, "--signal", "31", "-o", img, "--", progs["livewriter"], "256", "64", "1000", "5", filepath.Join(t.TempDir(), "private"))
	p := &proc{name: "livewriter", pid: j.root, log: j.stdout, done: j.done}
	p.waitLog(t, `(?m)^ready$`, 1, 60*time.Second)
	seen := map[string]bool{}
	for n := 1; n <= 3; n++ {
		liveReset(t, p, n)
		p.signal(t, 31)
		j.waitCheckpoint(t, n, 1, img)
		if gap := liveCheck(t, p, seen); gap > time.Second {
			t.Errorf("checkpoint %d stalled the job %v", n, gap)
		}
	}
	data, _ := os.ReadFile(j.stderr)
	m := reusedRE.FindAllStringSubmatch(string(data), -1)
	if len(m) != 2 || m[0][1] != "2" || m[1][1] != "3" {
		t.Fatalf("checkpoints 2 and 3 should take unchanged pages from the last image; log:\n%s", data)
	}
	for _, c := range m {
		total, reused, shared := atoi(c[2]), atoi(c[3]), 0
		if c[4] != "" {
			shared = atoi(c[4])
		}
		t.Logf("checkpoint %s: %d of %d bytes from the last image (%d shared), frozen %s", c[1], reused, total, shared, c[5])
		if reused <= 0 || reused >= total {
			t.Errorf("checkpoint %s reused %d of %d bytes", c[1], reused, total)
		}
		if share != (shared > 0) || shared > reused {
			t.Errorf("checkpoint %s shared %d of the %d bytes it reused; sharing expected: %v", c[1], shared, reused, share)
		}
	}
	killPIDs(t, j.root)
	<-j.done
	waitPIDFree(t, j.root, 10*time.Second)
	q := restoreDetached(t, img, p)
	liveCheck(t, q, seen)
	liveCheck(t, q, seen) // and it goes on writing
}

// TestRunIncrementalExec: a job that execs between two checkpoints has a
// new memory; the second checkpoint must not take pages of the old one
// from the last image. A python execs another that checks its own 64 MiB;
// restored from the second image, it goes on counting, every check ok.
func TestRunIncrementalExec(t *testing.T) {
	setup(t)
	img := filepath.Join(t.TempDir(), "exec.chp")
	second := `
import time
big = bytearray(64 << 20)
for i in range(0, len(big), 4096): big[i] = i // 4096 % 251
n = 0
while True:
    n += 1
    ok = all(big[i] == i // 4096 % 251 for i in range(0, len(big), 4096 * 64))
    print("py", n, "ok" if ok else "FAIL", flush=True)
    time.sleep(0.02)`
	first := `
import os, sys, time
old = bytearray(b"x" * (64 << 20))
for i in range(300):
    print("first", i + 1, flush=True)
    time.sleep(0.01)
os.execv(sys.executable, [sys.executable, "-c", sys.argv[1]])`
	j := startRun(t, "--signal", "31", "-o", img, "--", "/usr/bin/python3", "-c", first, second)
	p := &proc{name: "job", pid: j.root, log: j.stdout, done: j.done}
	p.waitInt(t, `(?m)^first (\d+)$`, 20, 30*time.Second)
	p.signal(t, 31)
	j.waitCheckpoint(t, 1, 1, img)
	p.waitInt(t, `(?m)^py (\d+) ok$`, 5, 60*time.Second)
	p.signal(t, 31)
	j.waitCheckpoint(t, 2, 1, img)
	data, _ := os.ReadFile(j.stderr)
	if m := reusedRE.FindAllStringSubmatch(string(data), -1); len(m) > 0 {
		t.Errorf("the checkpoint after exec took %s bytes from the image of the shell:\n%s", m[0][3], data)
	}
	n := lastInt(j.stdout, `(?m)^py (\d+) ok$`)
	killPIDs(t, j.root)
	<-j.done
	waitPIDFree(t, j.root, 10*time.Second)
	q := restoreDetached(t, img, p)
	q.waitInt(t, `(?m)^py (\d+) ok$`, n+5, 30*time.Second)
	if b, _ := os.ReadFile(j.stdout); regexp.MustCompile(`(?m)^py \d+ FAIL$`).Match(b) {
		t.Errorf("the restored python found its memory changed:\n%s", tailOf(b))
	}
}

// TestRunCompact: on XFS, once the last image is made of more than
// ShareChain shared pieces (0 here: any), chpox run rewrites it with blocks of
// its own in the background, and the next checkpoint shares blocks with
// the rewritten image instead of writing its own image unshared (the
// checkpoint that used to cost a third of a full one). The image stays
// right throughout: restored from the last one, every page is at the
// generation its index records.
func TestRunCompact(t *testing.T) {
	setup(t, "livewriter")
	t.Setenv("CHPOX_TEST_SHARE_CHAIN", "0")
	dir := testutil.XFS(t, 2048)
	img := filepath.Join(dir, "compact.chp")
	j := startRun(t, "-v", "--signal", "31", "-o", img, "--", progs["livewriter"], "256", "64", "1000")
	p := &proc{name: "livewriter", pid: j.root, log: j.stdout, done: j.done}
	p.waitLog(t, `(?m)^ready$`, 1, 60*time.Second)
	seen := map[string]bool{}
	rewritten := `(?m)^time=\S+ level=DEBUG msg="last image rewritten without shared blocks" took=\S+ err=<nil>$`
	var inode uint64
	for n := 1; n <= 3; n++ {
		liveReset(t, p, n)
		p.signal(t, 31)
		j.waitFile(t, j.stderr, fmt.Sprintf(`(?m)^chpox: checkpoint %d at .* -> `, n), 1, 60*time.Second)
		liveCheck(t, p, seen)
		if n == 2 {
			inode = fileInode(t, img)
			j.waitFile(t, j.stderr, rewritten, 1, 60*time.Second)
			if fileInode(t, img) == inode {
				t.Errorf("the rewrite left %s the same file (inode %d)", img, inode)
			}
		}
	}
	data, _ := os.ReadFile(j.stderr)
	m := reusedRE.FindAllStringSubmatch(string(data), -1)
	if len(m) != 2 || m[1][1] != "3" {
		t.Fatalf("checkpoints 2 and 3 should take unchanged pages from the last image; log:\n%s", data)
	}
	if shared := m[1][4]; shared == "" || atoi(shared) == 0 {
		t.Errorf("checkpoint 3 shared no blocks with the rewritten image: %q", m[1][0])
	}
	killPIDs(t, j.root)
	<-j.done
	// The rewrite that checkpoint 3 started ends with chpox run.
	if tmps, _ := filepath.Glob(filepath.Join(dir, ".compact.chp.tmp-*")); len(tmps) > 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
	waitPIDFree(t, j.root, 10*time.Second)
	q := restoreDetached(t, img, p)
	liveCheck(t, q, seen)
}

func fileInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
