package bench

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/internal/resp"
	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/netlock"
	"github.com/chpox/chpox/pkg/restore"
)

// A real server: redis-server holding 1M keys (CHPOX_BENCH_REDIS_KEYS) with
// 20 clients connected and busy goes through dump --kill and restore, each
// round. Reported next to memcpy and fresh-memory write speed measured in
// the same run, and the longest wait a client saw (what its users feel).

const redisBenchClients = 20

func redisBenchKeys() int {
	if v, err := strconv.Atoi(os.Getenv("CHPOX_BENCH_REDIS_KEYS")); err == nil && v > 0 {
		return v
	}
	return 1_000_000
}

func benchKey(i int) string   { return fmt.Sprintf("key:%07d", i) }
func benchValue(i int) string { return fmt.Sprintf("value-%d-%064d", i, i) }

// startRedis starts redis-server on a free loopback port with stdin
// /dev/null and its log in dir, and loads n keys.
func startRedis(b *testing.B, dir string, n int) (pid int, addr string) {
	exe, err := exec.LookPath("redis-server")
	if err != nil {
		b.Fatal("redis-server is needed (make setup installs it):", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	logf, err := os.Create(filepath.Join(dir, "redis.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--daemonize", "no",
		"--dir", dir, "--save", "", "--appendonly", "no", "--logfile", "")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	pid = cmd.Process.Pid
	var c *resp.Conn
	for i := 0; ; i++ {
		if c, err = resp.Dial(addr, time.Second); err == nil {
			break
		}
		if i == 200 {
			unix.Kill(pid, unix.SIGKILL)
			b.Fatalf("redis does not answer at %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Minute))
	if err := c.SetMany(n, benchKey, benchValue); err != nil {
		b.Fatal(err)
	}
	return pid, addr
}

// benchClient GETs random keys on one connection, one request in flight,
// until stopped; any error or wrong value ends it.
type benchClient struct {
	conn    *resp.Conn
	ops     atomic.Int64
	longest atomic.Int64 // ns, the longest request
	failed  atomic.Pointer[error]
}

func (c *benchClient) fail(err error) { c.failed.Store(&err) }

func (c *benchClient) run(stop <-chan struct{}, n int, seed int) {
	k := seed
	for i := 0; i < 100_000_000; i++ {
		select {
		case <-stop:
			return
		default:
		}
		k = (k*1103515245 + 12345) & 0x7fffffff
		key := k % n
		c.conn.SetDeadline(time.Now().Add(2 * time.Minute))
		t := time.Now()
		v, err := c.conn.Do("GET", benchKey(key))
		if err != nil || v != benchValue(key) {
			c.fail(fmt.Errorf("GET %s = %v, %v", benchKey(key), v, err))
			return
		}
		if d := int64(time.Since(t)); d > c.longest.Load() {
			c.longest.Store(d)
		}
		c.ops.Add(1)
	}
}

func BenchmarkRedis(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (ptrace and clone3 set_tid)")
	}
	dir := b.TempDir()
	keys := redisBenchKeys()
	pid, addr := startRedis(b, dir, keys)
	defer func() {
		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
	}()

	clients := make([]*benchClient, redisBenchClients)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	for i := range clients {
		conn, err := resp.Dial(addr, 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		clients[i] = &benchClient{conn: conn}
		wg.Add(1)
		go func() { defer wg.Done(); clients[i].run(stop, keys, i) }()
	}
	// Every client busy (and the machine's memory warm) before timing.
	waitClients(b, clients, 100)

	// A dump --kill whose restore never comes (a failed round) would leave
	// the clients' connections in the network lock, the machine's.
	var locked []netlock.Conn
	for _, c := range clients {
		server, client := c.conn.RemoteAddr().(*net.TCPAddr).AddrPort(), c.conn.LocalAddr().(*net.TCPAddr).AddrPort()
		locked = append(locked, netlock.Conn{
			Local: netip.AddrPortFrom(server.Addr().Unmap(), server.Port()),
			Peer:  netip.AddrPortFrom(client.Addr().Unmap(), client.Port()),
		})
	}
	restored := true
	defer func() {
		if !restored {
			netlock.Unlock(locked)
		}
	}()

	img := filepath.Join(dir, "redis.chp")
	var dumpSec, frozenSec, restoreSec, freshSum, memcpySum float64
	var data, size int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		memcpySum += memcpyGBps(256 << 20)
		freshSum += freshWriteGBps(256 << 20)
		os.Remove(img)
		for _, c := range clients {
			c.longest.Store(0)
		}
		t := time.Now()
		restored = false
		res, err := dump.Dump(tracer, pid, dump.Options{Output: img, Kill: true})
		if err != nil {
			b.Fatal(err)
		}
		dumpSec += time.Since(t).Seconds()
		frozenSec += res.Frozen.Seconds()
		data, size = res.DataBytes, res.Bytes
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)

		t = time.Now()
		r, err := restore.Restore(tracer, img, restore.Options{PIDWaitMS: 2000})
		if err != nil {
			b.Fatal(err)
		}
		restoreSec += time.Since(t).Seconds()
		restored = true
		pid = r.PID
		waitClients(b, clients, 20)
	}
	b.StopTimer()

	var longest time.Duration
	for _, c := range clients {
		longest = max(longest, time.Duration(c.longest.Load()))
	}
	b.ReportMetric(float64(longest.Milliseconds()), "client-wait-ms")
	fmt.Printf("\nredis: %d keys, %d clients, %.0f MiB of data in a %.0f MiB image, %d rounds\n",
		keys, len(clients), float64(data)/(1<<20), float64(size)/(1<<20), b.N)
	reportRates(b, data, timings{dump: dumpSec, frozen: frozenSec, restore: restoreSec, memcpy: memcpySum, fresh: freshSum})
	fmt.Printf("  clients  longest wait for a reply (kill to restore included) %v\n", longest.Round(time.Millisecond))
}

// waitClients waits until every client has done n more operations, on its
// one connection (at most a minute).
func waitClients(b *testing.B, clients []*benchClient, n int64) {
	start := make([]int64, len(clients))
	for i, c := range clients {
		start[i] = c.ops.Load()
	}
	deadline := time.Now().Add(time.Minute)
	for i, c := range clients {
		for c.ops.Load() < start[i]+n {
			if err := c.failed.Load(); err != nil {
				b.Fatalf("client %d: %v", i, *err)
			}
			if time.Now().After(deadline) {
				b.Fatalf("client %d did not do %d requests within a minute", i, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
