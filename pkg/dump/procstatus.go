package dump

import (
	"os"
	"strconv"
	"strings"
)

// statusValue is the value of the line of a /proc/PID/status text that
// starts with key ("SigCgt:"), trimmed.
func statusValue(status, key string) (string, bool) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// kbFields sums "Name:   123 kB" lines of a /proc file (status, meminfo),
// in bytes; a missing file or line counts 0.
func kbFields(path string, names ...string) uint64 {
	b, _ := os.ReadFile(path)
	var n uint64
	for _, name := range names {
		v, _ := statusValue(string(b), name)
		kb, _ := strconv.ParseUint(strings.TrimSuffix(v, " kB"), 10, 64)
		n += kb << 10
	}
	return n
}
