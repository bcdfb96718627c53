package bench

import (
	"os"
	"testing"

	"github.com/chpox/chpox/pkg/lazy"
	"github.com/chpox/chpox/pkg/netlock"
)

// A dump of TCP connections starts its network guard by running the
// current executable again with netlock.GuardCommand (pkg/netlock): in a
// benchmark that executable is this test binary, which must then be the
// guard, as cmd/chpox is.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == netlock.GuardCommand {
		os.Exit(netlock.RunGuard())
	}
	if len(os.Args) > 1 && os.Args[1] == lazy.GuardCommand {
		os.Exit(lazy.RunGuard()) // restore --lazy's guard, likewise
	}
	os.Exit(m.Run())
}
