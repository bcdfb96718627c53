package dump

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/procinfo"
)

// ErrOutput reports an output path a dump cannot write; the message says
// what to do. It is found before any process is frozen.
var ErrOutput = errors.New("cannot write the image there")

// metaSlack covers what an image holds besides memory: headers, records,
// the padding that page-aligns the data section.
const metaSlack = 256 << 10

// CheckOutput finds, before anything is frozen, the faults that would
// otherwise end a whole dump at its rename or mid-write: out naming a
// directory, its directory missing, read-only or not writable, and less
// free space there than the tree's memory (resident anonymous and shared
// memory plus swap, summed over pid and its descendants unless
// noChildren: about what the image will hold).
func CheckOutput(out string, pid int, noChildren bool) error {
	if st, err := os.Stat(out); err == nil && st.IsDir() {
		return fmt.Errorf("-o %s is a directory: name the image file, e.g. %s: %w", out, filepath.Join(out, "job.chp"), ErrOutput)
	}
	dir := filepath.Dir(out)
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("directory %s does not exist: create it first (mkdir -p %s): %w", dir, dir, ErrOutput)
	case err != nil:
		return fmt.Errorf("output directory %s: %v: %w", dir, err, ErrOutput)
	case !st.IsDir():
		return fmt.Errorf("%s is not a directory: %w", dir, ErrOutput)
	}
	// access(2) answers for the real user and knows read-only mounts.
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		what := "is not writable by you"
		if errors.Is(err, unix.EROFS) {
			what = "is on a read-only file system"
		}
		return fmt.Errorf("output directory %s %s (%v): choose another -o: %w", dir, what, err, ErrOutput)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	free := fs.Bavail * uint64(fs.Bsize)
	need := treeMemory(pid, noChildren) + metaSlack
	if free < need {
		return fmt.Errorf("%s has %d KiB free, the image needs about %d KiB: free some space or choose another -o: %w",
			dir, free>>10, need>>10, ErrOutput)
	}
	return nil
}

// treeMemory estimates the bytes of memory a dump of pid's tree copies.
func treeMemory(pid int, noChildren bool) uint64 {
	var total uint64
	queue := []int{pid}
	for seen := 0; len(queue) > 0 && seen < 1<<16; seen++ {
		p := queue[0]
		queue = queue[1:]
		total += kbFields(fmt.Sprintf("/proc/%d/status", p), "RssAnon:", "RssShmem:", "VmSwap:")
		if noChildren {
			break
		}
		queue = append(queue, procinfo.Children(p)...)
	}
	return total
}
