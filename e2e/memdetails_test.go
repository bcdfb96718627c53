package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// memDetailsChecks are the "ok NAME" lines testdata/memdetails.c prints
// when an item of its memory is as it made it.
var memDetailsChecks = []string{"advice", "wipeonfork", "plain", "mlock", "mlock-onfault", "mseal", "noreserve", "content",
	"fork", "guard", "file-guard", "mseal-munmap", "rw-file", "ro-file", "private-file", "merge-any", "thp-disable", "lock-future"}

// TestMemoryDetails: madvise flags, mlock and mlock2(MLOCK_ONFAULT),
// mlockall(MCL_FUTURE|MCL_ONFAULT), guard regions, mseal, shared file
// mappings that may or may not be made writable, a private writable
// mapping of a read-only file, and the KSM and THP prctls come back as
// they were: the program checks each on itself after restore.
func TestMemoryDetails(t *testing.T) {
	setup(t, "memdetails")
	p := start(t, "memdetails", t.TempDir())
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	p.signal(t, unix.SIGUSR1)
	p.waitLog(t, `(?m)^check done$`, 1, 10*time.Second)

	img := dumpKill(t, p)
	out := mustChpox(t, "inspect", img).stdout
	for _, want := range []string{"dontfork, dontdump, hugepage, mergeable", "wipeonfork, nohugepage", "mlock:locked",
		"mlock:onfault", "guard ", "mseal", "never writable", `lock future "onfault", KSM merge all true, THP disabled true`} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect does not show %q:\n%s", want, out)
		}
	}
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	// waitLog fails at once on a FAIL line.
	for _, c := range memDetailsChecks {
		r.waitLog(t, `(?m)^ok `+c+`$`, 2, 10*time.Second)
	}
	r.waitLog(t, `(?m)^check done$`, 2, 10*time.Second)
	// It goes on running.
	re := `(?m)^tick (\d+)$`
	r.waitInt(t, re, lastInt(p.log, re)+3, 10*time.Second)
}

// TestMemfd: memfds come back as memfds with their names, sizes, modes,
// seals, offsets and contents: one mapped MAP_SHARED and held as an fd by
// a parent and its child (still one object, shared), one held only as an
// fd, one mapped MAP_PRIVATE with a privately written page, one mapped
// read-only after F_SEAL_FUTURE_WRITE (it stays impossible to make
// writable). A MAP_SHARED|MAP_ANONYMOUS area is named /dev/zero again,
// an unlinked file mapped MAP_SHARED and held as an fd stays one file. A
// private area shared copy-on-write between the two comes back right in
// both (as two copies: see docs/usage.md).
func TestMemfd(t *testing.T) {
	setup(t, "memfd")
	p := start(t, "memfd", t.TempDir())
	m := p.waitLog(t, `(?m)^pids (\d+) (\d+)$`, 1, 10*time.Second)
	child := atoi(m[2])
	killAtEnd(t, child)
	p.signal(t, unix.SIGUSR1)
	unix.Kill(child, unix.SIGUSR1)
	p.waitLog(t, `(?m)^memfd ok parent$`, 1, 10*time.Second)
	p.waitLog(t, `(?m)^memfd ok child$`, 1, 10*time.Second)

	img, _ := dumpKillTree(t, p, 2)
	out := mustChpox(t, "inspect", img).stdout
	for _, want := range []string{`memfd 1 "shared-m1": 65536 bytes, mode 0777, seals 0x6`, `"fdonly-m2": 10000 bytes, mode 0666, seals 0x29`,
		`"private-m3": 8192 bytes`, `"ro-m4": 4096 bytes`, `/del.dat, 8192 bytes, mode 0600`, `[from parent 32.0 KiB]`} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect does not show %q:\n%s", want, out)
		}
	}
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	unix.Kill(child, unix.SIGUSR1)
	r.waitLog(t, `(?m)^memfd ok parent$`, 2, 10*time.Second)
	r.waitLog(t, `(?m)^memfd ok child$`, 2, 10*time.Second)
	before := lastInt(p.log, `(?m)^parent (\d+) \d+$`)
	r.waitInt(t, `(?m)^parent (\d+) \d+$`, before+20, 10*time.Second)
}

// TestUnsupportedMemory: hugetlb memory, mapped or held only as a memfd,
// the ring of a perf event (its fd closed) and memfd_secret memory are
// refused by name (exit 6), no image is left, and the process runs on
// untraced.
func TestUnsupportedMemory(t *testing.T) {
	for _, what := range []string{"hugetlb-map", "hugetlb-fd", "perfring", "secretmem-map", "secretmem-fd"} {
		t.Run(what, func(t *testing.T) {
			setup(t, "holder")
			p := start(t, "holder", what)
			p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
			img := filepath.Join(t.TempDir(), "holder.img")
			r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
			switch what {
			case "perfring":
				wantFailure(t, r, 6, "anon_inode:[perf_event]")
			case "secretmem-map", "secretmem-fd":
				wantFailure(t, r, 6, "/secretmem (deleted) is memfd_secret memory")
			default:
				wantFailure(t, r, 6, "hugetlb", "memfd:huge")
			}
			refusedAndRunning(t, p, img)
		})
	}
}

// TestMemLockLimit: an image with mlock'ed memory is refused before any
// process is made when chpox may not lock that much (no CAP_IPC_LOCK,
// RLIMIT_MEMLOCK 0), with a message naming the limit; the same image then
// restores as root.
func TestMemLockLimit(t *testing.T) {
	setup(t, "memdetails")
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed:", err)
	}
	p := start(t, "memdetails", t.TempDir())
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := dumpKill(t, p)

	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatal("prlimit (util-linux) is needed:", err)
	}
	cmd := exec.Command(prlimit, "--memlock=0", setpriv, "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", chpoxBin, "restore", "--detach", img)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err = cmd.Run()
	if code := exitCode(err); code != 1 || !strings.Contains(stderr.String(), "RLIMIT_MEMLOCK") || !strings.Contains(stderr.String(), "locked (mlock)") {
		t.Fatalf("restore without CAP_IPC_LOCK and RLIMIT_MEMLOCK 0: exit %d, stderr %q; want exit 1 naming the limit", code, stderr.String())
	}
	t.Logf("restore refused: %s", stderr.String())
	if pidExists(p.pid) {
		t.Fatalf("the refused restore left pid %d: %s", p.pid, procState(p.pid))
	}
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^check done$`, 1, 10*time.Second)
}

// TestSharedMemoryOutside: dumping a child alone while it shares
// MAP_SHARED|MAP_ANONYMOUS memory with its parent (outside the checkpoint)
// is refused, naming the object and the parent: restored, the memory could
// not stay shared with it. Both run on untraced.
func TestSharedMemoryOutside(t *testing.T) {
	setup(t, "holder")
	p := start(t, "holder", "shmchild")
	child := atoi(p.waitLog(t, `(?m)^child (\d+)$`, 1, 10*time.Second)[1])
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := filepath.Join(t.TempDir(), "child.img")
	r := runChpox(t, "dump", strconv.Itoa(child), "-o", img)
	wantFailure(t, r, 6, "anonymous shared memory", "shared with pid "+strconv.Itoa(p.pid))
	if _, err := os.Stat(img); err == nil {
		t.Errorf("the refused dump left %s", img)
	}
	n := lastInt(p.log, `(?m)^alive (\d+)$`)
	p.waitInt(t, `(?m)^alive (\d+)$`, n+20, 10*time.Second)
	if st := procState(child); !strings.Contains(st, "TracerPid: 0") || !strings.Contains(st, "State: S") {
		t.Errorf("child after the refused dump: %s", st)
	}
	// With its parent, the tree keeps the memory shared: it is dumped.
	mustChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
}
