package external

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MemoryHolders finds, for the memory objects in objs (by device and
// inode: shared anonymous memory, memfds, unlinked files mapped shared),
// one process outside tree (and not chpox) that maps one or holds it as a
// descriptor. Restore could not keep such an object shared with it. One
// pass over /proc, made only when the tree has such objects.
func MemoryHolders(tree map[int]bool, objs map[[2]uint64]bool) map[[2]uint64]int {
	out := map[[2]uint64]int{}
	if len(objs) == 0 {
		return out
	}
	ents, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || tree[pid] || pid == self {
			continue
		}
		for _, key := range mappedObjects(pid, objs) {
			if _, seen := out[key]; !seen {
				out[key] = pid
			}
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			link := fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())
			if l, _ := os.Readlink(link); !strings.HasSuffix(l, " (deleted)") {
				continue // memfds and unlinked files only: shmem has no other fds
			}
			var st unix.Stat_t
			if unix.Stat(link, &st) != nil {
				continue
			}
			key := [2]uint64{st.Dev, st.Ino}
			if _, seen := out[key]; objs[key] && !seen {
				out[key] = pid
			}
		}
	}
	return out
}

// mappedObjects lists the objects of objs that pid's shared mappings map
// ("start-end perms offset MAJOR:MINOR inode path" in /proc/PID/maps).
func mappedObjects(pid int, objs map[[2]uint64]bool) [][2]uint64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out [][2]uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) < 6 || len(fl[1]) < 4 {
			continue
		}
		maj, min, ok := strings.Cut(fl[3], ":")
		ino, err1 := strconv.ParseUint(fl[4], 10, 64)
		ma, err2 := strconv.ParseUint(maj, 16, 32)
		mi, err3 := strconv.ParseUint(min, 16, 32)
		if !ok || err1 != nil || err2 != nil || err3 != nil || ino == 0 {
			continue
		}
		key := [2]uint64{unix.Mkdev(uint32(ma), uint32(mi)), ino}
		if objs[key] {
			out = append(out, key)
		}
	}
	return out
}
