package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Files that are gone or special come back as they were: a removed
// working directory and a removed directory held open, a removed FIFO with
// its unread bytes, a removed device node, a sparse deleted file (same
// holes, and the image holds only its data), a deleted file with another
// owner and mode, a deleted file whose path a new file took (left alone),
// O_PATH descriptors of a file and of a symlink, a file reopened through
// /proc/self/fd, and a deleted file mapped private and shared. The
// program checks each itself (testdata/specialfiles.c).
func TestSpecialFiles(t *testing.T) {
	setup(t, "specialfiles")
	dir := t.TempDir()
	p := start(t, "specialfiles", dir)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	p.signal(t, unix.SIGUSR1) // the checks hold before the dump
	p.waitLog(t, `(?m)^special ok$`, 1, 10*time.Second)
	img := dumpKill(t, p)

	var top struct {
		Processes []struct {
			Cwd        string `json:"cwd"`
			CwdDeleted bool   `json:"cwd_deleted"`
			Files      []struct {
				FD      int    `json:"fd"`
				Kind    string `json:"kind"`
				Path    string `json:"path"`
				Size    int64  `json:"size"`
				Content []struct {
					Len int64 `json:"len"`
				} `json:"content"`
			} `json:"files"`
		} `json:"processes"`
	}
	if err := json.Unmarshal([]byte(mustChpox(t, "inspect", "--json", img).stdout), &top); err != nil {
		t.Fatal(err)
	}
	pr := top.Processes[0]
	if !pr.CwdDeleted || pr.Cwd != filepath.Join(dir, "cwd") {
		t.Errorf("image has cwd %q deleted %v, want %s/cwd deleted", pr.Cwd, pr.CwdDeleted, dir)
	}
	for _, f := range pr.Files {
		if f.Path != filepath.Join(dir, "sparse") {
			continue
		}
		var n int64
		for _, r := range f.Content {
			n += r.Len
		}
		if f.Kind != "deleted" || f.Size != 4<<20 || n == 0 || n > 64<<10 {
			t.Errorf("sparse file in the image: kind %s, size %d, %d bytes of content; want deleted, 4 MiB, only its data", f.Kind, f.Size, n)
		}
	}
	out := mustChpox(t, "inspect", img).stdout
	for _, want := range []string{"cwd " + dir + "/cwd (deleted)", "sparse (deleted, 4.0 MiB, 8.0 KiB saved, the rest holes", "fifo (deleted FIFO)",
		"held (deleted, owner 0:0, mode 0750)", "null (deleted, owner 0:0, mode 0600) device 1:3", "link (the symlink)"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect does not show %q:\n%s", want, out)
		}
	}

	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^special ok$`, 2, 10*time.Second)
	r.signal(t, unix.SIGUSR1) // and again: the FIFO was refilled
	r.waitLog(t, `(?m)^special ok$`, 3, 10*time.Second)

	// Where the path was free the stand-in had the original name.
	for fd, want := range map[int]string{3: filepath.Join(dir, "held") + " (deleted)", 4: filepath.Join(dir, "fifo") + " (deleted)",
		6: filepath.Join(dir, "sparse") + " (deleted)"} {
		if got, _ := os.Readlink("/proc/" + strconv.Itoa(r.pid) + "/fd/" + strconv.Itoa(fd)); got != want {
			t.Errorf("fd %d is %q, want %q", fd, got, want)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(dir, "same")); string(data) != "new" {
		t.Errorf("the file that took the deleted file's path holds %q, want new", data)
	}
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"link", "opath", "same", "viaproc"}; !slices.Equal(names, want) {
		t.Errorf("%s holds %v after the restore, want %v (stand-ins left behind?)", dir, names, want)
	}
}

// A process in a chroot comes back in the same chroot: / is the same
// directory, paths open inside it, the working directory and an open
// file are where they were (testdata/chrooted.c).
func TestChroot(t *testing.T) {
	setup(t, "chrooted")
	newRoot := filepath.Join(t.TempDir(), "root")
	if err := os.MkdirAll(filepath.Join(newRoot, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(newRoot, "inside.txt"), []byte("inside"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := start(t, "chrooted", newRoot)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	p.signal(t, unix.SIGUSR1)
	p.waitLog(t, `(?m)^chroot ok$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	if got, _ := os.Readlink("/proc/" + strconv.Itoa(r.pid) + "/root"); got != newRoot {
		t.Errorf("restored process's root is %q, want %q", got, newRoot)
	}
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^chroot ok$`, 2, 10*time.Second)
}

// A chroot whose directory was removed under the process is refused by
// name at dump, and the process runs on.
func TestChrootRemovedRefused(t *testing.T) {
	setup(t, "chrooted")
	newRoot := filepath.Join(t.TempDir(), "root")
	os.MkdirAll(filepath.Join(newRoot, "sub"), 0o755)
	os.WriteFile(filepath.Join(newRoot, "inside.txt"), []byte("inside"), 0o644)
	p := start(t, "chrooted", newRoot)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	if err := os.RemoveAll(newRoot); err != nil {
		t.Fatal(err)
	}
	res := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "x.img"))
	if res.code != 6 || !strings.Contains(res.stderr, newRoot) || !strings.Contains(res.stderr, "chroot") {
		t.Errorf("dump of a process in a removed chroot: exit %d, stderr %q; want 6 naming %s", res.code, res.stderr, newRoot)
	}
	stillRunsUntraced(t, p)
}

// An O_PATH descriptor of a deleted file is refused by name at dump: a
// stand-in would be another file, which an O_PATH holder may compare.
func TestOPathDeletedRefused(t *testing.T) {
	setup(t)
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed:", err)
	}
	path := filepath.Join(t.TempDir(), "gone.txt")
	os.WriteFile(path, []byte("x"), 0o644)
	p := startExe(t, "opath", python, "-c", `import os, sys, time
fd = os.open(sys.argv[1], os.O_PATH)
os.unlink(sys.argv[1])
print("ready", flush=True)
time.sleep(600)`, path)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	res := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "x.img"))
	if res.code != 6 || !strings.Contains(res.stderr, path) || !strings.Contains(res.stderr, "O_PATH") {
		t.Errorf("dump: exit %d, stderr %q; want 6 naming the O_PATH descriptor of %s", res.code, res.stderr, path)
	}
	stillRunsUntraced(t, p)
}

// mount mounts and unmounts it at the end of the test, also on failure.
func mount(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v: %v: %s", args, err, out)
	}
	target := args[len(args)-1]
	t.Cleanup(func() { exec.Command("umount", "-l", target).Run() })
}

// Files on other mounts (a tmpfs) and a bind-mounted file come back open
// on the very same file; a file whose content changed since the dump
// comes back at its offset with the new content (the content is the
// file's business). With the bind mount gone, the path names another file:
// restore refuses it by name, and succeeds once it is mounted again.
func TestFilesOnMounts(t *testing.T) {
	setup(t, "holdfiles")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	mount(t, "-t", "tmpfs", "chpox-test", mnt)
	onTmpfs := filepath.Join(mnt, "t.txt")
	src, bound := filepath.Join(dir, "src.txt"), filepath.Join(dir, "bound.txt")
	changed := filepath.Join(dir, "changed.txt")
	for path, data := range map[string]string{onTmpfs: "tmpfs", src: "bound", bound: "underneath", changed: "before"} {
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mount(t, "--bind", src, bound)
	p := start(t, "holdfiles", onTmpfs, bound, changed)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	p.signal(t, unix.SIGUSR1)
	p.waitLog(t, `(?m)^hold ok tbb$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	if err := os.WriteFile(changed, []byte("AFTER"), 0o644); err != nil { // same inode, new content
		t.Fatal(err)
	}

	if out, err := exec.Command("umount", bound).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	res := runChpox(t, "restore", "--detach", img)
	if res.code != 5 || !strings.Contains(res.stderr, bound) || !strings.Contains(res.stderr, "another file") {
		t.Fatalf("restore with the bind mount gone: exit %d, stderr %q; want 5 naming %s as another file", res.code, res.stderr, bound)
	}
	mount(t, "--bind", src, bound)
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^hold ok tbA$`, 1, 10*time.Second)
}

// A mapped file that changed since the dump is refused at restore, naming
// the file, what changed and what to do; put back, it restores.
func TestChangedMappedFileRefused(t *testing.T) {
	setup(t, "holdfiles")
	dir := t.TempDir()
	lib, held := filepath.Join(dir, "lib.bin"), filepath.Join(dir, "held.txt")
	os.WriteFile(lib, make([]byte, 4096), 0o644)
	os.WriteFile(held, []byte("held"), 0o644)
	p := start(t, "holdfiles", "map:"+lib, held)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	orig, _ := os.ReadFile(lib)
	st, _ := os.Stat(lib)
	os.WriteFile(lib, append(orig, "more"...), 0o644)
	res := runChpox(t, "restore", "--detach", img)
	for _, want := range []string{lib, "changed since the checkpoint", "size 4096 → 4100", "mtime", "put the original file back, or dump again"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("restore of a changed mapped file: stderr %q lacks %q", res.stderr, want)
		}
	}
	if res.code != 5 {
		t.Errorf("restore of a changed mapped file: exit %d, want 5", res.code)
	}
	// The original back (same inode, content and mtime): it restores.
	os.WriteFile(lib, orig, 0o644)
	os.Chtimes(lib, st.ModTime(), st.ModTime())
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^hold ok h$`, 1, 10*time.Second)
}

// A UNIX socket bound by a path inside a chroot is refused by name at
// dump: chpox, outside the chroot, would bind it elsewhere.
func TestChrootUnixSocketRefused(t *testing.T) {
	setup(t)
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is needed:", err)
	}
	newRoot := t.TempDir()
	p := startExe(t, "chrootsock", python, "-c", `import os, socket, sys, time
os.chroot(sys.argv[1])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind("/sock")
s.listen(1)
print("ready", flush=True)
time.sleep(600)`, newRoot)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	res := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "x.img"))
	if res.code != 6 || !strings.Contains(res.stderr, `"/sock"`) || !strings.Contains(res.stderr, newRoot) {
		t.Errorf("dump: exit %d, stderr %q; want 6 naming /sock in the chroot %s", res.code, res.stderr, newRoot)
	}
	stillRunsUntraced(t, p)
}

// stillRunsUntraced fails the test unless p runs on, no longer traced,
// after a refused dump.
func stillRunsUntraced(t *testing.T, p *proc) {
	t.Helper()
	if p.exited() {
		t.Fatalf("the process died: %s", p.status)
	}
	if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
		t.Errorf("after the refused dump: %s", st)
	}
}

// A process whose executable was deleted (a program upgraded under it)
// comes back running, its exe link on an unlinked stand-in with the same
// bytes at the same path; the deleted areas of its memory are saved whole.
func TestDeletedExecutable(t *testing.T) {
	setup(t, "counter")
	exe := filepath.Join(t.TempDir(), "counter-old")
	orig, err := os.ReadFile(progs["counter"])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, orig, 0o751); err != nil {
		t.Fatal(err)
	}
	p := startExe(t, "counter", exe)
	p.waitInt(t, countRE, 5, 10*time.Second)
	if err := os.Remove(exe); err != nil {
		t.Fatal(err)
	}
	img := dumpKill(t, p)
	atDump := checkCounterLog(t, p.log)
	r := restoreDetached(t, img, p)
	r.waitInt(t, countRE, atDump+20, 10*time.Second)
	link := "/proc/" + strconv.Itoa(r.pid) + "/exe"
	if got, _ := os.Readlink(link); got != exe+" (deleted)" {
		t.Errorf("restored exe link is %q, want %q", got, exe+" (deleted)")
	}
	if got, err := os.ReadFile(link); err != nil || !slices.Equal(got, orig) {
		t.Errorf("restored exe holds %d bytes (%v), not the %d of the original", len(got), err, len(orig))
	}
	if st, err := os.Stat(link); err != nil || st.Mode().Perm() != 0o751 {
		t.Errorf("restored exe mode %v (%v), want 0751", st.Mode(), err)
	}
	if _, err := os.Stat(exe); err == nil {
		t.Errorf("the deleted executable is back at %s", exe)
	}
}

// specialfiles as an ordinary user (uid 1000), dumped and restored by
// root: the stand-ins belong to the user, and the deleted file the user
// holds open for writing though its mode (0404, set after the open) no
// longer lets it is reopened all the same, then given its mode.
func TestSpecialFilesAsUser(t *testing.T) {
	setup(t, "specialfiles")
	p, _ := startAsUser(t, "specialfiles", "DIR", "nodev")
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	p.signal(t, unix.SIGUSR1)
	p.waitLog(t, `(?m)^special ok$`, 1, 10*time.Second)
	img := dumpKill(t, p)
	r := restoreDetached(t, img, p)
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^special ok$`, 2, 10*time.Second)
	for _, fd := range []int{3, 5, 6} { // held, sparse, owned
		var st unix.Stat_t
		if err := unix.Stat("/proc/"+strconv.Itoa(r.pid)+"/fd/"+strconv.Itoa(fd), &st); err != nil || st.Uid != 1000 {
			t.Errorf("fd %d's stand-in belongs to uid %d (%v), want 1000", fd, st.Uid, err)
		}
	}
}

// A user restoring its own image that holds a deleted device node is told
// before anything starts that only root can make the node, naming it.
func TestDeletedDeviceAsUserRefused(t *testing.T) {
	setup(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatal("setpriv (util-linux) is needed:", err)
	}
	if err := os.Chmod(workDir, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o777)
	node := filepath.Join(dir, "null")
	if err := unix.Mknod(node, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	os.Chmod(node, 0o666)
	user := []string{"--reuid=1000", "--regid=1000", "--clear-groups"}
	p := startExe(t, "devholder", setpriv, append(user, "/usr/bin/python3", "-c", `import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY)
print("ready", flush=True)
time.sleep(600)`, node)...)
	os.Chmod(filepath.Dir(filepath.Dir(p.log)), 0o755)
	os.Chmod(filepath.Dir(p.log), 0o755)
	os.Chmod(p.log, 0o666)
	p.waitLog(t, `(?m)^ready$`, 1, 10*time.Second)
	if err := os.Remove(node); err != nil {
		t.Fatal(err)
	}
	img := dumpKill(t, p)
	os.Chmod(filepath.Dir(img), 0o755)
	if err := os.Chown(img, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, append(user, chpoxBin, "restore", "--detach", img)...)
	out, err := cmd.CombinedOutput()
	t.Logf("restore as uid 1000: %v: %s", err, out)
	if exitCode(err) == 0 || !strings.Contains(string(out), node) || !strings.Contains(string(out), "only root") {
		t.Errorf("restore by a user of a deleted device node: %v, %q; want a refusal naming %s", err, out, node)
	}
	if _, err := os.Lstat(node); err == nil {
		t.Errorf("the refused restore made %s", node)
	}
}
