// Package testutil holds what the packages' tests share: the one rule for
// skipping without root, and building the C programs under testdata/.
package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// XFS mounts an XFS file system of sizeMiB of the test's own (a file in
// its temporary directory on a loop device, direct I/O so its blocks are
// not cached twice) and returns its directory, writable by everyone (the
// e2e suite's other user writes images there too); it is unmounted when
// the test ends. XFS shares blocks between files (reflink), which ext4
// does not: incremental checkpoints behave differently on it.
func XFS(t testing.TB, sizeMiB int) string {
	t.Helper()
	NeedRoot(t)
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Fatal("mkfs.xfs is needed (make setup installs xfsprogs)")
	}
	base := t.TempDir()
	file, mnt := filepath.Join(base, "xfs.img"), filepath.Join(base, "mnt")
	for _, s := range [][]string{{"truncate", "-s", fmt.Sprintf("%dM", sizeMiB), file}, {"mkfs.xfs", "-q", "-m", "reflink=1", file}, {"mkdir", mnt}} {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", s, err, out)
		}
	}
	out, err := exec.Command("losetup", "--direct-io=on", "--show", "-f", file).Output()
	if err != nil {
		t.Fatalf("losetup %s: %v", file, err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount %s: %v\n%s", dev, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	if err := os.Chmod(mnt, 0o1777); err != nil {
		t.Fatal(err)
	}
	return mnt
}
