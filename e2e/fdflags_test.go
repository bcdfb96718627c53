package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFileStatusFlags: files opened by path get back the status flags
// their descriptions had (O_NONBLOCK, O_SYNC, O_DSYNC, O_NOATIME,
// O_DIRECT), and fds that share one description each their own
// close-on-exec: the program reports F_GETFL and F_GETFD of every fd,
// before the dump and after the restore.
func TestFileStatusFlags(t *testing.T) {
	setup(t, "fdflags")
	p := start(t, "fdflags", t.TempDir())
	var keys []string
	for fd := 3; fd <= 11; fd++ {
		keys = append(keys, fmt.Sprintf("F %d", fd))
	}
	before := lastLines(t, p, 0, 2, keys...)
	// The flags each fd must have for the test to prove anything.
	want := map[int]struct {
		flags   int
		cloexec string
	}{
		3: {unix.O_NONBLOCK, "0"}, 4: {unix.O_NONBLOCK, "0"}, 5: {unix.O_SYNC, "0"}, 6: {unix.O_DSYNC, "0"},
		7: {unix.O_NOATIME, "0"}, 8: {unix.O_DIRECT, "0"}, 9: {unix.O_DIRECTORY, "1"},
		10: {unix.O_NONBLOCK, "1"}, 11: {unix.O_DIRECTORY, "0"},
	}
	for fd, w := range want {
		l := before[fmt.Sprintf("F %d", fd)]
		var fl int64
		var cloexec string
		if f := strings.Fields(l); len(f) == 4 {
			fl, _ = strconv.ParseInt(strings.TrimPrefix(f[2], "fl="), 8, 64)
			cloexec = strings.TrimPrefix(f[3], "cloexec=")
		}
		if int(fl)&w.flags != w.flags || cloexec != w.cloexec {
			t.Fatalf("the original reports %q, want flags %#o and cloexec=%s: the test would prove nothing", l, w.flags, w.cloexec)
		}
	}
	sameAfterRestore(t, p, before, keys...)
}
