// Package testutil holds what the packages' tests share: the one rule for
// skipping without root, and building the C programs under testdata/.
package testutil

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NeedRoot skips without root and fails instead on CI, where every test
// must run: a test that cannot run there must not pass silently.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("these tests need root, and CI must run them")
	}
	t.Skip("needs root")
}

// BuildC compiles testdata/NAME.c of the calling package's directory into
// a temporary directory and returns the binary.
func BuildC(t testing.TB, name string, flags ...string) string {
	t.Helper()
	NeedRoot(t)
	src, err := filepath.Abs(filepath.Join("testdata", name+".c"))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	args := append([]string{"-O1", "-Wall", "-Werror", "-o", bin, src}, flags...)
	if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", name, err, out)
	}
	return bin
}

// Start starts cmd and kills and reaps it at the end of the test.
func Start(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
}
