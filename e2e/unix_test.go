package e2e

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestUnixSockets: every state of testdata/unixsock.c comes back, and the
// program proves each one after restore (socketpairs of the three types
// with unread data both ways and message boundaries, a path listener with
// its mode, backlog, accepted and waiting connections, an abstract
// listener, an unbound socket, a datagram socket on a removed path with
// messages from three senders and a socket connected to it, shutdown
// states, a closed peer, options and O_NONBLOCK).
func TestUnixSockets(t *testing.T) {
	setup(t, "unixsock")
	dir := t.TempDir()
	p := start(t, "unixsock", dir)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^checks done 10$`, 1, 10*time.Second)
	re := `(?m)^alive (\d+)$`
	r.waitInt(t, re, lastInt(p.log, re)+5, 10*time.Second)
}

// TestUnixDgramOutside: a datagram socket connected to a server outside
// the checkpoint (a socket of this test, which keeps running) is
// connected again by path at restore.
func TestUnixDgramOutside(t *testing.T) {
	setup(t, "unixsock")
	path := filepath.Join(t.TempDir(), "log.sock")
	srv, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	p := start(t, "unixsock", "dgram", path)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	p.signal(t, unix.SIGUSR1)
	wantDatagram(t, srv, "ping 1")
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	wantDatagram(t, srv, "ping 2")
}

func wantDatagram(t *testing.T, c *net.UnixConn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 100)
	n, _, err := c.ReadFromUnix(buf)
	if err != nil || string(buf[:n]) != want {
		t.Fatalf("the server outside got %q (%v), want %q", buf[:n], err, want)
	}
}

// TestUnixStreamExternal: a stream connection to a server outside the
// checkpoint does not fail the dump; the image records the fd as external.
func TestUnixStreamExternal(t *testing.T) {
	setup(t, "unixsock")
	path := filepath.Join(t.TempDir(), "srv.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := start(t, "unixsock", "stream", path)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	img := dump(t, p)
	var out struct {
		Processes []struct {
			Files []struct {
				FD       int    `json:"fd"`
				Kind     string `json:"kind"`
				External int    `json:"external"`
			} `json:"files"`
		} `json:"processes"`
	}
	if err := json.Unmarshal([]byte(quietChpox(t, "inspect", "--json", img)), &out); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range out.Processes[0].Files {
		if f.FD == 3 {
			found = f.Kind == "external" && f.External != 0
		}
	}
	if !found {
		t.Errorf("fd 3 of the image is not external: %+v", out.Processes[0].Files)
	}
	// The dumped process goes on, still connected.
	p.signal(t, unix.SIGUSR1)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 100)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ping 1" {
		t.Errorf("the server got %q (%v), want ping 1", buf[:n], err)
	}
	key := linkOf(p.pid, 3)
	killOriginal(t, p)

	// Restored with a new connection to the server as its fd 3: the
	// program's next ping (its first: the image was taken before it)
	// arrives on it.
	conn, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	connFile, err := conn.File()
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer connFile.Close()
	c2, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	rc := exec.Command(chpoxBin, "restore", "--detach", "--external", key+"=3", img)
	rc.ExtraFiles = []*os.File{connFile}
	if out, err := rc.CombinedOutput(); err != nil {
		t.Fatalf("restore --external %s=3: %v: %s", key, err, out)
	}
	r := adopt(t, "unixsock(restored)", p.pid, p.log)
	r.signal(t, unix.SIGUSR1)
	c2.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c2.Read(buf); err != nil || string(buf[:n]) != "ping 1" {
		t.Errorf("the server got %q (%v) on the connection handed to restore, want ping 1", buf[:n], err)
	}
	killOriginal(t, r)

	// Restored as a dropped connection: the next ping fails with EPIPE.
	mustChpox(t, "restore", "--detach", "--external", key+"=closed", img)
	r = adopt(t, "unixsock(restored, dropped)", p.pid, p.log)
	r.signal(t, unix.SIGUSR1)
	waitFor(t, 10*time.Second, "the dropped connection's send to fail with EPIPE", func() bool {
		b, _ := os.ReadFile(p.log)
		return strings.Contains(string(b), "FAIL ping: send (errno 32)\n")
	})
}

// TestUnixInFlight: a descriptor in flight (SCM_RIGHTS in a receive
// queue) is refused by name, and the process runs on untouched.
func TestUnixInFlight(t *testing.T) {
	setup(t, "unixsock")
	p := start(t, "unixsock", "inflight")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := filepath.Join(t.TempDir(), "x.img")
	r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
	wantFailure(t, r, 6, "pid "+strconv.Itoa(p.pid)+": fd 4: a UNIX stream socket with descriptors in flight")
	if _, err := os.Stat(img); err == nil {
		t.Errorf("the refused dump left %s", img)
	}
	re := `(?m)^alive (\d+)$`
	p.waitInt(t, re, lastInt(p.log, re)+5, 10*time.Second)
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("after the refused dump: %s", st)
	}
}
