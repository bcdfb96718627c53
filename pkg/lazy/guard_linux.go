package lazy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/internal/guardproc"
)

// GuardCommand is the argument that makes the chpox binary run as a lazy
// copy's guard (RunGuard) instead of its command line.
const GuardCommand = "__lazy-guard"

// If chpox died during the lazy copy, its userfaultfds would close, the
// kernel would unregister the areas, and every later first touch of a page
// not yet copied would silently read zero: memory corruption. The guard is
// a small process started before the tree runs that holds a pidfd of each
// process and its own copy of each userfaultfd, and a socket from chpox.
// When the socket closes without chpox releasing the guard, chpox died: the
// guard kills every process with SIGKILL, waits until each is gone, and
// only then exits, closing the userfaultfds. Until then they stay open, so
// a touch of a missing page waits (for a SIGKILL) instead of reading zero:
// no instruction of the tree ever sees a wrong page. It has its own
// session, so a Ctrl-C to chpox's process group does not take it along.
//
// Children the tree forks during the copy get userfaultfds of their own:
// chpox sends the guard a copy of each as it learns of it (Hold), and the
// guard stops the tree's processes (no more forks), kills their
// descendants, then them.

// Guard is a running guard.
type Guard struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	life *os.File // chpox's end of a SOCK_SEQPACKET pair
}

// StartGuard starts a guard for the processes pids and their userfaultfds.
// The guard gets, after stdin, stdout and stderr: its end of the life
// socket (3), a pidfd of each process, then each userfaultfd.
func StartGuard(pids []int, uffds []*os.File) (*Guard, error) {
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("start lazy-copy guard: %w", os.NewSyscallError("socketpair", err))
	}
	lifeR, lifeW := os.NewFile(uintptr(pair[1]), "guard life"), os.NewFile(uintptr(pair[0]), "guard life")
	defer lifeR.Close()
	extra := []*os.File{lifeR}
	for _, pid := range pids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			lifeW.Close()
			return nil, fmt.Errorf("start lazy-copy guard: pid %d: %w", pid, os.NewSyscallError("pidfd_open", err))
		}
		f := os.NewFile(uintptr(fd), "pidfd")
		defer f.Close()
		extra = append(extra, f)
	}
	extra = append(extra, uffds...)
	cmd, err := guardproc.Start("lazy-copy guard", GuardCommand, extra, pids)
	if err != nil {
		lifeW.Close()
		return nil, err
	}
	return &Guard{cmd: cmd, life: lifeW}, nil
}

// Hold gives the guard a copy of f, a userfaultfd of a process forked
// during the copy, to keep open until the tree is dead should chpox die.
func (g *Guard) Hold(f *os.File) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.life == nil {
		return nil
	}
	if err := unix.Sendmsg(int(g.life.Fd()), []byte("fd"), unix.UnixRights(int(f.Fd())), nil, 0); err != nil {
		return fmt.Errorf("lazy-copy guard: hand over a userfaultfd: %w", os.NewSyscallError("sendmsg", err))
	}
	return nil
}

// Release tells the guard that the copy is complete; it closes its copies
// and exits without doing anything.
func (g *Guard) Release() error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.life == nil {
		return nil
	}
	err := guardproc.Release("lazy-copy guard", g.cmd, g.life)
	g.life = nil
	return err
}

// RunGuard is the guard's whole life; it returns the exit code.
func RunGuard() int {
	var pids []int
	if err := json.NewDecoder(os.Stdin).Decode(&pids); err != nil {
		fmt.Fprintln(os.Stderr, "chpox lazy-copy guard:", err)
		return 1
	}
	// Messages on the life socket: "fd" with a userfaultfd to keep, or
	// "ok": every page is in. Its end without "ok": chpox died.
	buf, oob := make([]byte, 16), make([]byte, unix.CmsgSpace(4))
	for {
		n, _, _, _, err := unix.Recvmsg(3, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			break
		}
		if string(buf[:n]) == "ok" {
			return 0 // released: every page is in
		}
		// "fd": the received descriptor stays open until we exit.
	}
	// chpox died with pages still to copy: end the processes before their
	// userfaultfds (ours, fds 4+len(pids)...) close with our exit.
	for i := range pids {
		unix.PidfdSendSignal(4+i, unix.SIGSTOP, nil, 0)
	}
	time.Sleep(10 * time.Millisecond) // let a fork in progress finish
	for _, pid := range pids {
		for _, d := range descendants(pid) {
			unix.Kill(d, unix.SIGKILL)
		}
	}
	for i := range pids {
		unix.PidfdSendSignal(4+i, unix.SIGKILL, nil, 0)
	}
	for i, pid := range pids {
		fds := []unix.PollFd{{Fd: int32(4 + i), Events: unix.POLLIN}}
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); {
			if n, err := unix.Poll(fds, 1000); n > 0 || (err != nil && err != unix.EINTR) {
				break
			}
		}
		fmt.Fprintf(os.Stderr, "chpox lazy-copy guard: chpox died before the memory of pid %d was all restored: killed it\n", pid)
	}
	return 0
}

// descendants lists the processes below pid, children of any of its
// threads, recursively.
func descendants(pid int) []int {
	var out []int
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, task := range tasks {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/children", pid, task.Name()))
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
				out = append(out, descendants(c)...)
			}
		}
	}
	return out
}
