// Package bench measures dump and restore throughput of a process with a
// large touched heap against two limits measured in the same run: memcpy on
// warm memory and a first write into freshly mapped memory (on ballooned VMs
// the latter is the real ceiling for filling page cache or a new process).
// Only ratios are meaningful across machines.
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
	"github.com/chpox/chpox/pkg/ptrace"
	"github.com/chpox/chpox/pkg/restore"
)

var tracer = ptrace.NewTracer()

// Descriptors inherited without close-on-exec (from a shell or CI runner)
// would leak into the benchmark's target and make dump refuse it.
func init() { unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC) }

func benchMiB() int {
	if v, err := strconv.Atoi(os.Getenv("CHPOX_BENCH_MIB")); err == nil && v > 0 {
		return v
	}
	return 1024
}

// startBig builds and starts testdata/bigmem.c holding mib MiB.
func startBig(b *testing.B, dir string, mib int) int {
	bin := filepath.Join(dir, "bigmem")
	if out, err := exec.Command("gcc", "-O2", "-o", bin, "../testdata/bigmem.c").CombinedOutput(); err != nil {
		b.Fatalf("build bigmem: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, strconv.Itoa(mib))
	// Output goes to a file: dump refuses pipes (not supported yet).
	logPath := filepath.Join(dir, "bigmem.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	logf.Close()
	waitFor(b, logPath, "ready", 60*time.Second)
	return cmd.Process.Pid
}

func waitFor(b *testing.B, path, what string, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), what) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	data, _ := os.ReadFile(path)
	b.Fatalf("%s: no %q after %v; log: %s", path, what, d, data)
}

// memcpyGBps measures copy between two warm buffers of n bytes.
func memcpyGBps(n int) float64 {
	src, dst := make([]byte, n), make([]byte, n)
	for i := range src {
		src[i] = byte(i)
	}
	copy(dst, src) // warm both
	t := time.Now()
	copy(dst, src)
	return float64(n) / time.Since(t).Seconds() / 1e9
}

// freshWriteGBps measures the first write into n bytes of newly mapped
// memory, copying from a warm 8 MiB buffer as dump and restore do.
func freshWriteGBps(n int) float64 {
	src := make([]byte, 8<<20)
	for i := range src {
		src[i] = byte(i)
	}
	m, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0
	}
	defer unix.Munmap(m)
	t := time.Now()
	for off := 0; off < n; off += len(src) {
		copy(m[off:], src)
	}
	return float64(n) / time.Since(t).Seconds() / 1e9
}

func BenchmarkDumpRestore(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (ptrace and clone3 set_tid)")
	}
	mib := benchMiB()
	dir := b.TempDir()
	pid := startBig(b, dir, mib)
	defer func() { unix.Kill(pid, unix.SIGKILL); var ws unix.WaitStatus; unix.Wait4(pid, &ws, 0, nil) }()
	img := filepath.Join(dir, "big.chp")
	n := mib << 20

	var dumpSec, frozenSec, restoreSec, freshSum, memcpySum float64
	var data int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		memcpySum += memcpyGBps(256 << 20)
		freshSum += freshWriteGBps(n)
		os.Remove(img) // each dump writes a new file, as in real use
		t := time.Now()
		res, err := dump.Dump(tracer, pid, dump.Options{Output: img})
		if err != nil {
			b.Fatal(err)
		}
		dumpSec += time.Since(t).Seconds()
		frozenSec += res.Frozen.Seconds()
		data = res.DataBytes

		unix.Kill(pid, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(pid, &ws, 0, nil)
		t = time.Now()
		r, err := restore.Restore(tracer, img, restore.Options{PIDWaitMS: 2000})
		if err != nil {
			b.Fatal(err)
		}
		restoreSec += time.Since(t).Seconds()
		pid = r.PID
	}
	b.StopTimer()
	verify(b, pid, filepath.Join(dir, "bigmem.log"))

	fmt.Printf("\n%d MiB touched, %.0f MiB in image, %d rounds\n", mib, float64(data)/(1<<20), b.N)
	reportRates(b, data, timings{dump: dumpSec, frozen: frozenSec, restore: restoreSec, memcpy: memcpySum, fresh: freshSum})
}

// timings are the sums over a benchmark's rounds: seconds of dump (with
// fsync), frozen and restore, and the GB/s of the two limits measured in
// each round.
type timings struct{ dump, frozen, restore, memcpy, fresh float64 }

// reportRates reports dump and restore throughput of data bytes per round
// as ratios to this machine's memcpy and fresh-write speed of the same run,
// as metrics and as a table.
func reportRates(b *testing.B, data int64, s timings) {
	N := float64(b.N)
	gb := float64(data) / 1e9
	memcpy, fresh := s.memcpy/N, s.fresh/N
	dumpRate, restoreRate := gb/(s.frozen/N), gb/(s.restore/N)
	b.ReportMetric(dumpRate/fresh, "dump/fresh")
	b.ReportMetric(restoreRate/fresh, "restore/fresh")
	b.ReportMetric(dumpRate/memcpy, "dump/memcpy")
	b.ReportMetric(restoreRate/memcpy, "restore/memcpy")
	b.ReportMetric(s.frozen/N*1000, "frozen-ms")
	b.ReportMetric(s.restore/N*1000, "restore-ms")
	fmt.Printf("  limit  memcpy (warm)          %6.2f GB/s\n", memcpy)
	fmt.Printf("  limit  first write (fresh)    %6.2f GB/s\n", fresh)
	fmt.Printf("  dump   while frozen           %6.2f GB/s  = %.2f x fresh, %.2f x memcpy (frozen %.0f ms, with fsync %.0f ms)\n",
		dumpRate, dumpRate/fresh, dumpRate/memcpy, s.frozen/N*1000, s.dump/N*1000)
	fmt.Printf("  restore until running         %6.2f GB/s  = %.2f x fresh, %.2f x memcpy (%.0f ms)\n",
		restoreRate, restoreRate/fresh, restoreRate/memcpy, s.restore/N*1000)
}

// verify makes the restored process check its own memory.
func verify(b *testing.B, pid int, log string) {
	unix.Kill(pid, unix.SIGUSR1)
	waitFor(b, log, "bigmem ", 60*time.Second)
	data, _ := os.ReadFile(log)
	if !strings.Contains(string(data), "bigmem ok") {
		b.Fatalf("restored process memory is wrong: %s", data)
	}
}
