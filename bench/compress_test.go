package bench

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/format"
)

// --compress on real memory: the data section of a dumped Python
// interpreter with a 100000-entry dict (testdata/dict.py), of redis-server
// with 200000 keys, and random bytes (the worst case), compressed at each
// level on all CPUs, against the speed of writing the same bytes to the
// disk with fsync (what dd conv=fsync measures) in the same run. An image
// is written as fast as min(compress, disk*ratio): compression pays when
// that beats the disk alone.
func BenchmarkCompress(b *testing.B) {
	dir := os.Getenv("CHPOX_BENCH_DIR") // a directory on the disk images go to
	if dir == "" {
		dir = b.TempDir()
	}
	sets := []struct {
		name string
		data func(b *testing.B) []byte
	}{
		{"dict", func(b *testing.B) []byte { return dumpData(b, startPython(b)) }},
		{"redis", func(b *testing.B) []byte {
			pid, _ := startRedis(b, b.TempDir(), 200_000)
			defer unix.Kill(pid, unix.SIGKILL)
			return dumpData(b, pid)
		}},
		{"random", func(b *testing.B) []byte {
			d := make([]byte, 64<<20)
			rand.Read(d)
			return d
		}},
	}
	levels := []struct {
		name  string
		level int
	}{{"fastest", format.LevelFastest}, {"default", format.LevelDefault}, {"better", format.LevelBetter}}
	for _, set := range sets {
		b.Run(set.name, func(b *testing.B) {
			data := set.data(b)
			disk := diskMBps(b, dir, data)
			for _, l := range levels {
				b.Run(l.name, func(b *testing.B) {
					var comp, decomp time.Duration
					var stored int
					for i := 0; i < b.N; i++ {
						img, t := compressData(b, data, l.level)
						comp += t
						stored = len(img)
						decomp += decompressData(b, img, data)
					}
					mb := float64(len(data)) / 1e6 * float64(b.N)
					ratio := float64(len(data)) / float64(stored)
					cMBps := mb / comp.Seconds()
					b.ReportMetric(ratio, "ratio")
					b.ReportMetric(cMBps, "compress-MB/s")
					b.ReportMetric(mb/decomp.Seconds(), "decompress-MB/s")
					b.ReportMetric(disk, "disk-MB/s")
					// The image goes out as fast as the slower of the two
					// pipelined stages; > 1 means --compress pays.
					b.ReportMetric(min(cMBps, disk*ratio)/disk, "gain-vs-disk")
					b.Logf("%s %s: %.1f MB, ratio %.2f, compress %.0f MB/s on %d CPUs, decompress %.0f MB/s, disk %.0f MB/s",
						set.name, l.name, float64(len(data))/1e6, ratio, cMBps, runtime.GOMAXPROCS(0), mb/decomp.Seconds(), disk)
				})
			}
		})
	}
}

func startPython(b *testing.B) int {
	dir := b.TempDir()
	logPath := filepath.Join(dir, "dict.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("python3", "../testdata/dict.py")
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	logf.Close()
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(b, logPath, "ready", 30*time.Second)
	return cmd.Process.Pid
}

// dumpData checkpoints pid (it keeps running) and returns the image's
// data section: the process's memory as restore writes it.
func dumpData(b *testing.B, pid int) []byte {
	img := filepath.Join(b.TempDir(), "img")
	if _, err := dump.Dump(tracer, pid, dump.Options{Output: img}); err != nil {
		b.Fatal(err)
	}
	r, err := format.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	data, err := io.ReadAll(r.DataStream())
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// compressData writes data as the data section of a stream image.
func compressData(b *testing.B, data []byte, level int) ([]byte, time.Duration) {
	var buf bytes.Buffer
	buf.Grow(len(data) + 1<<20)
	t := time.Now()
	w, err := format.NewStream(&buf, format.WriteOptions{Compress: true, Level: level})
	if err != nil {
		b.Fatal(err)
	}
	h := &format.Header{Arch: runtime.GOARCH, Processes: 1, PageSize: 4096, DataBytes: int64(len(data))}
	must(b, w.WriteHeader(h))
	must(b, w.WriteProcess(&format.Process{PID: 1, Comm: "bench", Threads: []format.Thread{{TID: 1}}}))
	must(b, w.BeginData(uint64(len(data))))
	for d := data; len(d) > 0; {
		n := min(len(d), 8<<20)
		_, err := w.Write(d[:n])
		must(b, err)
		d = d[n:]
	}
	must(b, w.Commit())
	return buf.Bytes(), time.Since(t)
}

func decompressData(b *testing.B, img, want []byte) time.Duration {
	t := time.Now()
	r, err := format.ReadStream(bytes.NewReader(img))
	if err != nil {
		b.Fatal(err)
	}
	got, err := io.ReadAll(r.DataStream())
	d := time.Since(t)
	if err != nil || !bytes.Equal(got, want) {
		b.Fatalf("decompressed %d bytes (%v), want the %d written", len(got), err, len(want))
	}
	return d
}

// diskMBps writes data to a file in dir and fsyncs it, like
// dd bs=8M conv=fsync: the speed an uncompressed image reaches the disk.
func diskMBps(b *testing.B, dir string, data []byte) float64 {
	path := filepath.Join(dir, "disk-speed")
	defer os.Remove(path)
	best := 0.0
	for try := 0; try < 2; try++ {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		t := time.Now()
		for d := data; len(d) > 0; {
			n := min(len(d), 8<<20)
			if _, err := f.Write(d[:n]); err != nil {
				b.Fatal(err)
			}
			d = d[n:]
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		best = max(best, float64(len(data))/1e6/time.Since(t).Seconds())
		f.Close()
	}
	return best
}

func must(b *testing.B, err error) {
	b.Helper()
	if err != nil {
		b.Fatal(fmt.Errorf("write image: %w", err))
	}
}
