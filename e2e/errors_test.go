package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// wantFailure checks a failed chpox command's exit code and message.
func wantFailure(t *testing.T, r chpoxResult, code int, words ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d; stderr:\n%s", r.code, code, r.stderr)
	}
	if !strings.HasPrefix(r.stderr, "chpox: ") {
		t.Errorf("stderr %q does not start with \"chpox: \"", r.stderr)
	}
	for _, w := range words {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q does not mention %q", r.stderr, w)
		}
	}
}

// freePID returns a PID no process holds (searching down from pid_max).
func freePID(t *testing.T) int {
	t.Helper()
	// The kernel hands out PIDs upward from the last one it gave: a free
	// PID a little below that one stays free until the counter wraps.
	// (pid_max may be only 32768, so the top of the range is no safer.)
	data, err := os.ReadFile("/proc/sys/kernel/ns_last_pid")
	if err != nil {
		t.Fatal(err)
	}
	last, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	for pid := last - 100; pid > 300 && pid > last-5000; pid-- {
		if !pidExists(pid) {
			return pid
		}
	}
	// Just after a wrap: the top of the range is the farthest away.
	for pid := 32767; pid > last+5000; pid-- {
		if !pidExists(pid) {
			return pid
		}
	}
	t.Fatal("no free PID far from the allocator")
	return 0
}

// assertPIDFree checks that a failed restore left nothing behind: no process
// (not even a zombie) with the PID once chpox has exited.
func assertPIDFree(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for pidExists(pid) {
		if time.Now().After(deadline) {
			t.Errorf("after the failed restore pid %d exists: %s", pid, procState(pid))
			waitPIDFree(t, pid, 10*time.Second) // reap it if it is ours, for the next tests
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUsage(t *testing.T) {
	setup(t)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"dump"},
		{"dump", "notapid", "-o", filepath.Join(t.TempDir(), "x.img")},
		{"restore"},
		{"inspect"},
	} {
		t.Run(strings.Join(append([]string{"chpox"}, args...), " "), func(t *testing.T) {
			r := runChpox(t, args...)
			if r.code != 2 {
				t.Errorf("exit %d, want 2 (usage); stderr:\n%s", r.code, r.stderr)
			}
		})
	}
}

func TestDumpNoSuchProcess(t *testing.T) {
	setup(t)
	pid := freePID(t)
	img := filepath.Join(t.TempDir(), "x.img")
	r := runChpox(t, "dump", strconv.Itoa(pid), "-o", img)
	wantFailure(t, r, 3, "no such process")
	if _, err := os.Stat(img); err == nil {
		t.Errorf("a failed dump created %s", img)
	}
}

// Restoring while the original still runs is refused, and the original is not disturbed.
func TestRestorePIDInUse(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	img := dump(t, p)
	r := runChpox(t, "restore", img)
	wantFailure(t, r, 4, fmt.Sprintf("pid %d", p.pid), "in use")
	r = runChpox(t, "restore", "--detach", img)
	wantFailure(t, r, 4, fmt.Sprintf("pid %d", p.pid), "in use")
	n := lastInt(p.log, countRE)
	p.waitInt(t, countRE, n+20, 10*time.Second)
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("original after the refused restore: %s", st)
	}
	checkCounterLog(t, p.log)
}

// damagedImage dumps a counter with --kill and returns the image and the
// PID, free for a restore.
func damagedImage(t *testing.T) (string, int) {
	t.Helper()
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	return dumpKill(t, p), p.pid
}

func TestRestoreDamaged(t *testing.T) {
	img, pid := damagedImage(t)
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	mid := len(data) / 2
	data[mid] ^= 0x40
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("flipped a bit of byte %d of %d", mid, len(data))
	wantFailure(t, runChpox(t, "restore", img), 5, "damaged")
	assertPIDFree(t, pid)
	wantFailure(t, runChpox(t, "restore", "--detach", img), 5, "damaged")
	assertPIDFree(t, pid)
}

func TestRestoreTruncated(t *testing.T) {
	img, pid := damagedImage(t)
	fi, err := os.Stat(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, fi.Size()/2); err != nil {
		t.Fatal(err)
	}
	wantFailure(t, runChpox(t, "restore", img), 5, "truncated")
	assertPIDFree(t, pid)
}

func TestRestoreNotAnImage(t *testing.T) {
	setup(t)
	dir := t.TempDir()
	text := filepath.Join(dir, "text.img")
	os.WriteFile(text, []byte(strings.Repeat("this is not a chpox image\n", 100)), 0o600)
	wantFailure(t, runChpox(t, "restore", text), 5)
	empty := filepath.Join(dir, "empty.img")
	os.WriteFile(empty, nil, 0o600)
	wantFailure(t, runChpox(t, "restore", empty), 5)
	wantFailure(t, runChpox(t, "inspect", text), 5)
}

// A process holding something chpox cannot checkpoint yet is refused with a
// message naming it, and it keeps running unharmed.
func TestUnsupported(t *testing.T) {
	// Threads and child processes are supported now (threads_test.go, tree_test.go).
	// UNIX sockets are supported now (unix_test.go); a packet socket is not.
	for _, what := range []string{"packet"} {
		t.Run(what, func(t *testing.T) {
			setup(t, "holder")
			p := start(t, "holder", what)
			p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
			img := filepath.Join(t.TempDir(), "holder.img")
			r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
			wantFailure(t, r, 6, what)
			refusedAndRunning(t, p, img)
		})
	}
}

// TestDumpInterrupted: SIGINT to chpox while it copies a large process
// abandons the dump: the previous image stays byte for byte, no temporary
// file is left, and the process runs on untraced with its memory intact.
func TestDumpInterrupted(t *testing.T) {
	setup(t, "bigmem")
	p := start(t, "bigmem", "768")
	p.waitLog(t, `(?m)^ready$`, 1, 60*time.Second)
	dir := t.TempDir()
	img := filepath.Join(dir, "big.img")
	old := []byte("the previous checkpoint")
	if err := os.WriteFile(img, old, 0o600); err != nil {
		t.Fatal(err)
	}
	b := startChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
	time.Sleep(200 * time.Millisecond) // let it freeze and start copying (768 MiB take seconds)
	if b.exited() {
		t.Fatalf("dump finished before it could be interrupted: %s", b.status)
	}
	b.cmd.Process.Signal(unix.SIGINT)
	<-b.done
	if b.status != "exit status 1" || !strings.Contains(b.stderr.String(), "interrupted") {
		t.Fatalf("interrupted dump: %s, stderr %q; want exit status 1 and \"interrupted\"", b.status, b.stderr.String())
	}
	if got, _ := os.ReadFile(img); string(got) != string(old) {
		t.Errorf("the previous image changed: %q", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the directory holds %d entries, want only the previous image", len(ents))
	}
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("after the interrupted dump the process is still traced: %s", st)
	}
	p.signal(t, unix.SIGUSR1)
	p.waitLog(t, `(?m)^bigmem ok$`, 1, 60*time.Second)
}

// TestRestoreUntrusted: root does not restore what a user could have
// forged: an image of a root process owned by a user, or an image others
// may write. Nothing starts; exit code 5.
func TestRestoreUntrusted(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 5, 10*time.Second)
	img := dumpKill(t, p)
	if err := os.Chown(img, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	r := runChpox(t, "restore", "--detach", img)
	wantFailure(t, r, 5, "belongs to uid 1000", "claims uid 0", "not trusted")
	if err := os.Chown(img, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(img, 0o620); err != nil {
		t.Fatal(err)
	}
	r = runChpox(t, "restore", "--detach", img)
	wantFailure(t, r, 5, "writable by group or others", "not trusted")
	if pidExists(p.pid) {
		t.Errorf("pid %d exists after refused restores: %s", p.pid, procState(p.pid))
	}
	os.Chmod(img, 0o600)
	restoreDetached(t, img, p) // the same image, trusted again, restores
}

// TestRestoreMemoryLimits: an image that cannot fit chpox's memory cgroup
// or its address-space limit is refused up front with a message that says
// which limit, instead of the OOM killer ending the restore half way; the
// PID stays free and the image restores where it fits.
func TestRestoreMemoryLimits(t *testing.T) {
	setup(t, "bigmem")
	p := start(t, "bigmem", "64")
	p.waitLog(t, `(?m)^ready$`, 1, 30*time.Second)
	img := dumpKill(t, p)

	cg := memoryCgroup(t, 40<<20)
	out, err := exec.Command("/bin/sh", "-c", `echo $$ > "$1"/cgroup.procs && exec "$2" restore --detach "$3"`,
		"sh", cg, chpoxBin, img).CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), "memory cgroup") || !strings.Contains(string(out), "raise its limit") {
		t.Errorf("restore in a 40 MiB cgroup: %v, %s; want exit 1 naming the cgroup limit", err, out)
	}
	if pidExists(p.pid) {
		t.Fatalf("a refused restore left pid %d: %s", p.pid, procState(p.pid))
	}
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^bigmem ok`, 1, 30*time.Second)

	// 16 GiB of reserved address space under a 6 GiB RLIMIT_AS (chpox
	// itself, a Go program with threads, needs about 1 GiB of it).
	q := start(t, "reserve", "16")
	q.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img = dumpKill(t, q)
	out, err = exec.Command("/bin/sh", "-c", `ulimit -v 6000000 && exec "$1" restore --detach "$2"`, "sh", chpoxBin, img).CombinedOutput()
	if exitCode(err) != 1 || !strings.Contains(string(out), "RLIMIT_AS") {
		t.Errorf("restore of 16 GiB of mappings under ulimit -v 6000000: %v, %s; want exit 1 naming RLIMIT_AS", err, out)
	}
	if pidExists(q.pid) {
		t.Fatalf("a refused restore left pid %d: %s", q.pid, procState(q.pid))
	}
	restoreDetached(t, img, q).waitInt(t, `(?m)^count (\d+)$`, lastInt(q.log, `(?m)^count (\d+)$`)+5, 10*time.Second)
}

// memoryCgroup makes a memory cgroup (v2, or the v1 memory hierarchy)
// limited to limit bytes and removes it at the end of the test.
func memoryCgroup(t *testing.T, limit int64) string {
	t.Helper()
	dir, file := "/sys/fs/cgroup/chpox-test-"+strconv.Itoa(os.Getpid()), "memory.max"
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err != nil {
		dir, file = "/sys/fs/cgroup/memory/chpox-test-"+strconv.Itoa(os.Getpid()), "memory.limit_in_bytes"
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal("memory cgroup:", err)
	}
	t.Cleanup(func() { os.Remove(dir) })
	if err := os.WriteFile(filepath.Join(dir, file), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		t.Fatal("memory cgroup limit:", err)
	}
	return dir
}

// TestDumpUninterruptible: a process that cannot stop (here waiting for its
// vfork child, an uninterruptible wait) fails the dump after --stop-timeout
// with a message that says so, and goes on untraced once the wait ends.
func TestDumpUninterruptible(t *testing.T) {
	setup(t, "holder")
	p := start(t, "holder", "vfork")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := filepath.Join(t.TempDir(), "x.img")
	r := runChpox(t, "dump", "--stop-timeout", "500ms", strconv.Itoa(p.pid), "-o", img)
	wantFailure(t, r, 1, "did not stop", "vfork")
	if _, err := os.Stat(img); err == nil {
		t.Errorf("the failed dump left %s", img)
	}
	p.waitInt(t, `(?m)^alive (\d+)$`, 20, 10*time.Second) // the vfork child ended after 3 s
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("holder after the failed dump: %s", st)
	}
}

// refusedAndRunning checks what a refused dump leaves: no image, and the
// holder (a testdata/holder.c that logs "alive N") running on, untraced.
func refusedAndRunning(t *testing.T, p *proc, img string) {
	t.Helper()
	if _, err := os.Stat(img); err == nil {
		t.Errorf("the refused dump left %s", img)
	}
	n := lastInt(p.log, `(?m)^alive (\d+)$`)
	p.waitInt(t, `(?m)^alive (\d+)$`, n+20, 10*time.Second)
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("holder after the refused dump: %s", st)
	}
}
