package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/internal/testutil"
	"github.com/chpox/chpox/pkg/ptrace"
	"github.com/chpox/chpox/pkg/supervisor"
)

// BenchmarkRunCheckpoint: chpox run's checkpoints of testdata/dirtier.c
// holding N MiB (CHPOX_BENCH_LIVE_MIB), on the benchmark's own directory
// and, as root with mkfs.xfs, on an XFS file system of its own (shared
// blocks: an unchanged page costs no write). The first checkpoint is a
// full one; before each later one the process writes 1% of its pages.
// Reported per checkpoint: its time until the image is durable (fsync and
// rename), the longest gap the process itself saw in its 1 ms loop, and
// the bytes taken from the last image; the cost of an incremental one as a
// ratio to the full one, and both against writing the image's bytes at
// the disk's speed with fsync, measured in the same run.
func BenchmarkRunCheckpoint(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (ptrace)")
	}
	fss := []struct{ name, dir string }{{"dir", b.TempDir()}}
	if _, err := exec.LookPath("mkfs.xfs"); err == nil {
		fss = append(fss, struct{ name, dir string }{"xfs", testutil.XFS(b, 3*maxSize()+1024)})
	} else {
		fmt.Println("no mkfs.xfs (make setup installs xfsprogs): the XFS runs are left out")
	}
	for _, fs := range fss {
		for _, mib := range liveSizes() {
			b.Run(fmt.Sprintf("%s/%dMiB", fs.name, mib), func(b *testing.B) {
				benchIncremental(b, fs.dir, mib)
			})
		}
	}
}

func benchIncremental(b *testing.B, dir string, mib int) {
	j := startSupervised(b, dir, mib)
	defer j.stop()
	disk := diskGBps(b, dir, 256<<20)
	full := j.checkpoint(b)
	var inc []checkpoint
	var rewrites int
	var rewriting, rewriteGap time.Duration
	for i := 0; i < b.N; i++ {
		j.dirty(b)
		inc = append(inc, j.checkpoint(b))
		// Checkpoints further apart than a rewrite of the last image
		// takes (Series.Compact): its cost is in the background.
		if d := j.rewritten(b, dir); d > 0 {
			rewrites, rewriting = rewrites+1, rewriting+d
			rewriteGap = max(rewriteGap, j.gap(b))
		}
	}
	var took, gap time.Duration
	var reused int64
	for _, c := range inc {
		took, gap, reused = took+c.took, gap+c.gap, reused+c.reused
	}
	n := time.Duration(len(inc))
	took, gap, reused = took/n, gap/n, reused/int64(n)
	diskMs := float64(full.bytes) / 1e9 / disk * 1000
	b.ReportMetric(float64(full.took.Milliseconds()), "full-ms")
	b.ReportMetric(float64(took.Milliseconds()), "incremental-ms")
	b.ReportMetric(float64(took)/float64(full.took), "incremental/full")
	b.ReportMetric(float64(gap.Microseconds())/1000, "incremental-stall-ms")
	fmt.Printf("\nchpox run, %d MiB, 1%% of the pages written between checkpoints; %s, disk %.2f GB/s with fsync (%.0f ms for the image)\n",
		mib, dir, disk, diskMs)
	fmt.Printf("  full checkpoint         %7.0f ms (%.2f x disk time)  stall (process saw) %5.1f ms  chpox frozen %5.1f ms\n",
		ms(full.took), ms(full.took)/diskMs, ms(full.gap), ms(full.frozen))
	fmt.Printf("  incremental checkpoint  %7.0f ms (%.2f x disk time)  stall (process saw) %5.1f ms  %.1f%% of the data from the last image\n",
		ms(took), ms(took)/diskMs, ms(gap), 100*float64(reused)/float64(full.bytes))
	for i, c := range inc {
		fmt.Printf("    #%d %7.0f ms, stall %5.1f ms, frozen %5.1f ms\n", i+2, ms(c.took), ms(c.gap), ms(c.frozen))
	}
	fmt.Printf("  incremental / full      %.3f\n", float64(took)/float64(full.took))
	if rewrites > 0 {
		fmt.Printf("  background rewrites     %d of %d checkpoints, %.0f ms each (waited for); the process's longest gap during one %.1f ms\n",
			rewrites, len(inc), ms(rewriting)/float64(rewrites), ms(rewriteGap))
	}
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func maxSize() int {
	m := 0
	for _, s := range liveSizes() {
		m = max(m, s)
	}
	return m
}

// diskGBps writes n bytes to a file in dir with fsync.
func diskGBps(b *testing.B, dir string, n int) float64 {
	f, err := os.CreateTemp(dir, "disk")
	if err != nil {
		b.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 8<<20)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	t := time.Now()
	for w := 0; w < n; w += len(buf) {
		if _, err := f.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	return float64(n) / 1e9 / time.Since(t).Seconds()
}

// supervised is testdata/dirtier.c under an in-process chpox run.
type supervised struct {
	s     *supervisor.Supervisor
	pid   int
	log   string
	lines chan string // chpox run's checkpoint lines
	seen  int         // dirtier lines read so far
	done  chan struct{}
}

type checkpoint struct {
	took, gap, frozen time.Duration
	bytes, reused     int64
}

func startSupervised(b *testing.B, dir string, mib int) *supervised {
	bin := filepath.Join(b.TempDir(), "dirtier")
	if out, err := exec.Command("gcc", "-O2", "-I../testdata", "-o", bin, "../testdata/dirtier.c").CombinedOutput(); err != nil {
		b.Fatalf("build dirtier: %v\n%s", err, out)
	}
	j := &supervised{log: filepath.Join(b.TempDir(), "dirtier.log"), lines: make(chan string, 16), done: make(chan struct{})}
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			j.lines <- sc.Text()
		}
	}()
	// Exactly the descriptors the job means to have: not the benchmark's.
	script := fmt.Sprintf("exec %s %d 10 </dev/null >%s 2>&1", bin, mib, j.log)
	s, err := supervisor.Start(ptrace.NewTracer(), supervisor.Options{Args: []string{"/bin/sh", "-c", script},
		Signal: unix.SIGSYS, Output: filepath.Join(dir, "run.chp"), Log: pw, Errors: pw, Live: true})
	if err != nil {
		b.Fatal(err)
	}
	j.s, j.pid = s, s.PID()
	go func() {
		s.Wait()
		close(j.done)
	}()
	j.wait(b, "ready")
	return j
}

func (j *supervised) stop() {
	unix.Kill(j.pid, unix.SIGKILL)
	<-j.done
}

// wait returns the next line of the job's log that starts with what.
func (j *supervised) wait(b *testing.B, what string) string {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		data, _ := os.ReadFile(j.log)
		lines := strings.Split(string(data), "\n")
		for i := j.seen; i < len(lines)-1; i++ {
			if strings.HasPrefix(lines[i], what) {
				j.seen = i + 1
				return lines[i]
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.Fatalf("dirtier: no %q line", what)
	return ""
}

func (j *supervised) dirty(b *testing.B) {
	unix.Kill(j.pid, unix.SIGUSR1)
	j.wait(b, "dirtied")
}

// gap ends the process's current measurement and returns its longest gap.
func (j *supervised) gap(b *testing.B) time.Duration {
	unix.Kill(j.pid, unix.SIGUSR2)
	us, _ := strconv.Atoi(strings.TrimPrefix(j.wait(b, "gap "), "gap "))
	return time.Duration(us) * time.Microsecond
}

var runLine = regexp.MustCompile(`checkpoint \d+ at \S+: \d+ processes, (\d+) bytes(?:, (\d+) unchanged taken from the last image(?:, \d+ of them sharing its blocks)?)?, frozen (\S+) -> `)

// rewritten waits for the background rewrite of the image in dir, if
// one starts within 200 ms, to end (its temporary file to go), and says
// how long that took.
func (j *supervised) rewritten(b *testing.B, dir string) time.Duration {
	temp := func() bool {
		names, _ := filepath.Glob(filepath.Join(dir, ".run.chp.tmp-*"))
		return len(names) > 0
	}
	t := time.Now()
	for !temp() {
		if time.Since(t) > 200*time.Millisecond {
			return 0
		}
		time.Sleep(time.Millisecond)
	}
	for temp() {
		if time.Since(t) > 5*time.Minute {
			b.Fatal("the rewrite of the last image does not end")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(t)
}

// checkpoint triggers one and waits until chpox run says it is written.
func (j *supervised) checkpoint(b *testing.B) checkpoint {
	j.gap(b)
	t := time.Now()
	if err := j.s.Trigger(); err != nil {
		b.Fatal(err)
	}
	line := <-j.lines
	c := checkpoint{took: time.Since(t)}
	m := runLine.FindStringSubmatch(line)
	if m == nil {
		b.Fatalf("chpox run: %s", line)
	}
	c.bytes, _ = strconv.ParseInt(m[1], 10, 64)
	c.reused, _ = strconv.ParseInt(m[2], 10, 64)
	c.frozen, _ = time.ParseDuration(m[3])
	c.gap = j.gap(b)
	return c
}
