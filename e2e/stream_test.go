package e2e

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const pyRE = `(?m)^py ok (\d+) ([0-9a-f]{64})$`

// startDict starts testdata/dict.py and returns it with its first report.
func startDict(t *testing.T) (*proc, []string) {
	t.Helper()
	p := start(t, "dict.py")
	p.waitLog(t, `(?m)^ready$`, 1, 30*time.Second)
	time.Sleep(100 * time.Millisecond) // let the counter move off zero
	p.signal(t, unix.SIGUSR1)
	return p, p.waitLog(t, pyRE, 1, 10*time.Second)
}

// checkDict: the restored interpreter's dict hash is the one from before
// the dump and its counter went on.
func checkDict(t *testing.T, r *proc, before []string) {
	t.Helper()
	r.signal(t, unix.SIGUSR1)
	after := r.waitLog(t, pyRE, 2, 20*time.Second)
	if after[2] != before[2] {
		t.Errorf("dict hash changed: before %s, after restore %s", before[2], after[2])
	}
	nb, _ := strconv.Atoi(before[1])
	na, _ := strconv.Atoi(after[1])
	if na <= nb {
		t.Errorf("counter after restore is %d, not beyond %d from before the dump", na, nb)
	}
}

// streamOpts say how the test carries the stream from dump to restore.
type streamOpts struct {
	compress bool
	// buffered holds the whole stream until the dump has ended and the
	// original's PID is free, as on another machine: the restore then
	// streams the data straight into the processes it builds. Unbuffered,
	// the restore meets the PIDs still taken and spools the data first.
	buffered bool
	flipAt   int64 // > 0: flip a bit of the byte at this stream offset
	cutAt    int64 // > 0: the stream stops after this many bytes
	// others are the descendants of the dumped process: killed, they are
	// orphans of this test (a subreaper), which must reap them to free
	// their PIDs while the restore waits, as init would.
	others []int
}

// pipeDumpRestore runs `chpox dump --kill PID -o - | chpox restore --detach -`
// with a Go copier between the two pipes and returns the dump's and the
// restore's results and how many bytes went through.
func pipeDumpRestore(t *testing.T, p *proc, o streamOpts) (dumpRes, restRes chpoxResult, n int64) {
	t.Helper()
	dr, dw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	rr, rw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"dump", "--kill", strconv.Itoa(p.pid), "-o", "-"}
	if o.compress {
		args = append(args, "--compress")
	}
	dump := exec.Command(chpoxBin, args...)
	var dumpErr bytes.Buffer
	dump.Stdout, dump.Stderr = dw, &dumpErr
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	dw.Close()
	copied := make(chan int64, 1)
	var held bytes.Buffer
	copyTo := io.Writer(rw)
	if o.buffered {
		copyTo = &held
	}
	go func() {
		n, _ := io.Copy(&flipper{w: copyTo, at: o.flipAt, cut: o.cutAt}, dr)
		dr.Close()
		if o.buffered {
			copied <- n
			return
		}
		rw.Close()
		copied <- n
	}()
	restore := exec.Command(chpoxBin, "restore", "--detach", "-")
	var restOut, restErr bytes.Buffer
	restore.Stdin, restore.Stdout, restore.Stderr = rr, &restOut, &restErr
	startRestore := func() {
		if err := restore.Start(); err != nil {
			t.Fatal(err)
		}
		rr.Close()
	}
	wait := func(cmd *exec.Cmd, errBuf *bytes.Buffer, what string) int {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			return exitCode(err)
		case <-time.After(time.Minute):
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s timed out; stderr:\n%s", what, errBuf.String())
		}
		return -1
	}
	if !o.buffered {
		startRestore()
	}
	reaped, restored := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(reaped)
		for {
			for _, pid := range o.others {
				var ws unix.WaitStatus
				unix.Wait4(pid, &ws, unix.WNOHANG, nil) // only ever reaps a dead one
			}
			select {
			case <-restored:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	defer func() { close(restored); <-reaped }()
	dumpRes.code = wait(dump, &dumpErr, "dump")
	dumpRes.stderr = dumpErr.String()
	t.Logf("chpox %s: exit %d; stderr %q", strings.Join(args, " "), dumpRes.code, dumpRes.stderr)
	if st := p.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --kill -o - the original ended with %q, want signal: killed", st)
	}
	if o.buffered {
		n = <-copied
		waitPIDFree(t, p.pid, 10*time.Second)
		startRestore()
		go func() {
			rw.Write(held.Bytes())
			rw.Close()
		}()
	}
	restRes.code = wait(restore, &restErr, "restore -")
	restRes.stdout, restRes.stderr = restOut.String(), restErr.String()
	if !o.buffered {
		n = <-copied
	}
	t.Logf("chpox restore --detach -: exit %d; stdout %q; stderr %q; %d bytes streamed", restRes.code, restRes.stdout, restRes.stderr, n)
	return dumpRes, restRes, n
}

// flipper copies, flipping one bit of the byte at stream offset at, and
// drops everything from offset cut on (the dump still writes it all).
type flipper struct {
	w       io.Writer
	at, cut int64
	pos     int64
}

func (f *flipper) Write(b []byte) (int, error) {
	if f.cut > 0 && f.pos+int64(len(b)) > f.cut {
		keep := max(f.cut-f.pos, 0)
		if keep > 0 {
			f.w.Write(b[:keep])
		}
		f.pos += int64(len(b))
		return len(b), nil
	}
	if f.at > 0 && f.at >= f.pos && f.at < f.pos+int64(len(b)) {
		b = bytes.Clone(b)
		b[f.at-f.pos] ^= 0x10
	}
	f.pos += int64(len(b))
	return f.w.Write(b)
}

// adoptRestored checks the restore printed the original's PID and adopts it.
func adoptRestored(t *testing.T, r chpoxResult, want *proc) *proc {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("restore - failed (exit %d): %s", r.code, r.stderr)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(r.stdout))
	if err != nil {
		t.Fatalf("restore --detach - printed %q, want a PID", r.stdout)
	}
	rp := adopt(t, want.name+"(restored)", pid, want.log)
	if pid != want.pid {
		t.Fatalf("restored as pid %d, want %d", pid, want.pid)
	}
	return rp
}

// dump --kill PID -o - | restore -: the Python interpreter moves through a
// real pipe, once with the data spooled (the PID still taken while the
// data flows, as on one machine) and once streamed straight into the new
// process (as from another machine), plain and compressed.
func TestStreamDumpRestore(t *testing.T) {
	setup(t)
	for _, o := range []struct {
		name string
		streamOpts
	}{
		{"spooled", streamOpts{}},
		{"streamed", streamOpts{buffered: true}},
		{"spooled-compressed", streamOpts{compress: true}},
		{"streamed-compressed", streamOpts{compress: true, buffered: true}},
	} {
		t.Run(o.name, func(t *testing.T) {
			p, before := startDict(t)
			d, r, n := pipeDumpRestore(t, p, o.streamOpts)
			if d.code != 0 {
				t.Fatalf("dump -o - failed (exit %d): %s", d.code, d.stderr)
			}
			if !strings.Contains(d.stderr, "written to standard output") {
				t.Errorf("dump -o - says %q", d.stderr)
			}
			rp := adoptRestored(t, r, p)
			checkDict(t, rp, before)
			t.Logf("%s: %d bytes through the pipe", o.name, n)
			rp.kill()
		})
	}
}

// A stream damaged in its data part is refused and leaves no process
// behind, whether the damage is found while spooling or only after the
// tree was built and filled (the failure path kills it).
func TestStreamDamaged(t *testing.T) {
	setup(t)
	for _, o := range []struct {
		name string
		streamOpts
	}{
		{"spooled", streamOpts{flipAt: 2 << 20}},
		{"streamed", streamOpts{buffered: true, flipAt: 2 << 20}},
		{"streamed-compressed", streamOpts{buffered: true, compress: true, flipAt: 1 << 20}},
		{"cut", streamOpts{buffered: true, flipAt: 0, cutAt: 3 << 20}},
	} {
		t.Run(o.name, func(t *testing.T) {
			p, _ := startDict(t)
			d, r, n := pipeDumpRestore(t, p, o.streamOpts)
			if d.code != 0 {
				t.Fatalf("dump -o - failed (exit %d): %s", d.code, d.stderr)
			}
			if n < 2*max(o.flipAt, o.cutAt) {
				t.Fatalf("the stream has %d bytes: too small to damage its data at %d", n, max(o.flipAt, o.cutAt))
			}
			if r.code == 0 {
				if pid, err := strconv.Atoi(strings.TrimSpace(r.stdout)); err == nil {
					adopt(t, "damaged(restored)", pid, p.log).kill()
				}
				t.Fatalf("restore of a damaged stream succeeded: %q", r.stdout)
			}
			if !strings.Contains(r.stderr, "damaged") && !strings.Contains(r.stderr, "truncated") {
				t.Errorf("restore of a damaged stream says %q, want it to name the damage", r.stderr)
			}
			time.Sleep(200 * time.Millisecond)
			if pidExists(p.pid) {
				t.Errorf("pid %d exists after a refused restore: %s", p.pid, procState(p.pid))
			}
		})
	}
}

// restore - restores in chpox's own PID namespace only: with --namespace
// it refuses at once and says what to do.
func TestStreamRestoreRefusals(t *testing.T) {
	setup(t)
	r := runChpox(t, "restore", "--namespace", "-")
	if r.code != 2 || !strings.Contains(r.stderr, "save the stream to a file") {
		t.Errorf("restore --namespace -: exit %d, %q; want a usage error saying what to do", r.code, r.stderr)
	}
}

// dump -o - refuses a terminal as standard output (an image would land
// on the screen) before touching the process, which runs on.
func TestStreamDumpToTerminal(t *testing.T) {
	setup(t, "counter")
	p := start(t, "counter")
	p.waitInt(t, countRE, 3, 10*time.Second)
	_, ptsPath := openPTY(t)
	pts, err := os.OpenFile(ptsPath, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pts.Close()
	// Were it written, nobody reads the terminal: the dump would block.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chpoxBin, "dump", strconv.Itoa(p.pid), "-o", "-")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = pts, &stderr
	code := exitCode(cmd.Run())
	if code != 2 || !strings.Contains(stderr.String(), "terminal") {
		t.Errorf("dump -o - to a terminal: exit %d, %q; want a usage error naming the terminal", code, stderr.String())
	}
	n := checkCounterLog(t, p.log)
	p.waitInt(t, countRE, n+3, 10*time.Second)
}

// --compress to a file: the image is smaller, inspect shows the ratio
// (also reading it from a pipe with inspect -), and it restores.
func TestCompressFile(t *testing.T) {
	setup(t)
	p, before := startDict(t)
	img := filepath.Join(t.TempDir(), "dict.img")
	mustChpox(t, "dump", "--kill", "--compress", strconv.Itoa(p.pid), "-o", img)
	if st := p.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --kill the original ended with %q", st)
	}
	waitPIDFree(t, p.pid, 10*time.Second)
	out := mustChpox(t, "inspect", "--verify", img).stdout
	if !strings.Contains(out, "zstd-compressed") || !strings.Contains(out, "ratio") {
		t.Errorf("inspect of a compressed image shows no ratio:\n%s", out)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(chpoxBin, "inspect", "-")
	cmd.Stdin = f
	sout, err := cmd.Output()
	if err != nil || !strings.Contains(string(sout), "zstd-compressed") {
		t.Errorf("inspect - < image: %v\n%s", err, sout)
	}
	r := restoreDetached(t, img, p)
	checkDict(t, r, before)
}

// A process tree (parent, children, a grandchild and a zombie) moves
// through a compressed stream on one machine: restore waits for all of
// the originals' PIDs, and every process checks its own state.
func TestStreamTree(t *testing.T) {
	setup(t, "tree")
	p, tp := startTree(t)
	wantTree(t, tp, "original")
	d, r, _ := pipeDumpRestore(t, p, streamOpts{compress: true, others: []int{tp.c1, tp.c2, tp.c3, tp.gc}})
	if d.code != 0 {
		t.Fatalf("dump -o - failed (exit %d): %s", d.code, d.stderr)
	}
	rp := adoptRestored(t, r, p)
	wantTree(t, tp, "restored")
	for _, pid := range []int{tp.parent, tp.c1, tp.c2, tp.gc} {
		if err := unix.Kill(pid, unix.SIGUSR1); err != nil {
			t.Fatalf("kill %d: %v", pid, err)
		}
	}
	for _, role := range []string{"parent", "c1", "c2", "gc"} {
		rp.waitLog(t, `(?m)^tree ok `+role+`$`, 1, 10*time.Second)
	}
}
