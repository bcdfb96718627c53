package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// copyFile copies src to dst with mode.
func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// A portable image (dump --embed-files) restores where the executable and
// a library it mapped are gone or other files: the counter, run from a
// copy of its own with a copy of libc (LD_LIBRARY_PATH), counts on from
// its checkpoint after both copies were removed or overwritten, mapped from
// the image's copies; the same checkpoint without --embed-files is refused,
// naming the file.
func TestEmbedFiles(t *testing.T) {
	setup(t, "counter")
	dir, libDir := t.TempDir(), t.TempDir()
	exe := filepath.Join(dir, "counter")
	copyFile(t, progs["counter"], exe, 0o755)
	out, err := exec.Command("gcc", "-print-file-name=libc.so.6").Output()
	sysLibc, _ := filepath.EvalSymlinks(strings.TrimSpace(string(out)))
	if err != nil || !filepath.IsAbs(sysLibc) {
		t.Fatalf("gcc -print-file-name=libc.so.6: %q, %v", out, err)
	}
	libc := filepath.Join(libDir, "libc.so.6")
	copyFile(t, sysLibc, libc, 0o755)

	f, logPath := logFile(t, "counter")
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+libDir)
	cmd.Stdout, cmd.Stderr = f, f
	p := startCmd(t, "counter", cmd, logPath)
	f.Close()
	p.waitInt(t, countRE, 20, 10*time.Second)
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", p.pid))
	if !strings.Contains(string(maps), libc) || !strings.Contains(string(maps), exe) {
		t.Fatalf("the counter does not map %s and %s:\n%s", exe, libc, maps)
	}

	plain := dump(t, p)
	img := filepath.Join(t.TempDir(), "counter-embed.img")
	mustChpox(t, "dump", fmt.Sprint(p.pid), "-o", img, "--kill", "--embed-files")
	if st := p.waitExit(t, 10*time.Second); st != "signal: killed" {
		t.Fatalf("after dump --kill the original ended with %q, want signal: killed", st)
	}
	waitPIDFree(t, p.pid, 10*time.Second)
	atKill := checkCounterLog(t, p.log)
	ps, _ := os.Stat(plain)
	es, _ := os.Stat(img)
	t.Logf("image without --embed-files %d bytes, with %d bytes (counter %d bytes, libc %d bytes)", ps.Size(), es.Size(), fileSize(exe), fileSize(libc))

	in := mustChpox(t, "inspect", img)
	for _, want := range []string{"embedded files:", exe, libc} {
		if !strings.Contains(in.stdout, want) {
			t.Errorf("inspect lacks %q:\n%s", want, in.stdout)
		}
	}

	// Gone, and another file in place.
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(libc, []byte("not a library\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	res := runChpox(t, "restore", "--detach", plain)
	if res.code != 5 || !strings.Contains(res.stderr, "mapped file "+exe) || !strings.Contains(res.stderr, "--embed-files") {
		t.Errorf("restore without embedded files: exit %d, want 5, stderr naming %s:\n%s", res.code, exe, res.stderr)
	}

	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, atKill+30, 10*time.Second)
	checkCounterLog(t, p.log)
	link, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", r.pid))
	if err != nil || !strings.Contains(link, "memfd:counter") {
		t.Errorf("restored /proc/PID/exe is %q (%v), want the memfd copy of counter", link, err)
	}
	maps, _ = os.ReadFile(fmt.Sprintf("/proc/%d/maps", r.pid))
	if !strings.Contains(string(maps), "/memfd:libc.so.6 (deleted)") || strings.Contains(string(maps), libc) {
		t.Errorf("restored maps do not map the copy of libc.so.6 instead of %s:\n%s", libc, maps)
	}
}

// A MAP_SHARED mapping of an embedded file that changed is refused by
// name: the writes would go to the copy, not the file; put back, the file
// itself is mapped again.
func TestEmbedSharedChangedRefused(t *testing.T) {
	setup(t, "holdfiles")
	dir := t.TempDir()
	data, held := filepath.Join(dir, "data.bin"), filepath.Join(dir, "held.txt")
	os.WriteFile(data, make([]byte, 4096), 0o644)
	os.WriteFile(held, []byte("held"), 0o644)
	p := start(t, "holdfiles", "smap:"+data, held)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := filepath.Join(t.TempDir(), "holdfiles.img")
	mustChpox(t, "dump", fmt.Sprint(p.pid), "-o", img, "--kill", "--embed-files")
	p.waitExit(t, 10*time.Second)
	waitPIDFree(t, p.pid, 10*time.Second)
	orig, _ := os.ReadFile(data)
	st, _ := os.Stat(data)
	os.WriteFile(data, append(orig, "more"...), 0o644)
	res := runChpox(t, "restore", "--detach", img)
	for _, want := range []string{data, "MAP_SHARED", "changed since the checkpoint", "not to the file"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("restore of a changed shared mapping: stderr %q lacks %q", res.stderr, want)
		}
	}
	if res.code != 5 {
		t.Errorf("restore of a changed shared mapping: exit %d, want 5", res.code)
	}
	os.WriteFile(data, orig, 0o644)
	os.Truncate(data, st.Size())
	os.Chtimes(data, st.ModTime(), st.ModTime())
	r := restoreDetached(t, img, p)
	maps, _ := os.ReadFile(fmt.Sprintf("/proc/%d/maps", r.pid))
	if !strings.Contains(string(maps), data) {
		t.Errorf("restored maps lack %s (the unchanged file itself):\n%s", data, maps)
	}
}

// chpox run --embed-files: every checkpoint of the job carries its
// executable; the tree (a root and its child, one copy of the program for
// both) restores after the program was removed and counts on.
func TestRunEmbedFiles(t *testing.T) {
	setup(t, "runjob")
	exe := filepath.Join(t.TempDir(), "runjob")
	copyFile(t, progs["runjob"], exe, 0o755)
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--embed-files", "--signal", "10", "-o", img, "--", exe, "tree")
	child := j.child(t)
	j.waitCount(t, "root", 20)
	j.waitCount(t, "child", 20)
	unix.Kill(j.root, unix.SIGUSR1)
	j.waitCheckpoint(t, 1, 2, img)
	in := mustChpox(t, "inspect", img)
	if !strings.Contains(in.stdout, "embedded files:") || !strings.Contains(in.stdout, exe) {
		t.Errorf("inspect of a chpox run --embed-files checkpoint lacks the embedded %s:\n%s", exe, in.stdout)
	}
	j.cmd.Process.Kill()
	<-j.done
	killPIDs(t, j.root, child)
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	appendMark(t, j.stdout)
	r := restoreDetached(t, img, &proc{name: "runjob", pid: j.root, log: j.stdout})
	waitRestoredCounts(t, j.stdout, r)
	checkRunLog(t, j.stdout, "root", "child")
	for _, pid := range []int{j.root, child} {
		if link, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err != nil || !strings.Contains(link, "memfd:runjob") {
			t.Errorf("restored pid %d: exe %q (%v), want the memfd copy of runjob", pid, link, err)
		}
	}
}
