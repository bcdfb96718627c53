package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/netlock"
)

// Helpers of the tests of real programs (servers_test.go): servers started
// on loopback at a free port, with stdin /dev/null and stdout/stderr to a
// log, in a process group of their own that is killed whole at the end of
// the test; and clients that hold one connection each and never reconnect.

// needCommand returns the path of a program `make setup` installs.
func needCommand(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is needed (make setup installs it): %v", name, err)
	}
	return path
}

// freePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// server is a real program under test: its main process and the group it leads.
type server struct {
	*proc
	addr string // 127.0.0.1:PORT
}

// startServer starts exe like startExe, but leading a process group of its
// own (nginx's workers, and any other child, are in it); at the end of the
// test the whole group is killed, the original and the restored one, and
// every process of it reaped. A server that forked a daemon out of its
// group would fail the test there.
func startServer(t *testing.T, name, exe string, port int, args ...string) *server {
	t.Helper()
	f, logPath := logFile(t, name)
	defer f.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := startCmd(t, name, cmd, logPath)
	// Registered after startCmd's kill of the main process, so it runs
	// first: the whole group goes.
	t.Cleanup(func() { killGroup(t, p.pid) })
	t.Logf("started %s %q: pid %d, log %s", exe, args, p.pid, logPath)
	s := &server{proc: p, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	s.waitListening(t, 20*time.Second)
	return s
}

// killGroup kills every process of group pgid and reaps those that are our
// children (as a subreaper, orphans of the group are). Bounded: 10 s.
func killGroup(t *testing.T, pgid int) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		left := groupMembers(pgid)
		if len(left) == 0 {
			return
		}
		unix.Kill(-pgid, unix.SIGKILL)
		for _, pid := range left {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("processes of group %d outlive the test: %v", pgid, groupMembers(pgid))
}

// groupMembers lists the live (not zombie) processes of group pgid.
func groupMembers(pgid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
		s := string(stat)
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 2 && fields[0] != "Z" && fields[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}

// waitListening waits until the server accepts connections.
func (s *server) waitListening(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", s.addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if s.exited() || time.Now().After(deadline) {
			t.Fatalf("%s (pid %d, %s) does not accept connections at %s within %v: %v; log:\n%s",
				s.name, s.pid, s.status, s.addr, timeout, err, tail(s.log))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// workers returns the children of the server's main process.
func (s *server) workers() []int { return childrenOf(s.pid) }

// dumpKillServer checkpoints the server's tree with --kill and waits until
// the PIDs of the main process and of others (its workers) are free.
func dumpKillServer(t *testing.T, s *server, others []int) string {
	t.Helper()
	img := dumpKill(t, s.proc)
	for _, pid := range others {
		waitPIDFree(t, pid, 10*time.Second)
	}
	return img
}

// keepAlive is one keep-alive HTTP/1.1 client connection. It never
// reconnects: an error means the connection did not survive.
type keepAlive struct {
	c net.Conn
	r *bufio.Reader
}

func dialKeepAlive(addr string) (*keepAlive, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &keepAlive{c: c, r: bufio.NewReader(c)}, nil
}

// get sends GET path on the connection and returns the status code, the
// body and whether the server keeps the connection open. The whole
// exchange must end within timeout (a checkpoint in between included).
func (h *keepAlive) get(path string, timeout time.Duration) (int, string, bool, error) {
	h.c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(h.c, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path); err != nil {
		return 0, "", false, err
	}
	res, err := http.ReadResponse(h.r, nil)
	if err != nil {
		return 0, "", false, err
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	res.Body.Close()
	if err != nil {
		return 0, "", false, err
	}
	return res.StatusCode, string(body), !res.Close, nil
}

func (h *keepAlive) Close() error { return h.c.Close() }

// unlockIfFailed takes the connections of clients out of the network lock
// at the end of a failed test: a dump --kill whose restore never came
// leaves them there (the lock is the machine's, shared by every test).
func unlockIfFailed(t *testing.T, conns ...net.Conn) {
	var locked []netlock.Conn
	for _, c := range conns {
		server, client := c.RemoteAddr().(*net.TCPAddr).AddrPort(), c.LocalAddr().(*net.TCPAddr).AddrPort()
		locked = append(locked, netlock.Conn{
			Local: netip.AddrPortFrom(server.Addr().Unmap(), server.Port()),
			Peer:  netip.AddrPortFrom(client.Addr().Unmap(), client.Port()),
		})
	}
	t.Cleanup(func() {
		if t.Failed() {
			if err := netlock.Unlock(locked); err != nil {
				t.Log(err)
			}
		}
	})
}
