package netlock

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/internal/guardproc"
)

// GuardCommand is the argument that makes the chpox binary run as a guard
// (RunGuard) instead of its command line.
const GuardCommand = "__netlock-guard"

// A dump puts a process's TCP connections into repair mode while it reads
// them, and a `dump --kill` also locks them, until the processes are
// killed. If chpox dies in between (SIGKILL, OOM, a timeout), nothing of
// chpox would take the connections out of repair mode or lift the lock:
// the job would run on with dead connections. A guard is a small process
// started before that, holding its own copy of every such socket and a
// pipe from chpox. When the pipe closes without chpox releasing the guard,
// chpox died: for each socket whose process still lives the guard leaves
// repair mode (without a window probe) and lifts that connection's lock;
// sockets of processes that were killed stay as they are (in repair mode a
// close is silent, and the lock waits for the restore).

// GuardSocket is one socket the guard watches.
type GuardSocket struct {
	File      *os.File // chpox's copy of the socket
	Owner     int      // the process that holds it
	ReuseAddr bool     // SO_REUSEADDR to put back (repair mode forces reuse)
	Lock      *Conn    // the connection's lock, if it is locked
}

// Guard is a running guard.
type Guard struct {
	cmd  *exec.Cmd
	life *os.File
}

// guardSocket is what the guard is told of each socket, besides its fds.
type guardSocket struct {
	Owner     int   `json:"owner"`
	ReuseAddr bool  `json:"reuseaddr"`
	Lock      *Conn `json:"lock,omitempty"`
}

// StartGuard starts a guard for socks. The guard gets, after stdin, stdout
// and stderr: the read end of the life pipe (3), a pidfd of each owner and
// then each socket; its own session, so that a Ctrl-C to chpox's process
// group does not take it along.
func StartGuard(socks []GuardSocket) (*Guard, error) {
	lifeR, lifeW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start network guard: %w", err)
	}
	defer lifeR.Close()
	extra := []*os.File{lifeR}
	var pidfds []*os.File
	defer func() {
		for _, f := range pidfds {
			f.Close()
		}
	}()
	desc := make([]guardSocket, len(socks))
	for i, s := range socks {
		fd, err := unix.PidfdOpen(s.Owner, 0)
		if err != nil {
			lifeW.Close()
			return nil, fmt.Errorf("start network guard: pid %d: %w", s.Owner, os.NewSyscallError("pidfd_open", err))
		}
		pidfds = append(pidfds, os.NewFile(uintptr(fd), "pidfd"))
		desc[i] = guardSocket{Owner: s.Owner, ReuseAddr: s.ReuseAddr, Lock: s.Lock}
	}
	extra = append(extra, pidfds...)
	for _, s := range socks {
		extra = append(extra, s.File)
	}
	cmd, err := guardproc.Start("network guard", GuardCommand, extra, desc)
	if err != nil {
		lifeW.Close()
		return nil, err
	}
	return &Guard{cmd: cmd, life: lifeW}, nil
}

// Release tells the guard that chpox finished with the sockets; it closes
// its copies and exits without changing anything.
func (g *Guard) Release() error {
	if g == nil || g.life == nil {
		return nil
	}
	err := guardproc.Release("network guard", g.cmd, g.life)
	g.life = nil
	return err
}

// RunGuard is the guard's whole life; it returns the exit code.
func RunGuard() int {
	var socks []guardSocket
	if err := json.NewDecoder(os.Stdin).Decode(&socks); err != nil {
		fmt.Fprintln(os.Stderr, "chpox network guard:", err)
		return 1
	}
	life := os.NewFile(3, "life")
	word := make([]byte, 2)
	if n, _ := io.ReadFull(life, word); n == 2 && string(word) == "ok" {
		return 0 // released: chpox finished
	}
	// chpox died before it finished: give live processes their
	// connections back.
	var unlock []Conn
	var errs []error
	for i, s := range socks {
		pidfd, sock := 4+i, 4+len(socks)+i
		if !alive(pidfd, s.Owner) {
			continue // killed by --kill: keep repair mode and the lock for the restore
		}
		if err := unix.SetsockoptInt(sock, unix.IPPROTO_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF_NO_WP); err != nil {
			errs = append(errs, fmt.Errorf("leave repair mode: %w", err))
		}
		if s.ReuseAddr {
			unix.SetsockoptInt(sock, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
		}
		if s.Lock != nil {
			unlock = append(unlock, *s.Lock)
		}
	}
	if len(unlock) > 0 {
		errs = append(errs, Unlock(unlock))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(os.Stderr, "chpox network guard:", err)
		return 1
	}
	return 0
}

// alive tells whether the process of a pidfd runs on: a pidfd polls
// readable once its process has exited, and one that --kill sent SIGKILL
// may still be on its way out (SIGKILL pending in ShdPnd).
func alive(pidfd, pid int) bool {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, 0); err != nil || n != 0 {
		return false
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "ShdPnd:"); ok {
			pending, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && pending&(1<<(unix.SIGKILL-1)) == 0
		}
	}
	return true
}
