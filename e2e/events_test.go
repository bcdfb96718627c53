package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// eventsRestore dumps an events program (and its child, if any) with
// --kill, restores it, sends SIGUSR1 and waits for "want". The program
// checks its own state (testdata/events.c); inspect must show detail.
func eventsRestore(t *testing.T, p *proc, want, detail string, children ...int) {
	t.Helper()
	killAtEnd(t, children...)
	img := dumpKill(t, p)
	for _, c := range children {
		waitPIDFree(t, c, 10*time.Second)
	}
	if detail != "" {
		if text := quietChpox(t, "inspect", img); !strings.Contains(text, detail) {
			t.Errorf("inspect does not show %q:\n%s", detail, text)
		}
	}
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, want, 1, 10*time.Second)
}

// TestEventsInotify: an inotify instance whose watches have wds 2 and 4 (1
// and 3 removed) comes back with both watches under those numbers, blocking
// as it was, IN_ONESHOT kept, and no event the program did not cause.
func TestEventsInotify(t *testing.T) {
	setup(t, "events")
	dir := t.TempDir()
	p := start(t, "events", "inotify", dir)
	p.waitLog(t, `(?m)^ready wds 2 4$`, 1, 10*time.Second)
	eventsRestore(t, p, `(?m)^inotify ok 2$`, "wd 4 "+filepath.Join(dir, "f"))
}

// tmpfs mounts a tmpfs of its own for the test: fanotify marks on its
// mount and filesystem see only what the test does.
func tmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("chpox-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// TestEventsFanotify: a fanotify group with an inode mark, a mount mark, a
// filesystem mark and an ignore mark comes back with all four: exactly the
// events they select arrive.
func TestEventsFanotify(t *testing.T) {
	setup(t, "events")
	dir := tmpfs(t)
	p := start(t, "events", "fanotify", dir)
	p.waitLog(t, `(?m)^ready fanotify$`, 1, 10*time.Second)
	eventsRestore(t, p, `(?m)^fanotify ok$`, "mount mark "+dir)
}

// TestEventsPidfd: pidfds of a live child, of the process itself
// (PIDFD_NONBLOCK), of a zombie child and of a reaped child come back: the
// child's can signal it and waitid(P_PIDFD) reaps it, the zombie's reaps
// the zombie with its status, the reaped one polls readable.
func TestEventsPidfd(t *testing.T) {
	setup(t, "events")
	p := start(t, "events", "pidfd")
	m := p.waitLog(t, `(?m)^ready pidfd child (\d+) zombie (\d+)$`, 1, 10*time.Second)
	eventsRestore(t, p, `(?m)^pidfd ok \d+$`, "pidfd of a reaped process", atoi(m[1]), atoi(m[2]))
}

// TestEventsEpoll: one epoll set shared by a parent and its child, with
// EPOLLET, a fired EPOLLONESHOT, EPOLLEXCLUSIVE, a watch whose fd was dup'd
// and closed and one whose fd now holds another file: every event comes as
// before, and a watch the child adds shows in the parent's set.
func TestEventsEpoll(t *testing.T) {
	setup(t, "events")
	p := start(t, "events", "epoll")
	child := atoi(p.waitLog(t, `(?m)^ready epoll child (\d+)`, 1, 10*time.Second)[1])
	eventsRestore(t, p, `(?m)^epoll ok$`, "watch of fd 7 is description", child)
}

// TestEventsSIGIO: a pipe with F_SETOWN, F_SETSIG and O_ASYNC still sends
// the chosen signal, with si_fd, after restore.
func TestEventsSIGIO(t *testing.T) {
	setup(t, "events")
	p := start(t, "events", "sigio")
	p.waitLog(t, `(?m)^ready sigio$`, 1, 10*time.Second)
	eventsRestore(t, p, `(?m)^sigio ok$`, "SIGIO owner process")
}

// TestEventsProc: /proc/self/status and a directory fd on /proc/CHILD,
// opened before the dump, read the restored processes.
func TestEventsProc(t *testing.T) {
	setup(t, "events")
	p := start(t, "events", "proc")
	child := atoi(p.waitLog(t, `(?m)^ready proc child (\d+)$`, 1, 10*time.Second)[1])
	eventsRestore(t, p, `(?m)^proc ok$`, "", child)
}

// TestEventsRefused: what cannot come back exactly is refused by name at
// dump (exit 6), and the process runs on untraced.
func TestEventsRefused(t *testing.T) {
	for _, c := range []struct {
		mode  string
		words []string
	}{
		{"inotify-queued", []string{"fd 3", "inotify", "unread events"}},
		{"aio", []string{"asynchronous I/O", "io_setup"}},
		{"fanotify-queued", []string{"fd 3", "fanotify", "unread events"}},
		{"pidfd-outside", []string{"fd 3", "pidfd of process", "not in the checkpoint"}},
		{"epoll-later", []string{"fd 3", "epoll", "only process", "restore makes after this one"}},
		{"owner-outside", []string{"fd 3", "SIGIO owner", "not in the checkpoint"}},
		{"proc-outside", []string{"fd 3", "/proc/1/stat", "process 1, which is not in the checkpoint"}},
	} {
		t.Run(c.mode, func(t *testing.T) {
			setup(t, "events")
			args := []string{c.mode}
			switch c.mode {
			case "inotify-queued":
				args = append(args, t.TempDir())
			case "fanotify-queued":
				args = append(args, tmpfs(t))
			}
			p := start(t, "events", args...)
			p.waitLog(t, `(?m)^ready`, 1, 10*time.Second)
			killAtEnd(t, children(p.pid)...)
			img := filepath.Join(t.TempDir(), "x.img")
			r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
			wantFailure(t, r, 6, c.words...)
			if _, err := os.Stat(img); err == nil {
				t.Errorf("the refused dump left %s", img)
			}
			re := `(?m)^alive (\d+)$`
			p.waitInt(t, re, lastInt(p.log, re)+5, 10*time.Second)
			if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
				t.Errorf("after the refused dump: %s", st)
			}
		})
	}
}

// children lists the child processes of pid.
func children(pid int) []int {
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
	var out []int
	for _, f := range strings.Fields(string(b)) {
		out = append(out, atoi(f))
	}
	return out
}
