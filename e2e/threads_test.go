package e2e

import (
	"fmt"
	"math/rand/v2"
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

// The multi-threaded targets are built here, once, on first use: the
// pthread program with gcc, the Go program with this module's go.
var (
	threadProgsOnce sync.Once
	threadProgsErr  error
)

func setupThreads(t *testing.T) {
	t.Helper()
	setup(t)
	threadProgsOnce.Do(func() {
		root, err := repoRoot()
		if err != nil {
			threadProgsErr = err
			return
		}
		builds := []struct {
			name string
			cmd  *exec.Cmd
		}{
			{"pthreads", exec.Command("gcc", "-O1", "-g", "-Wall", "-pthread", "-o", filepath.Join(workDir, "pthreads"), filepath.Join(root, "testdata", "pthreads.c"))},
			{"goprog", exec.Command("go", "build", "-o", filepath.Join(workDir, "goprog"), "./testdata/goprog")},
		}
		for _, b := range builds {
			b.cmd.Dir = root
			if out, err := b.cmd.CombinedOutput(); err != nil {
				threadProgsErr = fmt.Errorf("build %s: %v\n%s", b.name, err, out)
				return
			}
			progs[b.name] = filepath.Join(workDir, b.name)
		}
		progs["pythreads.py"] = filepath.Join(root, "testdata", "pythreads.py")
	})
	if threadProgsErr != nil {
		t.Fatal(threadProgsErr)
	}
}

// randomPause waits between lo and hi so the checkpoint lands at an
// unplanned moment of the program's run; the seed is logged.
func randomPause(t *testing.T, lo, hi time.Duration) {
	d := lo + time.Duration(rand.Int64N(int64(hi-lo)))
	t.Logf("checkpoint after %v", d)
	time.Sleep(d)
}

// killRestoredAtEnd kills, at the end of the test, the process a
// foreground restore brought back as pid, if it still runs (comm name): a
// restore that times out kills chpox, and the restored program would go
// on for good.
func killRestoredAtEnd(t *testing.T, pid int, name string) {
	t.Cleanup(func() {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == name {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
}

// checkpointAndFinish starts a program, checkpoints it at a random moment
// while it works, kills it, restores it in the foreground and returns the
// log once the restored program has finished by itself with status 0.
func checkpointAndFinish(t *testing.T, name string, lo, hi time.Duration, args ...string) string {
	t.Helper()
	p := start(t, name, args...)
	p.waitLog(t, `(?m)^ready$`, 1, 30*time.Second)
	randomPause(t, lo, hi)
	if p.exited() {
		t.Fatalf("%s finished before the checkpoint; make it run longer", name)
	}
	img := dumpKill(t, p)
	insp := mustChpox(t, "inspect", img)
	t.Logf("threads in the image: %d", strings.Count(insp.stdout, "  thread "))
	killRestoredAtEnd(t, p.pid, name)
	r := runChpox(t, "restore", img)
	if r.code != 0 {
		t.Fatalf("chpox restore: exit %d; stderr:\n%s\nlog:\n%s", r.code, r.stderr, tail(p.log))
	}
	return tail(p.log)
}

// TestPthreads: 8 workers with __thread counters, a mutex and two condition
// variables, checkpointed mid-run; the restored program joins its threads
// and gets the uninterrupted totals.
func TestPthreads(t *testing.T) {
	setupThreads(t)
	p := start(t, "pthreads", "20000")
	p.waitLog(t, `(?m)^ready$`, 1, 30*time.Second)
	randomPause(t, 200*time.Millisecond, 1500*time.Millisecond)
	img := dumpKill(t, p)
	insp := mustChpox(t, "inspect", img)
	if n := strings.Count(insp.stdout, "  thread "); n != 9 {
		t.Errorf("inspect lists %d threads, want 9 (main and 8 workers):\n%s", n, insp.stdout)
	}
	killRestoredAtEnd(t, p.pid, "pthreads")
	r := runChpox(t, "restore", img)
	if r.code != 0 {
		t.Fatalf("chpox restore: exit %d; stderr:\n%s\nlog:\n%s", r.code, r.stderr, tail(p.log))
	}
	want := fmt.Sprintf("pthreads ok 20000 %d", sumSquaresMod(20000))
	if !strings.Contains(tail(p.log), want) {
		t.Fatalf("restored program did not report %q:\n%s", want, tail(p.log))
	}
}

// sumSquaresMod is what pthreads.c computes, so the test knows the answer
// independently of the program.
func sumSquaresMod(n int64) int64 {
	var s int64
	for v := int64(1); v <= n; v++ {
		s += v * v % 1000003
	}
	return s
}

// TestGoProgram: goroutines, tickers, a map, GC and async preemption with
// GOMAXPROCS 2 and 4, checkpointed mid-run.
func TestGoProgram(t *testing.T) {
	setupThreads(t)
	for _, procs := range []string{"2", "4"} {
		t.Run("GOMAXPROCS="+procs, func(t *testing.T) {
			t.Setenv("GOMAXPROCS", procs)
			log := checkpointAndFinish(t, "goprog", 300*time.Millisecond, 1500*time.Millisecond, "2500")
			want := "go ok 40 goroutines x 2500 ticks, GOMAXPROCS=" + procs
			if !strings.Contains(log, want) {
				t.Fatalf("restored program did not report %q:\n%s", want, log)
			}
		})
	}
}

// TestPythonThreads: a ThreadPoolExecutor's results after restore equal an
// uninterrupted run's.
func TestPythonThreads(t *testing.T) {
	setupThreads(t)
	ref := start(t, "pythreads.py", "48")
	if st := ref.waitExit(t, 60*time.Second); st != "exit status 0" {
		t.Fatalf("uninterrupted run: %s\n%s", st, tail(ref.log))
	}
	digest := regexp.MustCompile(`(?m)^py threads 48 [0-9a-f]+$`)
	want := digest.FindString(tail(ref.log))
	if want == "" {
		t.Fatalf("uninterrupted run printed no digest:\n%s", tail(ref.log))
	}
	log := checkpointAndFinish(t, "pythreads.py", 200*time.Millisecond, 800*time.Millisecond, "48")
	if got := digest.FindString(log); got != want {
		t.Fatalf("restored run printed %q, uninterrupted %q:\n%s", got, want, log)
	}
}

// TestRestoredTwice: a process restored once is checkpointed and restored
// again (its vDSO, memory and threads are chpox-made this time).
func TestRestoredTwice(t *testing.T) {
	setupThreads(t)
	p := start(t, "pthreads", "20000")
	p.waitLog(t, `(?m)^ready$`, 1, 30*time.Second)
	randomPause(t, 100*time.Millisecond, 600*time.Millisecond)
	img := dumpKill(t, p)
	r1 := restoreDetached(t, img, p)
	randomPause(t, 100*time.Millisecond, 600*time.Millisecond)
	if r1.exited() {
		t.Fatalf("the restored program ended before the second checkpoint: %s\n%s", r1.status, tail(p.log))
	}
	img2 := filepath.Join(t.TempDir(), "again.img")
	mustChpox(t, "dump", strconv.Itoa(r1.pid), "-o", img2, "--kill")
	<-r1.done
	waitPIDFree(t, p.pid, 10*time.Second)
	r := runChpox(t, "restore", img2)
	if r.code != 0 {
		t.Fatalf("second restore: exit %d; stderr:\n%s\nlog:\n%s", r.code, r.stderr, tail(p.log))
	}
	if want := fmt.Sprintf("pthreads ok 20000 %d", sumSquaresMod(20000)); !strings.Contains(tail(p.log), want) {
		t.Fatalf("twice-restored program did not report %q:\n%s", want, tail(p.log))
	}
}

// TestStressThreads repeats checkpoint/restore of the Go and the pthread
// program CHPOX_STRESS times each (make stress sets 50); without it, 3.
func TestStressThreads(t *testing.T) {
	setupThreads(t)
	n := 3
	if v, err := strconv.Atoi(os.Getenv("CHPOX_STRESS")); err == nil && v > 0 {
		n = v
	}
	t.Setenv("GOMAXPROCS", "2")
	ok := map[string]int{}
	for i := 0; i < n; i++ {
		t.Run(fmt.Sprintf("pthreads-%d", i), func(t *testing.T) {
			if log := checkpointAndFinish(t, "pthreads", 50*time.Millisecond, 500*time.Millisecond, "6000"); strings.Contains(log, "pthreads ok 6000 ") {
				ok["pthreads"]++
			} else {
				t.Fatalf("no success line:\n%s", log)
			}
		})
		t.Run(fmt.Sprintf("goprog-%d", i), func(t *testing.T) {
			if log := checkpointAndFinish(t, "goprog", 100*time.Millisecond, 600*time.Millisecond, "800"); strings.Contains(log, "go ok 40 goroutines x 800 ticks") {
				ok["goprog"]++
			} else {
				t.Fatalf("no success line:\n%s", log)
			}
		})
	}
	t.Logf("successful checkpoint/restore cycles: pthreads %d/%d, goprog %d/%d", ok["pthreads"], n, ok["goprog"], n)
}

// TestPendingSignals: a signal pending in one thread (sent with tgkill,
// si_code SI_TKILL) and one pending for the whole process survive a
// checkpoint and are delivered, with their codes, once unblocked.
func TestPendingSignals(t *testing.T) {
	setup(t, "pending")
	p := start(t, "pending")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	insp := mustChpox(t, "inspect", img)
	if !strings.Contains(insp.stdout, "1 pending") {
		t.Errorf("inspect shows no thread with a pending signal:\n%s", insp.stdout)
	}
	r := restoreDetached(t, img, p)
	r.waitLog(t, `(?m)^usr2 in worker code -6$`, 1, 10*time.Second)
	r.waitLog(t, `(?m)^usr1 code 0$`, 1, 10*time.Second)
}

// TestDumpThreadChurn: threads are born and end all the time while the
// process is frozen, read and released, 20 times; every dump succeeds or
// says why, the program's own checks hold, and the --kill image goes on.
func TestDumpThreadChurn(t *testing.T) {
	setup(t, "threadchurn")
	dumpWhileChanging(t, start(t, "threadchurn"), "a thread-churning process", `(?m)^round (\d+)$`, 100, 300)
}
