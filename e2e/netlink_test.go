package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestNetlink: a NETLINK_ROUTE socket comes back bound to its port id, in
// its multicast group, with its options, and the kernel answers it.
func TestNetlink(t *testing.T) {
	setup(t, "netlink")
	p := start(t, "netlink")
	port := p.waitLog(t, `(?m)^ready port (\d+)$`, 1, 10*time.Second)[1]
	img := dumpKill(t, p)
	if text := quietChpox(t, "inspect", img); !strings.Contains(text, "netlink") {
		t.Errorf("inspect does not show the netlink socket:\n%s", text)
	}
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, fmt.Sprintf(`(?m)^netlink ok %s$`, port), 1, 10*time.Second)
}

// TestNetlinkQueued: a kernel reply waiting unread on a netlink socket
// cannot be queued again: dump refuses by name, the process runs on.
func TestNetlinkQueued(t *testing.T) {
	setup(t, "netlink")
	p := start(t, "netlink", "queued")
	p.waitLog(t, `(?m)^ready port`, 1, 10*time.Second)
	img := filepath.Join(t.TempDir(), "x.img")
	r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
	wantFailure(t, r, 6, "fd 3", "netlink", "unread messages")
	if _, err := os.Stat(img); err == nil {
		t.Errorf("the refused dump left %s", img)
	}
	re := `(?m)^alive (\d+)$`
	p.waitInt(t, re, lastInt(p.log, re)+5, 10*time.Second)
}
