package restore

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// ErrNoMemory refuses a restore that cannot fit: left to run, the OOM
// killer would end it half way (chpox or the process being built) with no
// word of why.
var ErrNoMemory = errors.New("not enough memory")

// checkMemory refuses, before anything starts, an image whose pages do not
// fit the memory cgroup chpox runs in, or whose address space does not
// fit chpox's RLIMIT_AS (the processes are built under chpox's limit; the
// image's own limits come last).
func checkMemory(img *format.Image) error {
	var pages, space uint64
	for _, p := range img.Processes {
		for _, v := range p.VMAs {
			space += v.End - v.Start
			pages += format.Len(v.Pages)
			for _, s := range v.Inherited {
				pages += s.End - s.Start // saved once, restored twice
			}
		}
	}
	for _, s := range img.Objects.Shm {
		pages += format.Len(s.Pages)
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_AS, &rl); err == nil && rl.Cur != unix.RLIM_INFINITY && space > rl.Cur {
		return fmt.Errorf("the image's processes map %s, more than this chpox's address-space limit (RLIMIT_AS, ulimit -v) of %s: raise it, then restore: %w",
			size(space), size(rl.Cur), ErrNoMemory)
	}
	if free, where, ok := cgroupRoom(); ok && pages > free {
		return fmt.Errorf("the image holds %s of memory, but the memory cgroup %s allows only %s more: raise its limit or restore elsewhere: %w",
			size(pages), where, size(free), ErrNoMemory)
	}
	return nil
}

// capIPCLock is CAP_IPC_LOCK's bit (include/uapi/linux/capability.h).
const capIPCLock = 14

// checkMemLock refuses, before anything starts, an image whose processes
// locked more memory (mlock) than chpox may lock for them: without
// CAP_IPC_LOCK, RLIMIT_MEMLOCK bounds each process's locked memory, and
// the processes are built under chpox's limit.
func checkMemLock(img *format.Image) error {
	if hasCap(capIPCLock) {
		return nil
	}
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return nil
	}
	for _, p := range img.Processes {
		var locked uint64
		for _, v := range p.VMAs {
			if v.Lock != "" {
				locked += v.End - v.Start
			}
		}
		if locked > rl.Cur {
			return fmt.Errorf("process %d had %s of memory locked (mlock), more than chpox may lock without CAP_IPC_LOCK (RLIMIT_MEMLOCK, ulimit -l, is %s): raise the limit or restore as root: %w",
				p.PID, size(locked), size(rl.Cur), ErrMemLock)
		}
		if p.Memory != nil && p.Memory.LockFuture != "" && rl.Cur == 0 {
			return fmt.Errorf("process %d called mlockall(MCL_FUTURE), which needs RLIMIT_MEMLOCK (ulimit -l) above 0 or CAP_IPC_LOCK: raise the limit or restore as root: %w",
				p.PID, ErrMemLock)
		}
	}
	return nil
}

// hasCap tells whether chpox has capability bit in its effective set.
func hasCap(bit uint) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && n&(1<<bit) != 0
		}
	}
	return false
}

func size(n uint64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// cgroupRoom returns how much more memory the cgroup of this process may
// use (cgroup v2 memory.max, or v1 memory.limit_in_bytes), false when it
// is unlimited or unknown.
func cgroupRoom() (uint64, string, bool) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return 0, "", false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dir, limitFile, usageFile string
		switch {
		case parts[0] == "0" && parts[1] == "":
			dir, limitFile, usageFile = filepath.Join("/sys/fs/cgroup", parts[2]), "memory.max", "memory.current"
		case strings.Contains(","+parts[1]+",", ",memory,"):
			dir, limitFile, usageFile = filepath.Join("/sys/fs/cgroup/memory", parts[2]), "memory.limit_in_bytes", "memory.usage_in_bytes"
		default:
			continue
		}
		limit, err1 := readUint(filepath.Join(dir, limitFile))
		usage, err2 := readUint(filepath.Join(dir, usageFile))
		if err1 != nil || err2 != nil || limit >= 1<<62 {
			continue // "max", a v1 "unlimited" (a huge number), or no such files
		}
		if usage > limit {
			usage = limit
		}
		return limit - usage, dir, true
	}
	return 0, "", false
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}
