package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// io_uring is not supported: a process holding a ring is refused, naming
// it, and runs on unharmed. With IORING_SETUP_SQPOLL the kernel adds a
// thread to the process (iou-sqp-PID) that never returns to user space;
// chpox once stopped it and then waited forever for a call injected into
// it. node does this under UV_USE_IO_URING=1.
func TestIOUring(t *testing.T) {
	for _, mode := range []string{"sqpoll", "plain", "node"} {
		t.Run(mode, func(t *testing.T) {
			var p *proc
			if mode == "node" {
				setup(t)
				node, js := nodeArgs(t)
				t.Setenv("UV_USE_IO_URING", "1")
				p = startExe(t, "node", node, filepath.Join(filepath.Dir(js), "fsloop.js"))
			} else {
				setup(t, "iouring")
				p = start(t, "iouring", mode)
			}
			p.waitLog(t, `(?m)^ready$`, 1, 20*time.Second)
			img := filepath.Join(t.TempDir(), "iouring.img")
			r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
			if mode == "node" && !holdsIOUring(p.pid) {
				// libuv uses io_uring from 1.45 (node 20); Debian's node 18
				// does not, and then its checkpoint must simply work.
				if r.code != 0 {
					t.Errorf("dump of node without io_uring: exit %d: %s", r.code, r.stderr)
				}
			} else {
				wantFailure(t, r, 6, "io_uring")
				if _, err := os.Stat(img); err == nil {
					t.Errorf("the refused dump left %s", img)
				}
			}
			n := lastInt(p.log, `(?m)^alive (\d+)$`)
			p.waitInt(t, `(?m)^alive (\d+)$`, n+20, 10*time.Second)
			if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
				t.Errorf("after the refused dump: %s", st)
			}
		})
	}
}

// holdsIOUring tells whether pid has an io_uring descriptor.
func holdsIOUring(pid int) bool {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name())); l == "anon_inode:[io_uring]" {
			return true
		}
	}
	return false
}
