package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chpox/chpox/pkg/netlock"
)

// PostgreSQL (Debian's postgresql 15): its postmaster and every backend
// share a System V segment (the interlock the postmaster checks), and its
// children wait on latches with a signalfd (issues 9, 10).

// pgBin finds a program of Debian's postgresql package (not on PATH).
func pgBin(t *testing.T, name string) string {
	t.Helper()
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(m) == 0 {
		t.Fatalf("/usr/lib/postgresql/*/bin/%s is needed (make setup installs postgresql)", name)
	}
	return m[len(m)-1]
}

// pgUser returns the credential of the postgres user.
func pgUser(t *testing.T) *syscall.Credential {
	t.Helper()
	u, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal("the postgres user is needed (make setup installs postgresql):", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// startPostgres makes a cluster in a directory of its own (owned by
// postgres, who must reach its log at restore too) and runs postgres in
// the foreground on a free loopback port, leading a process group that is
// killed at the end of the test.
func startPostgres(t *testing.T) (*server, string) {
	t.Helper()
	cred := pgUser(t)
	dir, err := os.MkdirTemp("", "chpox-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	initdb := exec.Command(pgBin(t, "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = dir
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "postgres.log")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Chown(int(cred.Uid), int(cred.Gid))
	port := freePort(t)
	cmd := exec.Command(pgBin(t, "postgres"), "-D", data, "-k", dir, "-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "shared_buffers=16MB")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	p := startCmd(t, "postgres", cmd, logPath)
	t.Cleanup(func() { killGroup(t, p.pid) })
	t.Logf("started postgres: pid %d, port %d, log %s", p.pid, port, logPath)
	s := &server{proc: p, addr: fmt.Sprintf("127.0.0.1:%d", port)}
	s.waitListening(t, 20*time.Second)
	return s, dir
}

// psqlSession is one psql, outside the checkpoint, on one TCP connection.
type psqlSession struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

func startPsql(t *testing.T, addr string) *psqlSession {
	t.Helper()
	host, port, _ := strings.Cut(addr, ":")
	cmd := exec.Command(needCommand(t, "psql"), "-X", "-q", "-A", "-t", "-h", host, "-p", port, "-U", "postgres", "postgres")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &psqlSession{cmd: cmd, in: in, lines: make(chan string, 1000)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
		close(s.lines)
	}()
	t.Cleanup(func() {
		in.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return s
}

// query sends SQL and returns what psql printed for it.
func (s *psqlSession) query(t *testing.T, sql string, timeout time.Duration) []string {
	t.Helper()
	const done = "--chpox-done--"
	if _, err := fmt.Fprintf(s.in, "%s\n\\echo %s\n", sql, done); err != nil {
		t.Fatalf("psql: send %q: %v", sql, err)
	}
	var got []string
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				t.Fatalf("psql ended during %q; it printed %q", sql, got)
			}
			if line == done {
				return got
			}
			got = append(got, line)
		case <-deadline:
			t.Fatalf("psql: no answer to %q within %v; so far %q", sql, timeout, got)
		}
	}
}

func (s *psqlSession) one(t *testing.T, sql string) string {
	t.Helper()
	got := s.query(t, sql, 30*time.Second)
	if len(got) != 1 {
		t.Fatalf("%q printed %q, want one line", sql, got)
	}
	return got[0]
}

// shmLine is a segment's line of /proc/sysvipc/shm without the times and
// the pids (which restore cannot give back).
func shmLine(t *testing.T, shmid string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/sysvipc/shm")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 10 && f[1] == shmid {
			// key shmid perms size cpid lpid nattch uid gid cuid cgid
			return strings.Join(append(f[:4:4], f[6:11]...), " ")
		}
	}
	return ""
}

// TestServerPostgres: a running cluster with a psql session (outside the
// checkpoint) in the middle of a transaction that made a temporary table
// and wrote to a real one goes through dump --kill and restore --detach;
// the session goes on on its connection with the same backend, sees its
// uncommitted rows, commits, and the data is there for a new session. The
// System V segment comes back with its key, id, owner, mode, size and
// attachments; the children's signalfds with their masks. Then the restored
// cluster, with two sessions, goes through a second dump --kill + restore.
func TestServerPostgres(t *testing.T) {
	setup(t)
	pg, _ := startPostgres(t)
	psql := startPsql(t, pg.addr)
	backend := psql.one(t, "select pg_backend_pid();")
	clientPort := psql.one(t, "select inet_client_port();")
	port, _ := strconv.Atoi(clientPort)
	serverPort, _ := strconv.Atoi(pg.addr[strings.LastIndexByte(pg.addr, ':')+1:])
	t.Cleanup(func() {
		if t.Failed() {
			lo := netip.MustParseAddr("127.0.0.1")
			netlock.Unlock([]netlock.Conn{{Local: netip.AddrPortFrom(lo, uint16(serverPort)), Peer: netip.AddrPortFrom(lo, uint16(port))}})
		}
	})
	psql.query(t, "begin;", 10*time.Second)
	psql.query(t, "create temp table scratch(id int primary key, v text);", 10*time.Second)
	psql.query(t, "insert into scratch select i, md5(i::text) from generate_series(1, 5000) i;", 10*time.Second)
	psql.query(t, "create table kept(id int, v text);", 10*time.Second)
	psql.query(t, "insert into kept select id, v from scratch where id % 10 = 0;", 10*time.Second)
	xid := psql.one(t, "select txid_current();")
	sumBefore := psql.one(t, "select count(*), sum(id), md5(string_agg(v, '' order by id)) from scratch;")

	data, _ := os.ReadFile("/proc/sysvipc/shm")
	var shmid string
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if f := strings.Fields(line); len(f) > 10 && f[4] == strconv.Itoa(pg.pid) {
			shmid = f[1]
		}
	}
	if shmid == "" {
		t.Fatalf("postgres (pid %d) made no System V segment:\n%s", pg.pid, data)
	}
	// Killed (as at the end of a failed test), postgres leaves it behind.
	removeAtEnd(t, []string{shmid}, nil, nil)
	segBefore := shmLine(t, shmid)
	workers := pg.workers()
	sigfds := 0
	for _, w := range workers {
		ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", w))
		for _, e := range ents {
			if linkOf(w, atoi(e.Name())) == "anon_inode:[signalfd]" {
				sigfds++
			}
		}
	}
	t.Logf("segment %s; %d children, %d signalfds; backend %s in transaction %s", segBefore, len(workers), sigfds, backend, xid)
	if sigfds == 0 {
		t.Error("no child of postgres holds a signalfd: the test no longer covers it")
	}

	start := time.Now()
	img := dumpKillServer(t, pg, workers)
	if got := shmLine(t, shmid); got != "" {
		t.Errorf("after dump --kill the segment is still there: %s", got)
	}
	out := mustChpox(t, "inspect", img).stdout
	for _, want := range []string{"System V segment 1: shmid " + shmid, "[signalfd] mask 0x400000"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect does not show %q", want)
		}
	}
	r := restoreDetached(t, img, pg.proc)
	t.Logf("dump --kill + restore: %v", time.Since(start))
	if got := shmLine(t, shmid); got != segBefore {
		t.Errorf("segment after restore:\n  %s\nwant\n  %s", got, segBefore)
	}
	if got := psql.one(t, "select pg_backend_pid();"); got != backend {
		t.Errorf("backend after restore %s, want %s", got, backend)
	}
	if got := psql.one(t, "select txid_current();"); got != xid {
		t.Errorf("transaction after restore %s, want %s", got, xid)
	}
	if got := psql.one(t, "select count(*), sum(id), md5(string_agg(v, '' order by id)) from scratch;"); got != sumBefore {
		t.Errorf("temporary table after restore: %s, want %s", got, sumBefore)
	}
	psql.query(t, "insert into kept values (-1, 'after restore');", 10*time.Second)
	psql.query(t, "commit;", 10*time.Second)
	other := startPsql(t, pg.addr)
	if got := other.one(t, "select count(*), sum(id) from kept;"); got != "501|1252499" {
		t.Errorf("a new session sees kept = %s, want 501|1250499", got)
	}
	if got := other.one(t, "select count(*) from pg_stat_activity where backend_type = 'client backend';"); got != "2" {
		t.Errorf("%s client backends, want 2", got)
	}
	// And once more: the restored cluster goes through a second
	// checkpoint, found by the same rule (its segment attached, its
	// connections in repair mode), and both sessions go on.
	workers = pg.workers()
	segBefore = shmLine(t, shmid) // a backend more: 8 attachments
	img = dump(t, r, "--kill")
	if st := r.waitExit(t, 10*time.Second); st != "killed by SIGKILL" {
		t.Fatalf("after the second dump --kill the restored postmaster ended with %q", st)
	}
	for _, pid := range append(workers, pg.pid) {
		waitPIDFree(t, pid, 10*time.Second)
	}
	r2 := restoreDetached(t, img, pg.proc)
	if got := shmLine(t, shmid); got != segBefore {
		t.Errorf("segment after the second restore:\n  %s\nwant\n  %s", got, segBefore)
	}
	for _, s := range []*psqlSession{psql, other} {
		if got := s.one(t, "select count(*), sum(id) from kept;"); got != "501|1252499" {
			t.Errorf("after the second restore kept = %s, want 501|1252499", got)
		}
	}
	r = r2
	// A clean shutdown: the restored postmaster stops its children and exits.
	r.signal(t, syscall.SIGINT)
	if st := r.waitExit(t, 20*time.Second); st != "exit status 0" {
		t.Errorf("the restored postmaster ended with %q, want exit status 0; log:\n%s", st, tail(pg.log))
	}
}
