package objects

import (
	"os"

	"golang.org/x/sys/unix"
)

// CrashPoint kills chpox itself at the named point when CHPOX_TEST_CRASH
// names it. The tests of "chpox killed at this very instant harms nothing"
// need the instant exactly, which random kills hit only by chance.
func CrashPoint(name string) {
	if os.Getenv("CHPOX_TEST_CRASH") == name {
		unix.Kill(os.Getpid(), unix.SIGKILL)
	}
}
