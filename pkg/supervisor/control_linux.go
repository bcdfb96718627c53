package supervisor

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/procinfo"
)

// The control socket lets `chpox dump` checkpoint a tree that `chpox run`
// traces (a second tracer cannot attach). It lives in the abstract
// namespace, named after the supervisor's PID, so nothing is left on disk;
// the peer's credentials are checked instead of file permissions.

func socketName(supervisor int) string { return fmt.Sprintf("@chpox-run-%d", supervisor) }

type request struct {
	PID    int    `json:"pid"`
	Output string `json:"output"`
	Kill   bool   `json:"kill"`
	reply  chan response
}

type response struct {
	Processes   int    `json:"processes"`
	Bytes       int64  `json:"bytes"`
	DataBytes   int64  `json:"data_bytes"`
	FrozenNS    int64  `json:"frozen_ns"`
	Error       string `json:"error,omitempty"`
	Unsupported bool   `json:"unsupported,omitempty"`
}

func reply(res *dump.Result, err error) response {
	if err != nil {
		return response{Error: err.Error(), Unsupported: errors.Is(err, dump.ErrUnsupported)}
	}
	return response{Processes: res.Processes, Bytes: res.Bytes, DataBytes: res.DataBytes, FrozenNS: int64(res.Frozen)}
}

// Listen serves dump requests until the process exits.
func (s *Supervisor) Listen() error {
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socketName(os.Getpid()), Net: "unix"})
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	go func() {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return nil
}

func (s *Supervisor) serve(c *net.UnixConn) {
	defer c.Close()
	if !allowed(c) {
		json.NewEncoder(c).Encode(response{Error: "permission denied: only root or the job's owner may checkpoint it"})
		return
	}
	r := &request{reply: make(chan response, 1)}
	if err := json.NewDecoder(c).Decode(r); err != nil {
		return
	}
	if r.PID != 0 && procinfo.TracerPID(r.PID) != os.Getpid() {
		json.NewEncoder(c).Encode(response{Error: fmt.Sprintf("pid %d is not part of this job", r.PID)})
		return
	}
	if !filepath.IsAbs(r.Output) {
		json.NewEncoder(c).Encode(response{Error: fmt.Sprintf("output %q is not an absolute path", r.Output)})
		return
	}
	s.mu.Lock()
	s.pending = append(s.pending, r)
	s.mu.Unlock()
	if err := s.wake(); err != nil {
		s.mu.Lock()
		s.pending = slices.DeleteFunc(s.pending, func(q *request) bool { return q == r })
		s.mu.Unlock()
		json.NewEncoder(c).Encode(response{Error: fmt.Sprintf("wake the supervisor: %v", err)})
		return
	}
	json.NewEncoder(c).Encode(<-r.reply)
}

func allowed(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return err == nil && (cred.Uid == 0 || int(cred.Uid) == os.Geteuid())
}

// ErrNotSupervised means no `chpox run` answers for that process.
var ErrNotSupervised = errors.New("not supervised by chpox run")

// RequestDump asks the `chpox run` that traces pid (supervisor is its PID)
// for a checkpoint of its tree into out.
func RequestDump(supervisor, pid int, out string, kill bool) (*dump.Result, error) {
	c, err := net.DialTimeout("unix", socketName(supervisor), 2*time.Second)
	if err != nil {
		return nil, fmt.Errorf("pid %d is traced by pid %d: %w", pid, supervisor, ErrNotSupervised)
	}
	defer c.Close()
	// A checkpoint of a large job takes seconds; an hour means it is stuck.
	c.SetDeadline(time.Now().Add(time.Hour))
	if err := json.NewEncoder(c).Encode(request{PID: pid, Output: out, Kill: kill}); err != nil {
		return nil, fmt.Errorf("ask chpox run (pid %d): %w", supervisor, err)
	}
	var r response
	if err := json.NewDecoder(c).Decode(&r); err != nil {
		return nil, fmt.Errorf("ask chpox run (pid %d): %w", supervisor, err)
	}
	if r.Error != "" {
		if r.Unsupported {
			msg := strings.TrimSuffix(r.Error, ": "+dump.ErrUnsupported.Error())
			return nil, fmt.Errorf("chpox run (pid %d): %s: %w", supervisor, msg, dump.ErrUnsupported)
		}
		return nil, fmt.Errorf("chpox run (pid %d): %s", supervisor, r.Error)
	}
	return &dump.Result{PID: pid, Processes: r.Processes, Bytes: r.Bytes, DataBytes: r.DataBytes, Frozen: time.Duration(r.FrozenNS)}, nil
}
