// Package external handles descriptors whose object lives on outside the
// checkpoint: a pipe to a process that is not dumped (`./app | tee log`, a
// CI runner's pipe), a socket connected to an outside server. Such an
// object cannot be rebuilt connected to its outside end, so dump records
// only what it was, and restore connects the descriptor to one of its own,
// the way a shell connects a job: stdin, stdout and stderr to chpox
// restore's own, any other to a descriptor the user names.
//
// Bytes queued in such an object are not saved: they stay in the outside
// object, for whoever reads it there.
package external

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// Holders maps the link targets of every pipe and socket descriptor held
// by a process that is neither in tree nor chpox ("pipe:[INODE]",
// "socket:[INODE]") to one such process. One pass over /proc serves every
// object of a dump.
func Holders(tree map[int]bool) map[string]int {
	out := map[string]int{}
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || tree[pid] || pid == self {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if strings.HasPrefix(l, "pipe:[") || strings.HasPrefix(l, "socket:[") {
				if _, seen := out[l]; !seen {
					out[l] = pid
				}
			}
		}
	}
	return out
}

// Choice is what the user gives an external descriptor at restore.
type Choice struct {
	FD     int  // a descriptor of chpox restore, handed over as it is
	Closed bool // a pipe or socket whose other end is closed: EOF, EPIPE
	Null   bool // /dev/null
}

// ParseChoice parses KEY=FD, KEY=closed or KEY=null.
func ParseChoice(s string) (string, Choice, error) {
	key, val, ok := strings.Cut(s, "=")
	if !ok || key == "" {
		return "", Choice{}, fmt.Errorf("%q: want KEY=FD, KEY=closed or KEY=null (KEY as `chpox inspect` lists it)", s)
	}
	switch val {
	case "closed":
		return key, Choice{Closed: true}, nil
	case "null":
		return key, Choice{Null: true}, nil
	}
	fd, err := strconv.Atoi(val)
	if err != nil || fd < 0 {
		return "", Choice{}, fmt.Errorf("%q: %q is not a descriptor number, closed or null", s, val)
	}
	return key, Choice{FD: fd}, nil
}

// ErrNoChoice reports an external descriptor the user gave nothing for.
var ErrNoChoice = errors.New("no descriptor given for it")

// Open returns chpox's file for descriptor f of a restored process, which
// was e: the user's choice for e's key if there is one, else chpox's own
// descriptor of the same number for stdin, stdout and stderr.
func Open(e format.External, f format.File, choices map[string]Choice) (*os.File, error) {
	c, err := choose(e, f, choices)
	if err != nil {
		return nil, err
	}
	switch {
	case c.Null:
		return os.OpenFile(os.DevNull, f.Flags&unix.O_ACCMODE|unix.O_CLOEXEC, 0)
	case c.Closed:
		return closedEnd(e, f)
	}
	// A copy, so that chpox closing its own objects leaves it alone.
	fd, err := unix.FcntlInt(uintptr(c.FD), unix.F_DUPFD_CLOEXEC, 3)
	if err != nil {
		return nil, fmt.Errorf("fd %d (%s): chpox restore's own fd %d: %w", f.FD, e.Key, c.FD, os.NewSyscallError("fcntl(F_DUPFD_CLOEXEC)", err))
	}
	return os.NewFile(uintptr(fd), e.Key), nil
}

// Check tells whether Open will find what to give f.
func Check(e format.External, f format.File, choices map[string]Choice) error {
	c, err := choose(e, f, choices)
	if err == nil && !c.Null && !c.Closed {
		if _, ferr := unix.FcntlInt(uintptr(c.FD), unix.F_GETFD, 0); ferr != nil {
			err = fmt.Errorf("fd %d was %s %s: chpox restore has no fd %d to give it (%w)", f.FD, e.What, e.Key, c.FD, ferr)
		}
	}
	return err
}

func choose(e format.External, f format.File, choices map[string]Choice) (Choice, error) {
	if c, ok := choices[e.Key]; ok {
		return c, nil
	}
	if f.FD <= 2 {
		return Choice{FD: f.FD}, nil
	}
	if e.What == "terminal" {
		// Another fd on the job's terminal (bash's 255): the terminal
		// chpox restore runs in, as for stdin.
		for fd := 0; fd <= 2; fd++ {
			if _, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
				return Choice{FD: fd}, nil
			}
		}
		return Choice{Null: true}, nil
	}
	return Choice{}, fmt.Errorf("fd %d was %s %s, shared with %s outside the checkpoint: %w; restore with --external '%s=FD' (a descriptor of chpox restore), '%s=closed' or '%s=null'",
		f.FD, e.What, e.Key, holder(e), ErrNoChoice, e.Key, e.Key, e.Key)
}

func holder(e format.External) string {
	if e.Peer > 0 {
		return fmt.Sprintf("pid %d", e.Peer)
	}
	return "a process"
}

// closedEnd makes what a program sees when the other end went away: for a
// socket, one end of a socket pair whose other end is closed; for a pipe,
// the end of a new pipe with the same direction whose other end is closed.
func closedEnd(e format.External, f format.File) (*os.File, error) {
	var fds [2]int
	keep := 0
	if strings.HasPrefix(e.Key, "socket:") {
		typ := unix.SOCK_STREAM
		if e.SockType != 0 {
			typ = e.SockType
		}
		pair, err := unix.Socketpair(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, os.NewSyscallError("socketpair", err)
		}
		fds = pair
	} else {
		if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
			return nil, os.NewSyscallError("pipe2", err)
		}
		if f.Flags&unix.O_ACCMODE != unix.O_RDONLY {
			keep = 1
		}
	}
	unix.Close(fds[1-keep])
	return os.NewFile(uintptr(fds[keep]), e.Key), nil
}
