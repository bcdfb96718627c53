package vmadump

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// smapsEntry is what dump needs from /proc/PID/smaps; procfs only offers
// the rollup, not per-area values.
type smapsEntry struct {
	rss, swap, anon uint64 // KiB
	growsDown       bool
	flags           []string // VmFlags, two letters each
	pkey            int      // ProtectionKey (x86 PKU), 0 if none
	// mayWrite is VM_MAYWRITE ("mw"): for a System V attachment, made
	// without SHM_RDONLY.
	mayWrite bool
}

func readSmaps(pid int) (map[uint64]smapsEntry, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return nil, fmt.Errorf("dump %d: read smaps: %w", pid, err)
	}
	defer f.Close()
	return parseSmaps(bufio.NewScanner(f))
}

func parseSmaps(sc *bufio.Scanner) (map[uint64]smapsEntry, error) {
	out := map[uint64]smapsEntry{}
	var cur uint64
	var e smapsEntry
	have := false
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		key, val, ok := strings.Cut(line, ":")
		if !ok || strings.ContainsRune(key, ' ') || strings.ContainsRune(key, '-') {
			// An area header: "start-end perms offset dev inode path".
			if have {
				out[cur] = e
			}
			startHex, _, _ := strings.Cut(line, "-")
			start, err := strconv.ParseUint(startHex, 16, 64)
			if err != nil {
				return nil, fmt.Errorf("parse smaps line %q: %w", line, err)
			}
			cur, e, have = start, smapsEntry{}, true
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "Rss":
			e.rss = kb(val)
		case "Swap":
			e.swap = kb(val)
		case "Anonymous":
			e.anon = kb(val)
		case "ProtectionKey":
			e.pkey, _ = strconv.Atoi(val)
		case "VmFlags":
			e.flags = strings.Fields(val)
			for _, fl := range e.flags {
				switch fl {
				case "gd":
					e.growsDown = true
				case "mw":
					e.mayWrite = true
				}
			}
		}
	}
	if have {
		out[cur] = e
	}
	return out, sc.Err()
}

func kb(s string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimSuffix(s, " kB"), 10, 64)
	return n
}
