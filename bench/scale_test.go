package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/restore"
)

// BenchmarkScale checkpoints (--kill) and restores processes holding many
// of one thing — processes in a tree, threads, mappings, open files — at a
// quarter of the size and at full size, and reports the cost per item and
// how it grows: growth 1.0 is linear, 4.0 would be quadratic.
func BenchmarkScale(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (ptrace and clone3 set_tid)")
	}
	// Restored trees are children of this process; their orphans must
	// come back to it to be reaped, or PIDs stay taken by zombies.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	dir := b.TempDir()
	bin := filepath.Join(dir, "scale")
	if out, err := exec.Command("gcc", "-O2", "-pthread", "-o", bin, "../testdata/scale.c").CombinedOutput(); err != nil {
		b.Fatalf("build scale: %v\n%s", err, out)
	}
	// 100,000 separate mappings exceed the default vm.max_map_count.
	const mapCount = "/proc/sys/vm/max_map_count"
	if old, err := os.ReadFile(mapCount); err == nil {
		os.WriteFile(mapCount, []byte("262144"), 0o644)
		defer os.WriteFile(mapCount, old, 0o644)
	}
	for _, c := range []struct {
		mode string
		full int
	}{{"procs", 200}, {"threads", 1000}, {"maps", 100000}, {"files", 10000}} {
		b.Run(c.mode, func(b *testing.B) {
			var perItem [2]float64 // seconds per item: quarter size, full size
			for b.Loop() {
				for i, n := range []int{c.full / 4, c.full} {
					d, r := scaleRound(b, dir, bin, c.mode, n)
					perItem[i] += (d + r) / float64(n)
				}
			}
			b.ReportMetric(perItem[1]/float64(b.N)*1e6, "µs/item")
			b.ReportMetric(perItem[1]/perItem[0], "growth")
			fmt.Printf("\n  %-8s %6d: dump+restore %.1f µs per item at full size; cost per item at full / quarter size = %.2f (1.0 = linear)\n",
				c.mode, c.full, perItem[1]/float64(b.N)*1e6, perItem[1]/perItem[0])
		})
	}
}

// scaleRound starts the program holding n items, dumps it with --kill,
// restores it, has it check itself and returns dump and restore seconds.
func scaleRound(b *testing.B, dir, bin, mode string, n int) (float64, float64) {
	logPath := filepath.Join(dir, mode+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	os.WriteFile(data, make([]byte, 4096), 0o644)
	cmd := exec.Command(bin, mode, strconv.Itoa(n), data)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its own group: killed as one
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	logf.Close()
	pid := cmd.Process.Pid
	defer reapAll(pid)
	cmd.Process.Release() // reaped by reapAll, with the rest of the tree
	waitFor(b, logPath, "ready", 60*time.Second)

	img := filepath.Join(dir, mode+".chp")
	t := time.Now()
	if _, err := dump.Dump(tracer, pid, dump.Options{Output: img, Kill: true}); err != nil {
		b.Fatal(err)
	}
	dumpSec := time.Since(t).Seconds()
	reapAll(pid) // the killed tree: its orphans came back to this subreaper
	t = time.Now()
	if _, err := restore.Restore(tracer, img, restore.Options{PIDWaitMS: 5000}); err != nil {
		b.Fatal(err)
	}
	restoreSec := time.Since(t).Seconds()
	unix.Kill(pid, unix.SIGUSR1)
	waitFor(b, logPath, "scale ", 60*time.Second)
	if out, _ := os.ReadFile(logPath); !containsLine(string(out), fmt.Sprintf("scale ok %s %d", mode, n)) {
		b.Fatalf("restored %s %d: %s", mode, n, out)
	}
	return dumpSec, restoreSec
}

func containsLine(s, line string) bool {
	return slices.Contains(strings.Split(s, "\n"), line)
}

// reapAll kills the tree of pid and reaps everything that comes back to
// this subreaper, so that the next round finds its PIDs free.
func reapAll(pid int) {
	unix.Kill(-pid, unix.SIGKILL)
	unix.Kill(pid, unix.SIGKILL)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		var ws unix.WaitStatus
		if _, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil); err != nil {
			return // no children left
		}
		time.Sleep(time.Millisecond)
	}
}
