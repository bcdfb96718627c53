package bench

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// stealLog samples the hypervisor's steal time of every CPU (/proc/stat,
// in USER_HZ ticks of 10 ms) every 2 ms. On this kind of VM a job's
// longest stall during a live dump was, now and then, the host holding
// both vCPUs for 30 ms at once (a 4 ms sampler stalled with the job); a
// stall is only chpox's to answer for where the host took nothing.
type stealLog struct {
	mu      sync.Mutex
	samples []stealSample
	stop    chan struct{}
	done    chan struct{}
}

type stealSample struct {
	at    time.Time
	ticks []uint64 // per CPU
}

const tickDur = 10 * time.Millisecond // USER_HZ is 100 on Linux

func startSteal() *stealLog {
	s := &stealLog{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(2 * time.Millisecond)
		defer t.Stop()
		for {
			if ticks, err := readSteal(); err == nil {
				s.mu.Lock()
				s.samples = append(s.samples, stealSample{time.Now(), ticks})
				s.mu.Unlock()
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *stealLog) close() {
	close(s.stop)
	<-s.done
}

// during is the most any one CPU had stolen between from and to, from
// the last sample at or before from to the first at or after to.
func (s *stealLog) during(from, to time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first, last *stealSample
	for i := range s.samples {
		x := &s.samples[i]
		if !x.at.After(from) {
			first = x
		}
		if !x.at.Before(to) {
			last = x
			break
		}
	}
	if first == nil || last == nil {
		return 0
	}
	var most uint64
	for c := range min(len(first.ticks), len(last.ticks)) {
		most = max(most, last.ticks[c]-first.ticks[c])
	}
	return time.Duration(most) * tickDur
}

// readSteal is the steal column (the 8th number) of each cpuN line.
func readSteal() ([]uint64, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 9 || !strings.HasPrefix(fs[0], "cpu") || fs[0] == "cpu" {
			continue
		}
		v, err := strconv.ParseUint(fs[8], 10, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

func TestReadSteal(t *testing.T) {
	ticks, err := readSteal()
	if err != nil || len(ticks) == 0 {
		t.Fatalf("readSteal: %v, %d CPUs", err, len(ticks))
	}
	s := &stealLog{samples: []stealSample{
		{time.Unix(10, 0), []uint64{5, 7}},
		{time.Unix(11, 0), []uint64{5, 10}},
		{time.Unix(12, 0), []uint64{6, 10}},
	}}
	if got := s.during(time.Unix(10, 5e8), time.Unix(11, 5e8)); got != 30*time.Millisecond {
		t.Errorf("during 10.5..11.5 = %v, want 30ms (cpu1: 7 -> 10)", got)
	}
	if got := s.during(time.Unix(11, 0), time.Unix(11, 0)); got != 0 {
		t.Errorf("during an instant = %v, want 0", got)
	}
}
