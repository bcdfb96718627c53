package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/restore"
)

// startLazymem builds and starts testdata/lazymem.c idle with mib MiB and
// a heartbeat thread appending to beat every 0.5 ms.
func startLazymem(b *testing.B, dir string, mib int, beat string) (int, string) {
	bin := filepath.Join(dir, "lazymem")
	if out, err := exec.Command("gcc", "-O2", "-pthread", "-o", bin, "../testdata/lazymem.c").CombinedOutput(); err != nil {
		b.Fatalf("build lazymem: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, strconv.Itoa(mib), beat, "idle")
	logPath := filepath.Join(dir, "lazymem.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	logf.Close()
	waitFor(b, logPath, "ready", 120*time.Second)
	return cmd.Process.Pid, logPath
}

// running returns a channel that receives the time the file at path first
// grows past its size now: the restored process's heartbeat thread ran.
func running(path string) <-chan time.Time {
	var size int64
	if st, err := os.Stat(path); err == nil {
		size = st.Size()
	}
	ch := make(chan time.Time, 1)
	go func() {
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) {
			if st, err := os.Stat(path); err == nil && st.Size() > size {
				ch <- time.Now()
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
		close(ch)
	}()
	return ch
}

// lazyRound dumps pid (killing it), restores it eagerly or lazily and
// returns the new pid, the time to running (the heartbeat's first byte
// after restore began) and to complete (restore returned, and for lazy the
// copy was done).
func lazyRound(b *testing.B, pid int, img, beat string, lazy bool) (int, time.Duration, time.Duration, int64) {
	os.Remove(img)
	res, err := dump.Dump(tracer, pid, dump.Options{Output: img})
	if err != nil {
		b.Fatal(err)
	}
	unix.Kill(pid, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(pid, &ws, 0, nil)
	// Settle: the dump's page cache writeback and the kill's unmapping.
	time.Sleep(500 * time.Millisecond)
	ran := running(beat)
	t := time.Now()
	r, err := restore.Restore(tracer, img, restore.Options{PIDWaitMS: 2000, Lazy: lazy})
	if err != nil {
		b.Fatal(err)
	}
	if lazy && r.Lazy == nil {
		b.Fatalf("restore --lazy filled nothing lazily (%s)", r.NotLazy)
	}
	if r.Lazy != nil {
		if _, err := r.Lazy.Wait(); err != nil {
			b.Fatal(err)
		}
	}
	ttc := time.Since(t)
	at, ok := <-ran
	if !ok {
		b.Fatal("the restored process never beat")
	}
	return r.PID, at.Sub(t), ttc, res.DataBytes
}

// BenchmarkLazyRestore compares restore --lazy with the eager restore of
// the same process (CHPOX_BENCH_LIVE_MIB if set, as make bench does, else
// CHPOX_BENCH_MIB, default 1024, MiB of which 7/8 are written): time to running (ttr: restore start until the process's
// heartbeat thread writes) and time to complete (ttc: until all memory is
// in), as ratios to the time a first write of the data into fresh memory
// takes in the same run (fresh), and to memcpy of it.
func BenchmarkLazyRestore(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (ptrace and clone3 set_tid)")
	}
	sizes := []int{benchMiB()}
	if os.Getenv("CHPOX_BENCH_LIVE_MIB") != "" {
		sizes = liveSizes() // make bench: 1 and 4 GiB
	}
	for _, mib := range sizes {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) { benchLazy(b, mib) })
	}
}

func benchLazy(b *testing.B, mib int) {
	dir := b.TempDir()
	beat := filepath.Join(dir, "beat")
	pid, log := startLazymem(b, dir, mib, beat)
	defer func() { unix.Kill(pid, unix.SIGKILL); var ws unix.WaitStatus; unix.Wait4(pid, &ws, 0, nil) }()
	img := filepath.Join(dir, "lazy.chp")
	var ttrE, ttcE, ttrL, ttcL, memcpySum, freshSum float64
	var data int64
	passes := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		memcpySum += memcpyGBps(256 << 20)
		freshSum += freshWriteGBps(mib << 20)
		// Every other round lazy goes first: each restore gets the memory
		// the previous one's process left, and on this VM memory freed
		// just now is written faster than memory idle for a while.
		for _, lazy := range [][]bool{{false, true}, {true, false}}[i%2] {
			var r, c time.Duration
			pid, r, c, data = lazyRound(b, pid, img, beat, lazy)
			if lazy {
				ttrL, ttcL = ttrL+r.Seconds(), ttcL+c.Seconds()
			} else {
				ttrE, ttcE = ttrE+r.Seconds(), ttcE+c.Seconds()
			}
			passes++
			checkPass(b, pid, log, passes)
		}
	}
	b.StopTimer()
	N := float64(b.N)
	gb := float64(data) / 1e9
	fresh, memcpy := freshSum/N, memcpySum/N
	freshSec, memcpySec := gb/fresh, gb/memcpy
	ttrE, ttcE, ttrL, ttcL = ttrE/N, ttcE/N, ttrL/N, ttcL/N
	b.ReportMetric(ttrE*1000, "ttr-eager-ms")
	b.ReportMetric(ttcE*1000, "ttc-eager-ms")
	b.ReportMetric(ttrL*1000, "ttr-lazy-ms")
	b.ReportMetric(ttcL*1000, "ttc-lazy-ms")
	b.ReportMetric(ttrL/ttrE, "ttr-lazy/eager")
	b.ReportMetric(ttcL/ttcE, "ttc-lazy/eager")
	b.ReportMetric(ttrE/freshSec, "ttr-eager/fresh")
	b.ReportMetric(ttrL/freshSec, "ttr-lazy/fresh")
	b.ReportMetric(ttcL/freshSec, "ttc-lazy/fresh")
	fmt.Printf("\n%d MiB process, %.0f MiB of data, %d rounds\n", mib, float64(data)/(1<<20), b.N)
	fmt.Printf("  limit  memcpy (warm)        %6.2f GB/s: the data in %6.0f ms\n", memcpy, memcpySec*1000)
	fmt.Printf("  limit  first write (fresh)  %6.2f GB/s: the data in %6.0f ms\n", fresh, freshSec*1000)
	fmt.Printf("  %-8s %12s %12s %14s %14s\n", "restore", "ttr ms", "ttc ms", "ttr / fresh", "ttc / fresh")
	fmt.Printf("  %-8s %12.0f %12.0f %14.3f %14.2f\n", "eager", ttrE*1000, ttcE*1000, ttrE/freshSec, ttcE/freshSec)
	fmt.Printf("  %-8s %12.0f %12.0f %14.3f %14.2f\n", "lazy", ttrL*1000, ttcL*1000, ttrL/freshSec, ttcL/freshSec)
	fmt.Printf("  lazy / eager: ttr %.3f, ttc %.2f\n", ttrL/ttrE, ttcL/ttcE)
}

// checkPass makes the restored process check all its memory (SIGUSR2)
// and waits for its n-th "pass N ok".
func checkPass(b *testing.B, pid int, log string, n int) {
	unix.Kill(pid, unix.SIGUSR2)
	want := fmt.Sprintf("pass %d ", n)
	waitFor(b, log, want, 120*time.Second)
	data, _ := os.ReadFile(log)
	if strings.Contains(string(data), "FAIL") || !strings.Contains(string(data), want+"ok") {
		b.Fatalf("restored process memory is wrong: %s", data)
	}
}
