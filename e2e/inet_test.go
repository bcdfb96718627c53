package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	goProgsMu sync.Mutex
	goProgs   = map[string]error{}
)

// buildGo builds ../testdata/NAME (a Go program) once.
func buildGo(t *testing.T, name string) string {
	t.Helper()
	exe := filepath.Join(workDir, name)
	goProgsMu.Lock()
	defer goProgsMu.Unlock()
	err, done := goProgs[name]
	if !done {
		root, rerr := repoRoot()
		if rerr != nil {
			t.Fatal(rerr)
		}
		cmd := exec.Command("go", "build", "-o", exe, "./testdata/"+name)
		cmd.Dir = root
		if out, berr := cmd.CombinedOutput(); berr != nil {
			err = fmt.Errorf("go build %s: %v\n%s", name, berr, out)
		}
		goProgs[name] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return exe
}

// cleanNetLock removes the nftables table chpox keeps its network lock in,
// should a test leave one.
func cleanNetLock(t *testing.T) {
	t.Cleanup(func() {
		if exec.Command("nft", "list", "table", "inet", "chpox").Run() == nil {
			exec.Command("nft", "delete", "table", "inet", "chpox").Run()
		}
	})
}

// lockedElements lists the elements of the network lock (empty without).
func lockedElements() string {
	var all []string
	for _, set := range []string{"conns4", "conns6"} {
		out, _ := exec.Command("nft", "list", "set", "inet", "chpox", set).Output()
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, " . ") && !strings.Contains(l, "type ") {
				all = append(all, strings.TrimSpace(l))
			}
		}
	}
	return strings.Join(all, " ")
}

// httpClient is a keep-alive HTTP client on one raw TCP connection: it
// cannot reconnect, so every reply proves that connection survived.
type httpClient struct {
	c     net.Conn
	r     *bufio.Reader
	local string
	rest  string
}

func dialHTTP(t *testing.T, addr string) *httpClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &httpClient{c: c, r: bufio.NewReader(c), local: c.LocalAddr().String()}
}

func (h *httpClient) send(i int) error {
	h.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := fmt.Fprintf(h.c, "GET /n?i=%d HTTP/1.1\r\nHost: test\r\n\r\n", i)
	return err
}

// receive reads one reply and returns its body.
func (h *httpClient) receive() (string, error) {
	h.c.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(h.r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// check sends request i and checks the reply names i and this client's
// address, which the server sees as the connection's peer.
func (h *httpClient) check(t *testing.T, i int, want func(i int, local string) string) {
	t.Helper()
	if err := h.send(i); err != nil {
		t.Fatalf("client %s: request %d: %v", h.local, i, err)
	}
	h.expect(t, i, want)
}

func (h *httpClient) expect(t *testing.T, i int, want func(i int, local string) string) {
	t.Helper()
	body, err := h.receive()
	if err != nil {
		t.Fatalf("client %s: reply %d: %v", h.local, i, err)
	}
	w := want(i, h.local)
	if !strings.HasPrefix(body, w) {
		t.Fatalf("client %s: reply %d is %q, want %q...", h.local, i, body, w)
	}
	// What follows (the Go server's "conn N)") must not change: the server
	// serves every request on the connection it accepted first.
	if rest := body[len(w):]; h.rest == "" {
		h.rest = rest
	} else if rest != h.rest {
		t.Fatalf("client %s: reply %d came %q, before %q", h.local, i, rest, h.rest)
	}
	if got := h.c.LocalAddr().String(); got != h.local {
		t.Fatalf("client's local address changed from %s to %s", h.local, got)
	}
}

// serverRestart checkpoints a server with --kill while its clients keep
// their connections, one of them with a request sent while the server is
// gone, and restores it detached: every reply must come on the same
// connection.
func serverRestart(t *testing.T, srv *proc, addr string, want func(i int, local string) string) {
	t.Helper()
	var clients []*httpClient
	for range 3 {
		clients = append(clients, dialHTTP(t, addr))
	}
	for i, c := range clients {
		c.check(t, 100+i, want)
		c.check(t, 200+i, want)
	}
	img := filepath.Join(t.TempDir(), "srv.img")
	r := mustChpox(t, "dump", fmt.Sprint(srv.pid), "-o", img, "--kill")
	if !strings.Contains(r.stderr, "3 TCP connections to peers outside the checkpoint are held") {
		t.Errorf("dump --kill did not say what happens to the 3 connections: %q", r.stderr)
	}
	if st := srv.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --kill the server ended with %q", st)
	}
	waitPIDFree(t, srv.pid, 10*time.Second)
	locked := lockedElements()
	for _, c := range clients {
		_, port, _ := net.SplitHostPort(c.local)
		if !strings.Contains(locked, " "+port+" . ") {
			t.Errorf("the network lock lacks client %s: %q", c.local, locked)
		}
	}
	// A request while the server is gone: without the lock its packets
	// would meet a closed port and the reset would end the connection.
	if err := clients[0].send(300); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	restored := restoreDetached(t, img, srv)
	clients[0].expect(t, 300, want)
	for round := range 5 {
		for i, c := range clients {
			c.check(t, 400+10*round+i, want)
		}
	}
	if l := lockedElements(); l != "" {
		t.Errorf("the restore left the network lock: %q", l)
	}
	if restored.exited() {
		t.Fatalf("the restored server ended: %s", restored.status)
	}
}

// TestTCPServerGo: a Go net/http server with three keep-alive clients
// outside the tree (this test), over IPv4 and IPv6, moved with dump --kill
// and restore --detach: same connections, every reply right.
func TestTCPServerGo(t *testing.T) {
	setup(t)
	cleanNetLock(t)
	exe := buildGo(t, "httpserver")
	for _, tc := range []struct{ name, listen, dial string }{
		{"ipv4", "127.0.0.1:0", "127.0.0.1"},
		{"ipv6", "[::1]:0", "::1"},
		{"dualstack", "[::]:0", "127.0.0.1"}, // an IPv6 socket with IPV6_V6ONLY off, IPv4 clients
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startExe(t, "httpserver", exe, "-addr", tc.listen)
			port := srv.waitLog(t, `listening (\d+)`, 1, 10*time.Second)[1]
			want := func(i int, local string) string {
				return fmt.Sprintf("reply %d to %s (conn ", i, local)
			}
			serverRestart(t, srv, net.JoinHostPort(tc.dial, port), want)
		})
	}
}
