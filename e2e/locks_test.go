package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// lockTable is /proc/locks for the files of dir, one line per lock or
// waiter, with the kernel's counter dropped and dev:inode replaced by the
// file's name, sorted: two tables are equal when the same locks are held
// (and waited for) by the same processes.
func lockTable(t *testing.T, dir string, names ...string) []string {
	t.Helper()
	byIno := map[string]string{}
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(dir, n), &st); err != nil {
			t.Fatal(err)
		}
		byIno[fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)] = n
	}
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(l)
		if len(f) < 8 {
			continue
		}
		f = f[1:] // the counter
		for i, w := range f {
			if name, ok := byIno[w]; ok {
				f[i] = name
				out = append(out, strings.Join(f, " "))
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// locks.c's processes and files.
var lockFiles = []string{"flock", "posix", "ofd", "lease", "posix2", "wlease"}

// Every kind of file lock comes back held by the same process and open
// file description, and the waiters wait again: /proc/locks is the same
// before the dump and after the restore; from inside, each lock belongs
// to the process's own description (a fresh open conflicts, its own fd
// does not); from outside, F_GETLK and F_OFD_GETLK name the holder; a
// lease break reaches the holder with its F_SETSIG signal; when the
// holder lets go, each waiter gets its lock.
func TestFileLocks(t *testing.T) {
	setup(t, "locks")
	dir := t.TempDir()
	p := start(t, "locks", dir)
	m := p.waitLog(t, `(?m)^pids (\d+) (\d+) (\d+) (\d+)$`, 1, 10*time.Second)
	a, w, f := atoi(m[2]), atoi(m[3]), atoi(m[4])
	killAtEnd(t, a, w, f)
	P := p.pid
	before := lockTable(t, dir, lockFiles...)
	want := []string{
		fmt.Sprintf("-> FLOCK ADVISORY READ %d flock 0 EOF", f),
		fmt.Sprintf("-> POSIX ADVISORY WRITE %d posix 0 0", w),
		fmt.Sprintf("FLOCK ADVISORY WRITE %d flock 0 EOF", P),
		fmt.Sprintf("LEASE ACTIVE READ %d lease 0 EOF", P),
		fmt.Sprintf("LEASE ACTIVE WRITE %d wlease 0 EOF", P),
		"OFDLCK ADVISORY WRITE -1 ofd 5 9",
		fmt.Sprintf("POSIX ADVISORY READ %d posix 0 9", P),
		fmt.Sprintf("POSIX ADVISORY READ %d posix2 300 399", a),
		fmt.Sprintf("POSIX ADVISORY WRITE %d posix 20 EOF", P),
		fmt.Sprintf("POSIX ADVISORY WRITE %d posix2 100 199", a),
	}
	slices.Sort(want)
	if !slices.Equal(before, want) {
		t.Fatalf("before the dump /proc/locks has\n%s\nwant\n%s", strings.Join(before, "\n"), strings.Join(want, "\n"))
	}

	img, _ := dumpKillTree(t, p, 4)
	text := quietChpox(t, "inspect", img)
	for _, l := range []string{
		fmt.Sprintf("lock: fd 3: exclusive flock (holder pid %d)", P),
		fmt.Sprintf("lock: fd 4: POSIX read lock on bytes 0-9 (holder pid %d)", P),
		fmt.Sprintf("lock: fd 4: POSIX write lock on bytes 20-EOF (holder pid %d)", P),
		"lock: fd 5: OFD write lock on bytes 5-9\n",
		fmt.Sprintf("lock: fd 6: read lease (holder pid %d)", P),
		fmt.Sprintf("lock: fd 7: shared flock (holder pid %d)", P),
		fmt.Sprintf("lock: fd 9: write lease (holder pid %d)", P),
		fmt.Sprintf("lock: fd 8: POSIX write lock on bytes 100-199 (holder pid %d)", a),
	} {
		if !strings.Contains(text, l) {
			t.Errorf("inspect lacks %q:\n%s", l, text)
		}
	}
	if n := strings.Count(text, "exclusive flock"); n != 1 {
		t.Errorf("inspect shows the flock of P's fd 3 (shared with A) %d times, want once", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "flock")); err != nil {
		t.Fatal(err)
	}
	r := restoreDetached(t, img, p)
	if after := lockTable(t, dir, lockFiles...); !slices.Equal(after, want) {
		t.Errorf("after the restore /proc/locks has\n%s\nwant\n%s", strings.Join(after, "\n"), strings.Join(want, "\n"))
	}
	// The deleted file's stand-in is locked by P through fd 7.
	if info, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/7", P)); !regexp.MustCompile(fmt.Sprintf(`lock:\s+\d+: FLOCK\s+ADVISORY\s+READ %d `, P)).Match(info) {
		t.Errorf("P's fd 7 (a deleted file) after the restore: %s, want a shared flock of pid %d", info, P)
	}

	// From inside: each lock is on the process's own description.
	r.signal(t, unix.SIGUSR1)
	unix.Kill(a, unix.SIGUSR1)
	r.waitLog(t, `(?m)^check ok P$`, 1, 10*time.Second)
	r.waitLog(t, `(?m)^check ok A$`, 1, 10*time.Second)

	// From outside: the kernel names the holders.
	getlk := func(name string, cmd int, start int64) unix.Flock_t {
		t.Helper()
		fd, err := unix.Open(filepath.Join(dir, name), unix.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		fl := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: start, Len: 1}
		if err := unix.FcntlFlock(uintptr(fd), cmd, &fl); err != nil {
			t.Fatalf("fcntl(%d) on %s: %v", cmd, name, err)
		}
		return fl
	}
	for _, c := range []struct {
		name      string
		cmd       int
		at        int64
		typ       int16
		pid       int32
		start, ln int64
	}{
		{"posix", unix.F_GETLK, 3, unix.F_RDLCK, int32(P), 0, 10},
		{"posix", unix.F_GETLK, 1000, unix.F_WRLCK, int32(P), 20, 0},
		{"posix", unix.F_GETLK, 15, unix.F_UNLCK, 0, 15, 1},
		{"posix2", unix.F_GETLK, 150, unix.F_WRLCK, int32(a), 100, 100},
		{"posix2", unix.F_GETLK, 350, unix.F_RDLCK, int32(a), 300, 100},
		{"ofd", unix.F_OFD_GETLK, 7, unix.F_WRLCK, -1, 5, 5},
	} {
		fl := getlk(c.name, c.cmd, c.at)
		if fl.Type != c.typ || (c.typ != unix.F_UNLCK && (fl.Pid != c.pid || fl.Start != c.start || fl.Len != c.ln)) {
			t.Errorf("%s byte %d: conflicting lock type %d pid %d at %d+%d, want type %d pid %d at %d+%d",
				c.name, c.at, fl.Type, fl.Pid, fl.Start, fl.Len, c.typ, c.pid, c.start, c.ln)
		}
	}
	if fd, err := unix.Open(filepath.Join(dir, "flock"), unix.O_RDWR, 0); err == nil {
		if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != unix.EWOULDBLOCK {
			t.Errorf("flock(LOCK_SH|LOCK_NB) on flock from outside: %v, want EWOULDBLOCK", err)
		}
		unix.Close(fd)
	}

	// A lease break: the open fails at once, P gets SIGUSR2 (its F_SETSIG)
	// and gives the lease up.
	if fd, err := unix.Open(filepath.Join(dir, "lease"), unix.O_WRONLY|unix.O_NONBLOCK, 0); err != unix.EWOULDBLOCK {
		t.Errorf("open(O_WRONLY|O_NONBLOCK) of the leased file: %v, want EWOULDBLOCK (the lease was not restored)", err)
		if err == nil {
			unix.Close(fd)
		}
	}
	r.waitLog(t, `(?m)^lease broken `+strconv.Itoa(int(unix.SIGUSR2))+`$`, 1, 10*time.Second)

	// The waiters wait until P lets go, then get their locks.
	time.Sleep(100 * time.Millisecond)
	if data, _ := os.ReadFile(p.log); strings.Contains(string(data), " got ") {
		t.Fatalf("a waiter got its lock while P still held it:\n%s", tailOf(data))
	}
	r.signal(t, unix.SIGHUP)
	r.waitLog(t, `(?m)^released$`, 1, 10*time.Second)
	r.waitLog(t, `(?m)^W got posix$`, 1, 10*time.Second)
	r.waitLog(t, `(?m)^F got flock$`, 1, 10*time.Second)
	re := `(?m)^alive A (\d+)$`
	r.waitInt(t, re, lastInt(p.log, re)+3, 10*time.Second)
}

// A lease being broken (another process's open waits for the holder to
// let go) cannot be saved: the dump is refused, naming the lease and the
// file, and the process runs on with its lease.
func TestFileLeaseBreakingRefused(t *testing.T) {
	setup(t, "locks")
	dir := t.TempDir()
	p := start(t, "locks", dir, "lease")
	p.waitLog(t, `(?m)^lease held \d+$`, 1, 10*time.Second)
	if _, err := unix.Open(filepath.Join(dir, "lease"), unix.O_WRONLY|unix.O_NONBLOCK, 0); err != unix.EWOULDBLOCK {
		t.Fatalf("open(O_WRONLY|O_NONBLOCK) of the leased file: %v, want EWOULDBLOCK", err)
	}
	r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "x.img"))
	wantFailure(t, r, 6, "lease on "+filepath.Join(dir, "lease")+" is being broken")
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") || p.exited() {
		t.Errorf("after the refused dump: %s, want it running untraced", st)
	}
	if tab := lockTable(t, dir, "lease"); len(tab) != 1 || !strings.HasPrefix(tab[0], "LEASE BREAKING UNLCK "+strconv.Itoa(p.pid)) {
		t.Errorf("after the refused dump /proc/locks has %q, want the lease still being broken", tab)
	}
}

// A lock that another process took between the dump and the restore
// cannot be taken again: the restore fails naming the fd, the file and
// the lock, and leaves nothing behind; once it is released the same image
// restores.
func TestFileLockTakenMeanwhile(t *testing.T) {
	setup(t, "locks")
	dir := t.TempDir()
	p := start(t, "locks", dir)
	m := p.waitLog(t, `(?m)^pids (\d+) (\d+) (\d+) (\d+)$`, 1, 10*time.Second)
	killAtEnd(t, atoi(m[2]), atoi(m[3]), atoi(m[4]))
	img, ps := dumpKillTree(t, p, 4)
	fd, err := unix.Open(filepath.Join(dir, "flock"), unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_SH|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	r := runChpox(t, "restore", "--detach", img)
	wantFailure(t, r, 1, fmt.Sprintf("pid %d: restore locks: fd 3 (%s): take its exclusive flock again", p.pid, filepath.Join(dir, "flock")),
		"another process holds a conflicting lock on it now")
	assertPIDFree(t, p.pid)
	for _, ip := range ps {
		// The killed children are orphaned zombies, reparented to this
		// test (a subreaper; init elsewhere), which reaps them here.
		waitPIDFree(t, ip.PID, 10*time.Second)
	}
	unix.Flock(fd, unix.LOCK_UN)
	restoreDetached(t, img, p)
	if tab := lockTable(t, dir, "flock"); !slices.Contains(tab, fmt.Sprintf("FLOCK ADVISORY WRITE %d flock 0 EOF", p.pid)) {
		t.Errorf("after the second restore /proc/locks has %q", tab)
	}
}

// flock(2) takes any descriptor; on one that is not a file or directory
// (here /dev/null) the lock could not be kept: the dump is refused naming
// the fd and the lock, and the process runs on holding it.
func TestFileLockOnDeviceRefused(t *testing.T) {
	setup(t, "locks")
	p := start(t, "locks", t.TempDir(), "devnull")
	fd := p.waitLog(t, `(?m)^flock held (\d+)$`, 1, 10*time.Second)[1]
	r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "x.img"))
	wantFailure(t, r, 6, fmt.Sprintf("fd %s (/dev/null, chardev) holds a lock (exclusive flock)", fd))
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") || p.exited() {
		t.Errorf("after the refused dump: %s, want it running untraced", st)
	}
	info, _ := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", p.pid, fd))
	if !strings.Contains(string(info), "FLOCK") {
		t.Errorf("after the refused dump fd %s has %q, want its flock", fd, info)
	}
}
