package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fdinfoField returns the value of one line of /proc/PID/fdinfo/FD.
func fdinfoField(t *testing.T, pid, fd int, key string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/fdinfo/%d has no %s line:\n%s", pid, fd, key, data)
	return ""
}

// signalfdOf finds the signalfd of pid.
func signalfdOf(t *testing.T, pid int) int {
	t.Helper()
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if linkOf(pid, atoi(e.Name())) == "anon_inode:[signalfd]" {
			return atoi(e.Name())
		}
	}
	t.Fatalf("pid %d holds no signalfd", pid)
	return -1
}

// sameDescription asks kcmp(2) whether two fds are one open file description.
func sameDescription(pid1, fd1, pid2, fd2 int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), 0 /* KCMP_FILE */, uintptr(fd1), uintptr(fd2), 0)
	return e == 0 && r == 0
}

// A signalfd (issue 9) comes back with its mask and flags, still one
// description shared by parent and child, and reads the signals of the
// process that reads it: one queued at the checkpoint (read once, before
// or after it), and new ones after restore.
func TestSignalfd(t *testing.T) {
	setup(t, "signalfd")
	p := start(t, "signalfd")
	m := p.waitLog(t, `(?m)^pids (\d+) (\d+)$`, 1, 10*time.Second)
	child := atoi(m[2])
	killAtEnd(t, child)
	pfd, cfd := signalfdOf(t, p.pid), signalfdOf(t, child)
	mask, flags := fdinfoField(t, p.pid, pfd, "sigmask"), fdinfoField(t, p.pid, pfd, "flags")
	unix.Kill(p.pid, unix.SIGUSR1)
	p.waitLog(t, `(?m)^parent sig 10 value 0$`, 1, 10*time.Second)
	// Sent right before the checkpoint: read before it or after restore,
	// but exactly once.
	rt := unix.Signal(35) // glibc's SIGRTMIN+1
	unix.Kill(p.pid, rt)
	unix.Kill(child, rt)

	img, _ := dumpKillTree(t, p, 2)
	r := restoreDetached(t, img, p)
	if got := fdinfoField(t, r.pid, pfd, "sigmask"); got != mask {
		t.Errorf("restored signalfd mask %s, want %s", got, mask)
	}
	if got := fdinfoField(t, r.pid, pfd, "flags"); got != flags {
		t.Errorf("restored signalfd flags %s, want %s", got, flags)
	}
	if !sameDescription(r.pid, pfd, child, cfd) {
		t.Errorf("parent fd %d and child fd %d are no longer one description", pfd, cfd)
	}
	r.waitLog(t, `(?m)^parent sig 35 value 0$`, 1, 10*time.Second)
	r.waitLog(t, `(?m)^child sig 35 value 0$`, 1, 10*time.Second)
	unix.Kill(child, unix.SIGUSR1)
	unix.Kill(r.pid, unix.SIGUSR1)
	r.waitLog(t, `(?m)^child sig 10 value 0$`, 1, 10*time.Second)
	r.waitLog(t, `(?m)^parent sig 10 value 0$`, 2, 10*time.Second)
	before := lastInt(p.log, `(?m)^parent alive (\d+)$`)
	r.waitInt(t, `(?m)^parent alive (\d+)$`, before+3, 10*time.Second)
	data, _ := os.ReadFile(p.log)
	for _, line := range []string{"parent sig 35 value 0\n", "child sig 35 value 0\n"} {
		if n := strings.Count(string(data), line); n != 1 {
			t.Errorf("%q read %d times, want once; log:\n%s", strings.TrimSpace(line), n, tailOf(data))
		}
	}
}
