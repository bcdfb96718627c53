package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
)

// liveSizes: CHPOX_BENCH_LIVE_MIB, sizes in MiB separated by commas.
func liveSizes() []int {
	var out []int
	for _, f := range strings.Split(os.Getenv("CHPOX_BENCH_LIVE_MIB"), ",") {
		if v, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && v > 0 {
			out = append(out, v)
		}
	}
	if len(out) == 0 {
		out = []int{1024}
	}
	return out
}

// writer is testdata/livewriter.c: random page writes, 64 per loop
// iteration and 1 ms of sleep (about 256 MB/s of new dirty pages); it
// measures its own longest gap between two iterations.
type writer struct {
	pid    int
	log    string
	checks int
}

func startWriter(b *testing.B, dir string, mib int) *writer {
	bin := filepath.Join(dir, "livewriter")
	if out, err := exec.Command("gcc", "-O2", "-I../testdata", "-o", bin, "../testdata/livewriter.c").CombinedOutput(); err != nil {
		b.Fatalf("build livewriter: %v\n%s", err, out)
	}
	w := &writer{log: filepath.Join(dir, fmt.Sprintf("livewriter-%d.log", mib))}
	logf, err := os.Create(w.log)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, strconv.Itoa(mib), "64", "1000")
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	logf.Close()
	w.pid = cmd.Process.Pid
	waitFor(b, w.log, "ready", 120*time.Second)
	return w
}

func (w *writer) stop() {
	unix.Kill(w.pid, unix.SIGKILL)
	var ws unix.WaitStatus
	unix.Wait4(w.pid, &ws, 0, nil)
}

var (
	liveOK   = regexp.MustCompile(`(?m)^live (ok \d+ (\d+)|FAIL.*)$`)
	gapEnded = regexp.MustCompile(`(?m)^gap ended at (\d+)\.(\d{6})$`)
)

// gap asks the writer to check all its pages and returns its longest loop
// gap since the previous call.
func (w *writer) gap(b *testing.B) time.Duration {
	g, _ := w.gapAt(b)
	return g
}

// gapAt is gap and the wall clock at the gap's end.
func (w *writer) gapAt(b *testing.B) (time.Duration, time.Time) {
	unix.Kill(w.pid, unix.SIGUSR1)
	w.checks++
	deadline := time.Now().Add(120 * time.Second)
	for {
		data, _ := os.ReadFile(w.log)
		all := liveOK.FindAllStringSubmatch(string(data), -1)
		if len(all) >= w.checks {
			m := all[w.checks-1]
			if m[2] == "" {
				b.Fatalf("livewriter: %s", m[0])
			}
			us, _ := strconv.Atoi(m[2])
			var end time.Time
			if e := gapEnded.FindAllStringSubmatch(string(data), -1); len(e) >= w.checks {
				sec, _ := strconv.ParseInt(e[w.checks-1][1], 10, 64)
				usec, _ := strconv.ParseInt(e[w.checks-1][2], 10, 64)
				end = time.Unix(sec, usec*1000)
			}
			unix.Kill(w.pid, unix.SIGUSR2) // the next gap starts now
			time.Sleep(20 * time.Millisecond)
			return time.Duration(us) * time.Microsecond, end
		}
		if time.Now().After(deadline) {
			b.Fatalf("livewriter: no check result; log: %s", data)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// BenchmarkLive: a process writing random pages of N MiB is dumped while
// it runs, by today's frozen copy and by --live. Reported: the longest
// stall the process itself saw, averaged over the iterations and the worst
// of them (and, as the noise floor of this shared machine, its longest gap
// over a quiet 2 s), the freeze chpox measured, and the total dump time,
// as ratios to memcpy of the same run. Beside the worst stall: how long
// the host held a vCPU within it (steal time), and the worst stall of the
// iterations in which it held none.
func BenchmarkLive(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (ptrace)")
	}
	for _, mib := range liveSizes() {
		b.Run(fmt.Sprintf("%dMiB", mib), func(b *testing.B) {
			dir := b.TempDir()
			w := startWriter(b, dir, mib)
			defer w.stop()
			img := filepath.Join(dir, "live.chp")
			gb := float64(mib) / 1024 * 1.073741824
			var quiet, fGap, fFrozen, fTotal, lGap, lFrozen, lTotal, lWorst time.Duration
			var lWorstHost, lWorstClean time.Duration
			steal := startSteal()
			defer steal.close()
			var memcpy float64
			rounds := 0
			w.gap(b)
			for i := 0; i < b.N; i++ {
				memcpy += memcpyGBps(256 << 20)
				w.gap(b)
				time.Sleep(2 * time.Second)
				quiet += w.gap(b)
				for _, live := range []bool{false, true} {
					os.Remove(img)
					t := time.Now()
					res, err := dump.Dump(tracer, w.pid, dump.Options{Output: img, Live: live})
					if err != nil {
						b.Fatal(err)
					}
					total := time.Since(t)
					if res.NotLive != "" {
						b.Fatalf("live copy not used: %s", res.NotLive)
					}
					g, end := w.gapAt(b)
					if live {
						lGap, lFrozen, lTotal, rounds = lGap+g, lFrozen+res.Frozen, lTotal+total, rounds+res.Rounds
						host := steal.during(end.Add(-g), end)
						if g > lWorst {
							lWorst, lWorstHost = g, host
						}
						if host == 0 {
							lWorstClean = max(lWorstClean, g)
						}
					} else {
						fGap, fFrozen, fTotal = fGap+g, fFrozen+res.Frozen, fTotal+total
					}
				}
			}
			N := time.Duration(b.N)
			ms := func(d time.Duration) float64 { return float64(d/N) / 1e6 }
			memcpy /= float64(b.N)
			memcpyMs := gb / memcpy * 1000 // copying the memory once at memcpy speed
			b.ReportMetric(ms(lGap), "live-stall-ms")
			b.ReportMetric(float64(lWorst)/1e6, "live-worst-stall-ms")
			b.ReportMetric(float64(lWorstClean)/1e6, "live-worst-unstolen-ms")
			b.ReportMetric(ms(lFrozen), "live-frozen-ms")
			b.ReportMetric(ms(fGap), "frozen-stall-ms")
			b.ReportMetric(ms(lGap)/ms(fGap), "live/frozen-stall")
			fmt.Printf("\n%d MiB, random writes ~256 MB/s; memcpy %.2f GB/s (%.0f ms for this size)\n", mib, memcpy, memcpyMs)
			fmt.Printf("  quiet 2 s (noise floor)  longest gap %6.0f ms\n", ms(quiet))
			fmt.Printf("  frozen copy              stall %6.0f ms (%.1f x memcpy time)  chpox frozen %6.0f ms  total %6.0f ms\n",
				ms(fGap), ms(fGap)/memcpyMs, ms(fFrozen), ms(fTotal))
			fmt.Printf("  --live                   stall %6.0f ms (%.2f x memcpy time)  chpox frozen %6.0f ms  total %6.0f ms  %.1f rounds\n",
				ms(lGap), ms(lGap)/memcpyMs, ms(lFrozen), ms(lTotal), float64(rounds)/float64(b.N))
			fmt.Printf("  --live, worst of %d       stall %6.0f ms, of which the host held a vCPU %.0f ms; worst with no host steal in it %.0f ms\n",
				b.N, float64(lWorst)/1e6, float64(lWorstHost)/1e6, float64(lWorstClean)/1e6)
			fmt.Printf("  live / frozen copy       stall %.3f  total %.2f\n", ms(lGap)/ms(fGap), ms(lTotal)/ms(fTotal))
		})
	}
}
