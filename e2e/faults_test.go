package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The fault tests kill chpox at random instants and check that the job
// never notices (issue 8). Counts come from the environment, so that
// `make faults` runs the long version and `make test` a short one:
//
//	CHPOX_FAULTS_DUMPS     killed `chpox dump`s (default 30)
//	CHPOX_FAULTS_RESTORES  killed `chpox restore`s (default 10)
//	CHPOX_FAULTS_RUNS      killed `chpox run`s during checkpoints (default 10)
//	CHPOX_FAULTS_BIN       the chpox to test (default: this tree's), e.g. an
//	                       older build to measure the table before a change
//
// The target, testdata/faultjob.c, checks its registers, flags, signal
// masks, pending signal, code and memory continuously and prints FAIL on
// any change.

func faultsN(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv("CHPOX_FAULTS_" + name)); err == nil && n >= 0 {
		return n
	}
	return def
}

type faultRow struct {
	fault                string
	trials, harmed, lost int
	notes                []string
	failures             []string
	took                 time.Duration
}

func (r *faultRow) harm(format string, args ...any) {
	r.harmed++
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

// fail records a failure that harmed no job and lost no image (a
// process of chpox left behind, a message without advice).
func (r *faultRow) fail(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func (r *faultRow) lose(format string, args ...any) {
	r.lost++
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}

func TestFaults(t *testing.T) {
	setup(t, "faultjob")
	bin := chpoxBin
	if b := os.Getenv("CHPOX_FAULTS_BIN"); b != "" {
		bin = b
	}
	var rows []*faultRow
	defer func() {
		var b strings.Builder
		fmt.Fprintf(&b, "\n%-34s %7s %12s %12s %7s  %s\n", "fault", "trials", "jobs harmed", "images lost", "time", "notes")
		for _, r := range rows {
			fmt.Fprintf(&b, "%-34s %7d %12d %12d %7s  %s\n", r.fault, r.trials, r.harmed, r.lost, r.took.Round(100*time.Millisecond), strings.Join(r.notes, "; "))
		}
		t.Log(b.String())
		for _, r := range rows {
			for i, f := range r.failures {
				if i == 10 {
					t.Errorf("%s: ... %d more", r.fault, len(r.failures)-10)
					break
				}
				t.Errorf("%s: %s", r.fault, f)
			}
		}
	}()
	phase := func(f func() *faultRow) {
		began := time.Now()
		r := f()
		r.took = time.Since(began)
		rows = append(rows, r)
	}
	if n := faultsN("DUMPS", 30); n > 0 {
		phase(func() *faultRow { return faultKilledDumps(t, bin, n) })
	}
	if n := faultsN("RESTORES", 10); n > 0 {
		phase(func() *faultRow { return faultKilledRestores(t, bin, n) })
	}
	if n := faultsN("RUNS", 10); n > 0 {
		phase(func() *faultRow { return faultKilledRuns(t, bin, n) })
	}
	phase(func() *faultRow { return faultNoSpace(t, bin, 6) })
	phase(func() *faultRow { return faultConcurrent(t, bin, 6) })
}

// jobHealth returns "" if the process runs untraced and unstopped and
// goes on proving its state, else what is wrong.
func jobHealth(pid int, log string) string {
	deadline := time.Now().Add(3 * time.Second)
	for {
		bad := ""
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if len(tasks) == 0 {
			return "gone"
		}
		for _, task := range tasks {
			st, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
			s := string(st)
			if m := regexp.MustCompile(`TracerPid:\s*(\d+)`).FindStringSubmatch(s); m == nil || m[1] != "0" {
				bad = "still traced: " + procState(pid)
			}
			if m := regexp.MustCompile(`State:\s*(\S)`).FindStringSubmatch(s); m != nil && (m[1] == "T" || m[1] == "t" || m[1] == "Z") {
				bad = "thread " + task.Name() + " in state " + m[1]
			}
		}
		if bad == "" {
			break
		}
		if time.Now().After(deadline) {
			return bad
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := lastInt(log, `tick (\d+)`)
	for {
		data, _ := os.ReadFile(log)
		if m := failRE.Find(data); m != nil {
			return string(m)
		}
		if n := lastInt(log, `tick (\d+)`); n >= start+40 {
			return ""
		}
		if !pidExists(pid) {
			return "gone"
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("no progress (tick %d): %s", lastInt(log, `tick (\d+)`), procState(pid))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// imageOK tells whether img is a complete image (inspect --verify).
func imageOK(img string) string {
	out, err := exec.Command(chpoxBin, "inspect", "--verify", img).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("inspect --verify %s: %v: %s", img, err, out)
	}
	return ""
}

// tempFiles lists temporary image files left in dir.
func tempFiles(dir string) []string {
	names, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*"))
	return names
}

// timed runs chpox to the end and returns how long it took.
func timed(t *testing.T, bin string, args ...string) time.Duration {
	t.Helper()
	began := time.Now()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("chpox %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return time.Since(began)
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// killAfter starts cmd, SIGKILLs it after d unless it ended before, and
// reaps it.
func killAfter(t *testing.T, cmd *exec.Cmd, d time.Duration) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
	}
}

func faultKilledDumps(t *testing.T, bin string, n int) *faultRow {
	r := &faultRow{fault: "chpox dump killed", trials: n}
	dir := t.TempDir()
	img := filepath.Join(dir, "job.img")
	job := start(t, "faultjob")
	job.waitLog(t, `tick 20 `, 1, 10*time.Second)
	var ds []time.Duration
	for i := 0; i < 5; i++ {
		ds = append(ds, timed(t, bin, "dump", strconv.Itoa(job.pid), "-o", img))
	}
	d := median(ds)
	r.notes = append(r.notes, fmt.Sprintf("kill uniform over the dump's %v", d.Round(time.Millisecond)))
	if h := jobHealth(job.pid, job.log); h != "" {
		t.Fatalf("the job is harmed by complete dumps already: %s", h)
	}
	for i := 0; i < n; i++ {
		at := time.Duration(rand.Int64N(int64(d)))
		killAfter(t, exec.Command(bin, "dump", strconv.Itoa(job.pid), "-o", img), at)
		if h := jobHealth(job.pid, job.log); h != "" {
			r.harm("trial %d, killed after %v: %s; log:\n%s", i, at, h, tail(job.log))
			job.kill()
			job = start(t, "faultjob")
			job.waitLog(t, `tick 20 `, 1, 10*time.Second)
			timed(t, bin, "dump", strconv.Itoa(job.pid), "-o", img)
		}
		if bad := imageOK(img); bad != "" {
			r.lose("trial %d, killed after %v: %s", i, at, bad)
			timed(t, bin, "dump", strconv.Itoa(job.pid), "-o", img)
		}
	}
	left := len(tempFiles(dir))
	timed(t, bin, "dump", strconv.Itoa(job.pid), "-o", img)
	r.notes = append(r.notes, fmt.Sprintf("%d temp files left by killed dumps, %d after the next dump", left, len(tempFiles(dir))))
	return r
}

func faultKilledRestores(t *testing.T, bin string, n int) *faultRow {
	r := &faultRow{fault: "chpox restore killed", trials: n}
	dir := t.TempDir()
	img := filepath.Join(dir, "job.img")
	job := start(t, "faultjob")
	job.waitLog(t, `tick 20 `, 1, 10*time.Second)
	timed(t, bin, "dump", "--kill", strconv.Itoa(job.pid), "-o", img)
	job.waitExit(t, 10*time.Second)
	waitPIDFree(t, job.pid, 10*time.Second)
	st, err := os.Stat(job.log)
	if err != nil {
		t.Fatal(err)
	}
	logSize := st.Size()
	restoreOnce := func(d time.Duration) (finished bool, harm string) {
		// The restored job writes on at the image's offset; cut the
		// log there, so ticks of an earlier trial do not count.
		os.Truncate(job.log, logSize)
		cmd := exec.Command(bin, "restore", "--detach", img)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		killAfter(t, cmd, d)
		time.Sleep(20 * time.Millisecond)
		var ws unix.WaitStatus
		if wpid, _ := unix.Wait4(job.pid, &ws, unix.WNOHANG, nil); wpid == job.pid && cmd.ProcessState.Success() {
			return false, fmt.Sprintf("the restored job ended at once (%s); restore said %q", describeWait(syscall.WaitStatus(ws)), out.String())
		}
		if !pidExists(job.pid) {
			if d == time.Minute {
				t.Logf("the complete restore: %s; it said %q", cmd.ProcessState, out.String())
			}
			return false, ""
		}
		h := jobHealth(job.pid, job.log)
		unix.Kill(job.pid, unix.SIGKILL)
		waitPIDFree(t, job.pid, 10*time.Second)
		return true, h
	}
	if done, h := restoreOnce(time.Minute); !done || h != "" {
		t.Fatalf("a complete restore failed: finished %v, %s; log:\n%s", done, h, tail(job.log))
	}
	var d time.Duration // the longest of three complete restores
	for i := 0; i < 3; i++ {
		os.Truncate(job.log, logSize)
		began := time.Now()
		out, err := exec.Command(bin, "restore", "--detach", img).CombinedOutput()
		d = max(d, time.Since(began))
		if err != nil {
			t.Fatalf("restore: %v: %s", err, out)
		}
		unix.Kill(job.pid, unix.SIGKILL)
		waitPIDFree(t, job.pid, 10*time.Second)
	}
	r.notes = append(r.notes, fmt.Sprintf("kill uniform over the restore's %v", d.Round(time.Millisecond)))
	finished := 0
	for i := 0; i < n; i++ {
		at := time.Duration(rand.Int64N(int64(d)))
		done, h := restoreOnce(at)
		if done {
			finished++
		}
		if h != "" {
			r.harm("trial %d, killed after %v: a restored process is left broken: %s", i, at, h)
		}
		if left := leftChpox(); len(left) > 0 {
			r.harm("trial %d, killed after %v: processes left (a loader): %v", i, at, left)
			for _, pid := range left {
				unix.Kill(pid, unix.SIGKILL)
			}
		}
		if bad := imageOK(img); bad != "" {
			r.lose("trial %d: %s", i, bad)
			break
		}
	}
	r.notes = append(r.notes, fmt.Sprintf("%d finished, %d left nothing", finished, n-finished))
	return r
}

// gone waits up to a second for pid to end, reaping it (an orphan comes
// to us as the subreaper).
func gone(pid int) bool {
	for i := 0; i < 100; i++ {
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		if !pidExists(pid) {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// leftChpox lists our children (orphans come to us) that run the chpox
// binary: a restore's loader outliving its chpox.
func leftChpox() []int {
	var out []int
	for i := 0; i < 50; i++ {
		out = nil
		for _, pid := range childrenOf(os.Getpid()) {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			if c := strings.TrimSpace(string(comm)); c != "chpox" && !strings.HasPrefix(c, "chpox-") {
				continue // not ours to reap: others wait for their own children
			}
			var ws unix.WaitStatus
			if p, _ := unix.Wait4(pid, &ws, unix.WNOHANG, nil); p == pid {
				continue
			}
			out = append(out, pid)
		}
		if len(out) == 0 {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return out
}

func faultKilledRuns(t *testing.T, bin string, n int) *faultRow {
	r := &faultRow{fault: "chpox run killed in checkpoints", trials: n}
	dir := t.TempDir()
	img := filepath.Join(dir, "job.img")
	var took time.Duration
	checkpoints, wakers := 0, 0
	for i := 0; i < n; i++ {
		out := filepath.Join(dir, fmt.Sprintf("job%d.out", i))
		errPath := filepath.Join(dir, fmt.Sprintf("run%d.err", i))
		fo, _ := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		fe, _ := os.OpenFile(errPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		cmd := exec.Command(bin, "run", "-o", img, "--", progs["faultjob"])
		cmd.Stdout, cmd.Stderr = fo, fe
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		fo.Close()
		fe.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		jobPID := 0
		t.Cleanup(func() {
			cmd.Process.Kill()
			<-done
			if jobPID > 0 {
				unix.Kill(jobPID, unix.SIGKILL)
			}
		})
		deadline := time.Now().Add(10 * time.Second)
		for jobPID == 0 || lastInt(out, `tick (\d+)`) < 20 {
			if jobPID == 0 {
				jobPID = lastInt(errPath, `job pid (\d+);`)
				if jobPID < 0 {
					jobPID = 0
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("chpox run did not start the job: %s", tail(errPath))
			}
			time.Sleep(5 * time.Millisecond)
		}
		job := adopt(t, "faultjob(run)", jobPID, out)
		var waker int
		for _, c := range childrenOf(cmd.Process.Pid) {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", c)); strings.TrimSpace(string(comm)) == "sleep" {
				waker = c
			}
		}
		if took == 0 {
			// One checkpoint's duration, from the trigger to its report.
			began := time.Now()
			unix.Kill(jobPID, unix.SIGUSR2)
			for !strings.Contains(tail(errPath), "checkpoint 1 ") {
				if time.Now().After(began.Add(10 * time.Second)) {
					t.Fatalf("no checkpoint: %s", tail(errPath))
				}
				time.Sleep(time.Millisecond)
			}
			took = time.Since(began)
			r.notes = append(r.notes, fmt.Sprintf("SIGUSR2 storm every 2ms, kill uniform over 3x a checkpoint's %v", took.Round(time.Millisecond)))
		}
		var stop atomic.Bool
		stormDone := make(chan struct{})
		go func() {
			defer close(stormDone)
			for !stop.Load() {
				unix.Kill(jobPID, unix.SIGUSR2)
				time.Sleep(2 * time.Millisecond)
			}
		}()
		time.Sleep(time.Duration(rand.Int64N(int64(3 * took))))
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		stop.Store(true)
		<-stormDone
		checkpoints += strings.Count(tail(errPath), ": checkpoint")
		if h := jobHealth(jobPID, out); h != "" {
			r.harm("trial %d: %s; log:\n%s", i, h, tail(out))
		}
		if waker > 0 && !gone(waker) {
			wakers++
			r.fail("trial %d: the doorbell sleep %d outlived chpox run: %s", i, waker, procState(waker))
			unix.Kill(waker, unix.SIGKILL)
		}
		if _, err := os.Stat(img); err == nil {
			if bad := imageOK(img); bad != "" {
				r.lose("trial %d: %s", i, bad)
			}
		}
		job.kill()
	}
	r.notes = append(r.notes, fmt.Sprintf("%d checkpoints reported before the kills; %d doorbell sleeps outlived chpox", checkpoints, wakers))
	return r
}

// faultNoSpace fills a small tmpfs: once before the dump (refused before
// anything is frozen), and during dumps, from a random instant on.
func faultNoSpace(t *testing.T, bin string, n int) *faultRow {
	r := &faultRow{fault: "output file system full", trials: n + 1}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=2m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	img := filepath.Join(dir, "job.img")
	fill := filepath.Join(dir, "fill")
	job := start(t, "faultjob")
	job.waitLog(t, `tick 20 `, 1, 10*time.Second)
	d := timed(t, bin, "dump", strconv.Itoa(job.pid), "-o", img)
	fillUp := func() {
		f, err := os.OpenFile(fill, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return
		}
		defer f.Close()
		chunk := make([]byte, 64<<10)
		for {
			if _, err := f.Write(chunk); err != nil {
				chunk = chunk[:4096]
				if _, err := f.Write(chunk); err != nil {
					return
				}
			}
		}
	}
	check := func(i int, res []byte) {
		if h := jobHealth(job.pid, job.log); h != "" {
			r.harm("trial %d: %s", i, h)
		}
		if bad := imageOK(img); bad != "" {
			r.lose("trial %d: %s", i, bad)
		}
		if left := tempFiles(dir); len(left) > 0 {
			r.lose("trial %d: temporary files left: %v (chpox said %q)", i, left, res)
		}
	}
	// Full before the dump: refused at once, with advice.
	fillUp()
	out, err := exec.Command(bin, "dump", strconv.Itoa(job.pid), "-o", img).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "free some space") {
		r.fail("dump into a full file system: %v, %q; want a refusal that says to free some space", err, out)
	}
	check(0, out)
	refused, midWrite, ok := 1, 0, 0
	for i := 1; i <= n; i++ {
		os.Remove(fill)
		cmd := exec.Command(bin, "dump", strconv.Itoa(job.pid), "-o", img)
		var buf strings.Builder
		cmd.Stdout, cmd.Stderr = &buf, &buf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(d))))
		fillUp()
		err := cmd.Wait()
		switch {
		case err == nil:
			ok++
		case strings.Contains(buf.String(), "free some space"):
			refused++
		case strings.Contains(buf.String(), "no space left"):
			midWrite++
		default:
			r.fail("trial %d: dump failed otherwise: %s", i, buf.String())
		}
		check(i, []byte(buf.String()))
	}
	os.Remove(fill)
	r.notes = append(r.notes, fmt.Sprintf("%d refused before freezing, %d ENOSPC mid-write, %d fitted", refused, midWrite, ok))
	return r
}

// faultConcurrent runs two dumps of one process at once.
func faultConcurrent(t *testing.T, bin string, n int) *faultRow {
	r := &faultRow{fault: "two dumps of one process at once", trials: n}
	dir := t.TempDir()
	img := filepath.Join(dir, "job.img")
	job := start(t, "faultjob")
	job.waitLog(t, `tick 20 `, 1, 10*time.Second)
	both := 0
	for i := 0; i < n; i++ {
		type res struct {
			out []byte
			err error
		}
		ch := make(chan res, 2)
		for k := 0; k < 2; k++ {
			go func() {
				out, err := exec.Command(bin, "dump", strconv.Itoa(job.pid), "-o", img).CombinedOutput()
				ch <- res{out, err}
			}()
		}
		a, b := <-ch, <-ch
		if a.err == nil && b.err == nil {
			both++
		}
		for _, x := range []res{a, b} {
			if x.err != nil && !strings.Contains(string(x.out), "already traced by pid") && !strings.Contains(string(x.out), "being checkpointed by another chpox dump") {
				r.fail("trial %d: the failing dump said %q", i, x.out)
			}
		}
		if a.err != nil && b.err != nil {
			r.fail("trial %d: both dumps failed: %q, %q", i, a.out, b.out)
		}
		if h := jobHealth(job.pid, job.log); h != "" {
			r.harm("trial %d: %s", i, h)
		}
		if bad := imageOK(img); bad != "" {
			r.lose("trial %d: %s", i, bad)
		}
	}
	r.notes = append(r.notes, fmt.Sprintf("%d times both succeeded one after the other, else one refused", both))
	return r
}
