package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFilesAsUser: files.c running as an ordinary user (uid 1000) holds a
// deleted file, among others; root dumps and restores it. The deleted
// file's stand-in is chpox's, and a process with its own ids cannot open
// chpox's /proc/PID/fd: it gets a copy through pidfd_getfd and reopens
// that in its own fd directory (found with nginx, whose workers run as
// nobody, for shared memory, which takes the same way).
func TestFilesAsUser(t *testing.T) {
	setup(t, "files")
	// The user creates its files in DIR and reopens its log by path at
	// restore.
	p, _ := startAsUser(t, "files", "DIR")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	checkProcOwner(t, p.pid, 1000)
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^files ok$`, 1, 10*time.Second)
	if st := statusLines(t, r.pid); st["Uid"] != "1000\t1000\t1000\t1000" {
		t.Errorf("restored with Uid %q, want 1000", st["Uid"])
	}
	// Still dumpable (the change of ids at restore had reset it).
	checkProcOwner(t, r.pid, 1000)
}

// checkProcOwner checks who owns /proc/PID's files: the process's euid
// while it is dumpable, root when not (fs/proc/base.c, task_dump_owner).
func checkProcOwner(t *testing.T, pid int, uid uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/environ", pid), &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != uid {
		t.Errorf("/proc/%d/environ is owned by uid %d, want %d (is the process dumpable?)", pid, st.Uid, uid)
	}
}

// startAsUser starts a testdata program as uid 1000 (setpriv) with a
// directory of its own it may write in (returned) and a log it may
// reopen by path at restore (t.TempDir makes 0700 directories, two levels
// of them, and the programs live in workDir).
func startAsUser(t *testing.T, name string, args ...string) (*proc, string) {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed:", err)
	}
	if err := os.Chmod(workDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o777)
	for i, a := range args {
		if a == "DIR" {
			args[i] = dir
		}
	}
	p := startExe(t, name, setpriv, append([]string{"--reuid=" + strconv.Itoa(testUID), "--regid=" + strconv.Itoa(testUID), "--clear-groups", progs[name]}, args...)...)
	os.Chmod(filepath.Dir(filepath.Dir(p.log)), 0o755)
	os.Chmod(filepath.Dir(p.log), 0o755)
	os.Chmod(p.log, 0o666)
	return p, dir
}
