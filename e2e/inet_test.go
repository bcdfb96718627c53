package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestTCPServerPython: python3's http.server (threads, keep-alive) moved the
// same way.
func TestTCPServerPython(t *testing.T) {
	setup(t)
	cleanNetLock(t)
	srv := start(t, "httpserver.py", "127.0.0.1")
	port := srv.waitLog(t, `listening (\d+)`, 1, 10*time.Second)[1]
	serverRestart(t, srv, "127.0.0.1:"+port, func(i int, local string) string { return fmt.Sprintf("reply %d to %s\n", i, local) })
}

// TestTCPReusePort: a listener with SO_REUSEPORT keeps it (another
// listener can share its port after the restore) and its clients.
func TestTCPReusePort(t *testing.T) {
	setup(t)
	cleanNetLock(t)
	srv := startExe(t, "httpserver", buildGo(t, "httpserver"), "-addr", "127.0.0.1:0", "-reuseport")
	port := srv.waitLog(t, `listening (\d+)`, 1, 10*time.Second)[1]
	serverRestart(t, srv, "127.0.0.1:"+port, func(i int, local string) string { return fmt.Sprintf("reply %d to %s (conn ", i, local) })
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: atoi(port)}); err != nil {
		t.Fatalf("a second SO_REUSEPORT listener cannot bind port %s: %v (the restored listener lost SO_REUSEPORT)", port, err)
	}
}

// startHTTPClients starts the Go HTTP server on 127.0.0.1 and n keep-alive
// clients outside the tree; want is the reply a client checks.
func startHTTPClients(t *testing.T, n int) (*proc, []*httpClient, func(int, string) string) {
	t.Helper()
	setup(t)
	cleanNetLock(t)
	srv := startExe(t, "httpserver", buildGo(t, "httpserver"), "-addr", "127.0.0.1:0")
	port := srv.waitLog(t, `listening (\d+)`, 1, 10*time.Second)[1]
	want := func(i int, local string) string { return fmt.Sprintf("reply %d to %s (conn ", i, local) }
	var clients []*httpClient
	for range n {
		clients = append(clients, dialHTTP(t, "127.0.0.1:"+port))
	}
	return srv, clients, want
}

// TestTCPDumpNoKill: a dump that lets the server run leaves its
// connections as they were: repair mode was on only while they were read.
func TestTCPDumpNoKill(t *testing.T) {
	srv, clients, want := startHTTPClients(t, 2)
	for i, c := range clients {
		c.check(t, i, want)
	}
	// One request is under way while the dump runs.
	if err := clients[0].send(50); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		r := mustChpox(t, "dump", fmt.Sprint(srv.pid), "-o", filepath.Join(t.TempDir(), "srv.img"))
		if !strings.Contains(r.stderr, "2 TCP connections to peers outside the checkpoint go on") {
			t.Errorf("dump did not say what the image does with the connections: %q", r.stderr)
		}
	}
	clients[0].expect(t, 50, want)
	for round := range 10 {
		for i, c := range clients {
			c.check(t, 100+10*round+i, want)
		}
	}
	if l := lockedElements(); l != "" {
		t.Errorf("a dump without --kill set the network lock: %q", l)
	}
}

// TestTCPPairInTree: both ends of a connection in the tree, megabytes in
// flight both ways, over IPv4 and IPv6; every byte is checked.
func TestTCPPairInTree(t *testing.T) {
	setup(t, "tcppair")
	cleanNetLock(t)
	for _, v := range []string{"4", "6"} {
		t.Run("ipv"+v, func(t *testing.T) {
			p := start(t, "tcppair", v)
			p.waitLog(t, `parent got \d+`, 3, 10*time.Second)
			img := dumpKill(t, p)
			var top struct {
				Objects struct {
					InetSockets []struct {
						State  string `json:"state"`
						Repair *struct {
							SendQueue []struct{ Len int } `json:"send_queue"`
							RecvQueue []struct{ Len int } `json:"recv_queue"`
						} `json:"repair"`
					} `json:"inet_sockets"`
				} `json:"objects"`
			}
			if err := json.Unmarshal([]byte(quietChpox(t, "inspect", "--json", img)), &top); err != nil {
				t.Fatal(err)
			}
			queued := 0
			for _, s := range top.Objects.InetSockets {
				if s.Repair != nil && len(s.Repair.SendQueue) > 0 && len(s.Repair.RecvQueue) > 0 {
					queued++
				}
			}
			if queued != 2 {
				t.Fatalf("want both ends with data in both queues in the image, got %d: %+v", queued, top.Objects.InetSockets)
			}
			for _, ip := range imageProcs(t, img) {
				waitPIDFree(t, ip.PID, 10*time.Second) // the child, orphaned to us
			}
			r := restoreDetached(t, img, p)
			r.waitLog(t, `pair ok`, 1, 30*time.Second)
		})
	}
}

// TestUDPQueue: queued datagrams come back in order with their content and
// their senders' addresses: senders in the process (one bound, one
// connected) and one outside it, over IPv4 and IPv6.
func TestUDPQueue(t *testing.T) {
	setup(t, "udpqueue")
	for _, v := range []string{"4", "6"} {
		t.Run("ipv"+v, func(t *testing.T) {
			trigger := filepath.Join(t.TempDir(), "go")
			p := start(t, "udpqueue", v, trigger)
			ports := p.waitLog(t, `ports (\d+) (\d+) (\d+)`, 1, 10*time.Second)
			p.waitLog(t, `queued`, 1, 10*time.Second)
			host := "127.0.0.1"
			if v == "6" {
				host = "::1"
			}
			out, err := net.Dial("udp", net.JoinHostPort(host, ports[1]))
			if err != nil {
				t.Fatal(err)
			}
			_, outPort, _ := net.SplitHostPort(out.LocalAddr().String())
			for _, seq := range []byte{100, 101} {
				b := []byte{seq}
				for i := 1; i < 700; i++ {
					b = append(b, byte(int(seq)*31+i))
				}
				if _, err := out.Write(b); err != nil {
					t.Fatal(err)
				}
			}
			out.Close() // its port is free for the restore to send from
			img := dumpKill(t, p)
			r := restoreDetached(t, img, p)
			if err := os.WriteFile(trigger, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			r.waitLog(t, `udp done (\d+)`, 1, 10*time.Second)
			var want []string
			for seq := range 24 {
				from := ports[2]
				if seq%2 == 1 {
					from = ports[3]
				}
				want = append(want, fmt.Sprintf("dgram %d %d from %s", seq, 1+(seq*997)%3000, from))
			}
			want = append(want, "dgram 100 700 from "+outPort, "dgram 101 700 from "+outPort, "udp done 26")
			data, _ := os.ReadFile(p.log)
			got := regexp.MustCompile(`(?m)^(dgram .*|udp done .*)$`).FindAllString(string(data), -1)
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("datagrams read after restore:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

// TestTCPDumpDies: chpox killed while a connection is in repair mode (and
// locked, for --kill) harms nothing: its guard takes the connections out of
// repair mode and lifts the lock, and the clients go on.
func TestTCPDumpDies(t *testing.T) {
	srv, clients, want := startHTTPClients(t, 2)
	for round, extra := range [][]string{nil, {"--kill"}} {
		args := append([]string{"dump", fmt.Sprint(srv.pid), "-o", filepath.Join(t.TempDir(), "srv.img")}, extra...)
		cmd := exec.Command(chpoxBin, args...)
		cmd.Env = append(os.Environ(), "CHPOX_TEST_CRASH=inet-repair")
		out, err := cmd.CombinedOutput()
		if exitCode(err) != 128+int(unix.SIGKILL) {
			t.Fatalf("chpox %v with CHPOX_TEST_CRASH: %v, want killed; output %s", args, err, out)
		}
		waitFor(t, 10*time.Second, "the network guard to finish", func() bool { return lockedElements() == "" })
		if st := procState(srv.pid); !strings.Contains(st, "TracerPid: 0") {
			t.Fatalf("server after chpox died: %s", st)
		}
		for i, c := range clients {
			c.check(t, 1000*round+i, want)
		}
	}
}

// queuedClients connects three clients to testdata/slowaccept (srv) right
// after one of its accept rounds: they wait in its accept queue for 300 ms.
func queuedClients(t *testing.T, srv *proc) []*bufio.Reader {
	t.Helper()
	port := srv.waitLog(t, `(?m)^listening (\d+)$`, 1, 10*time.Second)[1]
	srv.waitLog(t, `(?m)^accepted 0$`, 1, 10*time.Second)
	var clients []*bufio.Reader
	for range 3 {
		c, err := net.Dial("tcp", "127.0.0.1:"+port)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		clients = append(clients, bufio.NewReader(c))
	}
	return clients
}

// TestTCPBusyListener: connections waiting in a listener's accept queue
// cannot be kept, so dump lets the server run a moment and tries again; the
// connections it then accepted survive dump --kill and restore.
func TestTCPBusyListener(t *testing.T) {
	setup(t, "slowaccept")
	cleanNetLock(t)
	p := start(t, "slowaccept")
	clients := queuedClients(t, p)
	// The server sleeps 300 ms between accepts: the three wait in its queue.
	img := filepath.Join(t.TempDir(), "srv.img")
	r := mustChpox(t, "-v", "dump", "--kill", strconv.Itoa(p.pid), "-o", img)
	if !strings.Contains(r.stderr, "listener busy") {
		t.Errorf("the dump did not meet a waiting connection and try again: %q", r.stderr)
	}
	p.waitExit(t, 10*time.Second)
	waitPIDFree(t, p.pid, 10*time.Second)
	rp := restoreDetached(t, img, p)
	rp.signal(t, unix.SIGUSR1)
	for i, c := range clients {
		for _, want := range []string{fmt.Sprintf("hello %d\n", i), "ping\n"} {
			if line, err := c.ReadString('\n'); line != want {
				t.Errorf("client %d read %q (%v), want %q", i, line, err, want)
			}
		}
	}
}

// TestRunBusyListener: under `chpox run`, a trigger that meets connections
// waiting in the accept queue is tried again a moment later (the loop keeps
// serving the job meanwhile) and the checkpoint succeeds, holding the
// connections the server accepted; the job serves them on.
func TestRunBusyListener(t *testing.T) {
	setup(t, "slowaccept")
	cleanNetLock(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "srv.chp")
	logPath, errPath := filepath.Join(dir, "srv.log"), filepath.Join(dir, "run.err")
	logf, _ := os.Create(logPath)
	errf, _ := os.Create(errPath)
	defer logf.Close()
	defer errf.Close()
	cmd := exec.Command(chpoxBin, "-v", "run", "--signal", "USR2", "-o", img, "--", progs["slowaccept"])
	cmd.Stdout, cmd.Stderr = logf, errf
	run := startCmd(t, "chpox run", cmd, errPath)
	job := &proc{name: "slowaccept", log: logPath}
	m := run.waitLog(t, `(?m)^chpox: job pid (\d+);`, 1, 10*time.Second)
	job.pid, _ = strconv.Atoi(m[1])
	adopt(t, "slowaccept", job.pid, logPath)
	clients := queuedClients(t, job)
	unix.Kill(job.pid, unix.SIGUSR2)
	run.waitLog(t, `(?m)^chpox: checkpoint 1 at .* -> `, 1, 20*time.Second)
	if data, _ := os.ReadFile(errPath); !strings.Contains(string(data), "listener busy") {
		t.Errorf("the checkpoint did not meet the waiting connections and try again:\n%s", data)
	}
	// The image holds the three connections, accepted by the time of the
	// checkpoint that succeeded.
	var top struct {
		Objects struct {
			InetSockets []struct{ State string } `json:"inet_sockets"`
		} `json:"objects"`
	}
	if err := json.Unmarshal([]byte(quietChpox(t, "inspect", "--json", img)), &top); err != nil {
		t.Fatal(err)
	}
	established := 0
	for _, s := range top.Objects.InetSockets {
		if s.State == "established" {
			established++
		}
	}
	if established != 3 {
		t.Errorf("the image holds %d established connections, want the 3 accepted ones", established)
	}
	// The job, untouched, serves them.
	unix.Kill(job.pid, unix.SIGUSR1)
	for i, c := range clients {
		for _, want := range []string{fmt.Sprintf("hello %d\n", i), "ping\n"} {
			if line, err := c.ReadString('\n'); line != want {
				t.Errorf("client %d read %q (%v), want %q", i, line, err, want)
			}
		}
	}
}
