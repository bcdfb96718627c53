package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fdinfoField returns the value of one line of /proc/PID/fdinfo/FD.
func fdinfoField(t *testing.T, pid, fd int, key string) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/fdinfo/%d has no %s line:\n%s", pid, fd, key, data)
	return ""
}

// signalfdOf finds the signalfd of pid.
func signalfdOf(t *testing.T, pid int) int {
	t.Helper()
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, e := range ents {
		if linkOf(pid, atoi(e.Name())) == "anon_inode:[signalfd]" {
			return atoi(e.Name())
		}
	}
	t.Fatalf("pid %d holds no signalfd", pid)
	return -1
}

// sameDescription asks kcmp(2) whether two fds are one open file description.
func sameDescription(pid1, fd1, pid2, fd2 int) bool {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), 0 /* KCMP_FILE */, uintptr(fd1), uintptr(fd2), 0)
	return e == 0 && r == 0
}

// A signalfd (issue 9) comes back with its mask and flags, still one
// description shared by parent and child, and reads the signals of the
// process that reads it: one queued at the checkpoint (read once, before
// or after it), and new ones after restore.
func TestSignalfd(t *testing.T) {
	setup(t, "signalfd")
	p := start(t, "signalfd")
	m := p.waitLog(t, `(?m)^pids (\d+) (\d+)$`, 1, 10*time.Second)
	child := atoi(m[2])
	killAtEnd(t, child)
	pfd, cfd := signalfdOf(t, p.pid), signalfdOf(t, child)
	mask, flags := fdinfoField(t, p.pid, pfd, "sigmask"), fdinfoField(t, p.pid, pfd, "flags")
	unix.Kill(p.pid, unix.SIGUSR1)
	p.waitLog(t, `(?m)^parent sig 10 value 0$`, 1, 10*time.Second)
	// Sent right before the checkpoint: read before it or after restore,
	// but exactly once.
	rt := unix.Signal(35) // glibc's SIGRTMIN+1
	unix.Kill(p.pid, rt)
	unix.Kill(child, rt)

	img, _ := dumpKillTree(t, p, 2)
	r := restoreDetached(t, img, p)
	if got := fdinfoField(t, r.pid, pfd, "sigmask"); got != mask {
		t.Errorf("restored signalfd mask %s, want %s", got, mask)
	}
	if got := fdinfoField(t, r.pid, pfd, "flags"); got != flags {
		t.Errorf("restored signalfd flags %s, want %s", got, flags)
	}
	if !sameDescription(r.pid, pfd, child, cfd) {
		t.Errorf("parent fd %d and child fd %d are no longer one description", pfd, cfd)
	}
	r.waitLog(t, `(?m)^parent sig 35 value 0$`, 1, 10*time.Second)
	r.waitLog(t, `(?m)^child sig 35 value 0$`, 1, 10*time.Second)
	unix.Kill(child, unix.SIGUSR1)
	unix.Kill(r.pid, unix.SIGUSR1)
	r.waitLog(t, `(?m)^child sig 10 value 0$`, 1, 10*time.Second)
	r.waitLog(t, `(?m)^parent sig 10 value 0$`, 2, 10*time.Second)
	before := lastInt(p.log, `(?m)^parent alive (\d+)$`)
	r.waitInt(t, `(?m)^parent alive (\d+)$`, before+3, 10*time.Second)
	data, _ := os.ReadFile(p.log)
	for _, line := range []string{"parent sig 35 value 0\n", "child sig 35 value 0\n"} {
		if n := strings.Count(string(data), line); n != 1 {
			t.Errorf("%q read %d times, want once; log:\n%s", strings.TrimSpace(line), n, tailOf(data))
		}
	}
}

// sysvLines returns the lines of /proc/sysvipc/KIND of the objects ids
// (their kernel ids), keyed by id, with the fields restore keeps: for shm
// key shmid perms size nattch uid gid cuid cgid; for sem key semid perms
// nsems uid gid cuid cgid; for msg key msqid perms cbytes qnum uid gid cuid
// cgid.
func sysvLines(t *testing.T, kind string, ids ...string) map[string]string {
	t.Helper()
	data, err := os.ReadFile("/proc/sysvipc/" + kind)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	keep := map[string][]int{"shm": {0, 1, 2, 3, 6, 7, 8, 9, 10}, "sem": {0, 1, 2, 3, 4, 5, 6, 7}, "msg": {0, 1, 2, 3, 4, 7, 8, 9, 10}}[kind]
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 10 || !want[f[1]] {
			continue
		}
		var kept []string
		for _, i := range keep {
			kept = append(kept, f[i])
		}
		out[f[1]] = strings.Join(kept, " ")
	}
	return out
}

// sysvMaps returns the lines of /proc/PID/maps of System V attachments.
func sysvMaps(t *testing.T, pid int) string {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "/SYSV") {
			out = append(out, strings.Join(strings.Fields(line), " "))
		}
	}
	return strings.Join(out, "\n")
}

// lastPIDs are the kernel's records of who used the objects last: each
// semaphore's sempid (ipcs), each queue's lspid and lrpid, each segment's
// lpid; dump goes by them.
func lastPIDs(t *testing.T, sem string, queues, segments []string) string {
	t.Helper()
	out := []string{"sempid " + semColumn(t, sem, 4)}
	for _, kind := range []struct {
		name string
		ids  []string
		cols []int
	}{{"msg", queues, []int{5, 6}}, {"shm", segments, []int{5}}} {
		data, err := os.ReadFile("/proc/sysvipc/" + kind.name)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range kind.ids {
			for _, line := range strings.Split(string(data), "\n")[1:] {
				if f := strings.Fields(line); len(f) > 6 && f[1] == id {
					for _, c := range kind.cols {
						out = append(out, kind.name+" "+id+" "+f[c])
					}
				}
			}
		}
	}
	return strings.Join(out, ", ")
}

// semValues reads the values of semaphore set id with ipcs.
func semValues(t *testing.T, id string) string { return semColumn(t, id, 1) }

// semColumn reads one column of ipcs -s -i: 1 the values, 4 the last pids.
func semColumn(t *testing.T, id string, col int) string {
	t.Helper()
	out, err := exec.Command("ipcs", "-s", "-i", id).CombinedOutput()
	if err != nil {
		t.Fatalf("ipcs -s -i %s: %v\n%s", id, err, out)
	}
	var vals []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 5 && f[0] != "semnum" {
			vals = append(vals, f[col])
		}
	}
	return strings.Join(vals, " ")
}

// removeAtEnd removes System V objects the test's program made, whatever
// happened to it (they outlive their processes).
func removeAtEnd(t *testing.T, shm, sem, msg []string) {
	t.Cleanup(func() {
		for _, id := range shm {
			exec.Command("ipcrm", "-m", id).Run()
		}
		for _, id := range sem {
			exec.Command("ipcrm", "-s", id).Run()
		}
		for _, id := range msg {
			exec.Command("ipcrm", "-q", id).Run()
		}
	})
}

// System V IPC (issue 10): segments attached at fixed addresses (one twice,
// one read-only, one marked removed; one attached by nobody) stay shared between parent and child
// with their content, key, id, owner and mode; the semaphore set keeps its
// values and each process its SEM_UNDO adjustment (the child's exit gives
// its 2 back, the parent's death its 7); the queue keeps its typed
// messages in order. dump --kill takes the objects out of the namespace,
// restore puts them back with the same ids.
func TestSysV(t *testing.T) {
	setup(t, "sysv")
	p := start(t, "sysv")
	m := p.waitLog(t, `(?m)^ids (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$`, 1, 10*time.Second)
	child := atoi(m[2])
	killAtEnd(t, child)
	shmA, shmB, shmC, sem, q, shmD, qE := m[3], m[4], m[5], m[6], m[7], m[8], m[9]
	removeAtEnd(t, []string{shmA, shmB, shmC, shmD}, []string{sem}, []string{q, qE})
	p.signal(t, unix.SIGUSR1)
	unix.Kill(child, unix.SIGUSR1)
	p.waitLog(t, `(?m)^check ok parent$`, 1, 10*time.Second)
	p.waitLog(t, `(?m)^check ok child$`, 1, 10*time.Second)
	shm0, sem0, msg0 := sysvLines(t, "shm", shmA, shmB, shmC, shmD), sysvLines(t, "sem", sem), sysvLines(t, "msg", q, qE)
	if len(shm0) != 4 || len(sem0) != 1 || len(msg0) != 2 {
		t.Fatalf("objects before the dump: %v %v %v", shm0, sem0, msg0)
	}
	if got := semValues(t, sem); got != "3 0 1241" {
		t.Fatalf("semaphores %s, want 3 0 1241", got)
	}
	maps0 := map[int]string{p.pid: sysvMaps(t, p.pid), child: sysvMaps(t, child)}
	pids0 := lastPIDs(t, sem, []string{q}, []string{shmA, shmB, shmC, shmD})
	if n := strings.Count(maps0[p.pid], "\n") + 1; n != 4 {
		t.Fatalf("parent has %d System V areas, want 4 (A twice, one split by mprotect, B):\n%s", n, maps0[p.pid])
	}

	// Queue E was never used: only --ipc makes it the checkpoint's.
	img := dump(t, p, "--kill", "--ipc", "msg:"+qE)
	p.waitExit(t, 10*time.Second)
	waitPIDFree(t, p.pid, 10*time.Second)
	waitPIDFree(t, child, 10*time.Second)
	if left := sysvLines(t, "msg", q, qE); len(left) != 0 {
		t.Errorf("after dump --kill the queues are still there: %v", left)
	}
	if left := sysvLines(t, "shm", shmA, shmB, shmC, shmD); len(left) != 0 {
		t.Errorf("after dump --kill the segments are still there: %v", left)
	}
	if left := sysvLines(t, "sem", sem); len(left) != 0 {
		t.Errorf("after dump --kill the semaphore set is still there: %v", left)
	}
	out := mustChpox(t, "inspect", img).stdout
	for _, want := range []string{"System V", "shmid " + shmA, "semid " + sem, "msqid " + q, "msqid " + qE} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect does not show %q:\n%s", want, out)
		}
	}
	r := restoreDetached(t, img, p)
	for kind, want := range map[string]map[string]string{"shm": shm0, "sem": sem0, "msg": msg0} {
		var ids []string
		for id := range want {
			ids = append(ids, id)
		}
		if got := sysvLines(t, kind, ids...); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s after restore:\n  %v\nwant\n  %v", kind, got, want)
		}
	}
	if got := semValues(t, sem); got != "3 0 1241" {
		t.Errorf("semaphores after restore %s, want 3 0 1241", got)
	}
	for pid, want := range maps0 {
		if got := sysvMaps(t, pid); got != want {
			t.Errorf("pid %d: System V areas after restore:\n%s\nwant\n%s", pid, got, want)
		}
	}
	// The kernel names the same last users, so a checkpoint of the
	// restored tree finds every object again.
	if got := lastPIDs(t, sem, []string{q}, []string{shmA, shmB, shmC, shmD}); got != pids0 {
		t.Errorf("last users after restore:\n  %s\nwant\n  %s", got, pids0)
	}
	again := mustChpox(t, "inspect", dump(t, r)).stdout
	for _, want := range []string{"shmid " + shmA, "shmid " + shmB, "shmid " + shmC, "shmid " + shmD, "semid " + sem, "msqid " + q,
		"SEM_UNDO adjustments: semid " + sem + " #0: +2", "SEM_UNDO adjustments: semid " + sem + " #2: -7"} {
		if !strings.Contains(again, want) {
			t.Errorf("a checkpoint of the restored tree lacks %q:\n%s", want, again)
		}
	}
	r.signal(t, unix.SIGUSR1)
	unix.Kill(child, unix.SIGUSR1)
	r.waitLog(t, `(?m)^check ok parent$`, 2, 10*time.Second)
	r.waitLog(t, `(?m)^check ok child$`, 2, 10*time.Second)
	before := lastInt(p.log, `(?m)^parent (\d+) \d+$`)
	r.waitInt(t, `(?m)^parent (\d+) \d+$`, before+20, 10*time.Second)
	// The child's exit gives back the 2 it took with SEM_UNDO ...
	unix.Kill(child, unix.SIGUSR2)
	r.waitLog(t, `(?m)^undo ok 5$`, 1, 10*time.Second)
	// ... and the parent's death takes back the 7 it gave.
	killOriginal(t, r)
	if got := semValues(t, sem); got != "5 0 1234" {
		t.Errorf("semaphores after both exited %s, want 5 0 1234 (their SEM_UNDO adjustments undone)", got)
	}
}

// A segment or semaphore set the tree shares with a process outside it
// cannot be rebuilt shared: dump refuses it by name (exit 6) and the
// process runs on. The objects a restore creates must not be taken: a
// leftover with the same key or id stops the restore before anything is
// created (exit 4); once it is removed, the same image restores.
func TestSysVRefusals(t *testing.T) {
	setup(t, "sysv")
	p := start(t, "sysv")
	m := p.waitLog(t, `(?m)^ids (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$`, 1, 10*time.Second)
	child := atoi(m[2])
	killAtEnd(t, child)
	shmA, shmB, shmC, sem, q, shmD, qE := m[3], m[4], m[5], m[6], m[7], m[8], m[9]
	removeAtEnd(t, []string{shmA, shmB, shmC, shmD}, []string{sem}, []string{q, qE})

	// Dumped without its child, the parent shares the segments and the
	// semaphore set with a process outside the checkpoint.
	img := filepath.Join(t.TempDir(), "x.img")
	r := runChpox(t, "dump", strconv.Itoa(p.pid), "--no-children", "-o", img)
	wantFailure(t, r, 6, "System V", "outside", "left running unchanged")
	r = runChpox(t, "dump", strconv.Itoa(p.pid), "--ipc", "msg:999999", "-o", img)
	wantFailure(t, r, 2, "--ipc msg:999999", "no such System V object")
	r = runChpox(t, "dump", strconv.Itoa(p.pid), "--ipc", "queue:1", "-o", img)
	wantFailure(t, r, 2, "KIND:ID")
	p.waitInt(t, `(?m)^parent (\d+) \d+$`, lastInt(p.log, `(?m)^parent (\d+) \d+$`)+5, 10*time.Second)

	// dump without --kill: the objects stay, so a restore after the
	// processes are gone finds their keys and ids taken.
	img = dump(t, p)
	killOriginal(t, p)
	unix.Kill(child, unix.SIGKILL)
	waitPIDFree(t, child, 10*time.Second)
	r = runChpox(t, "restore", "--detach", img)
	wantFailure(t, r, 4, "System V", "already has", "ipcrm")
	if got := sysvLines(t, "shm", shmA); len(got) != 1 {
		t.Errorf("segment %s after the refused restore: %v", shmA, got)
	}
	exec.Command("ipcrm", "-m", shmA, "-m", shmC, "-m", shmD, "-s", sem, "-q", q).Run()
	rp := restoreDetached(t, img, p)
	rp.signal(t, unix.SIGUSR1)
	rp.waitLog(t, `(?m)^check ok parent$`, 1, 10*time.Second)
}

// A process in an IPC namespace of its own is refused by name: chpox sees
// and restores System V objects of its own namespace only, where the ids
// the process holds would name other objects.
func TestSysVOtherNamespace(t *testing.T) {
	setup(t, "sleeper")
	p := startExe(t, "sleeper", needCommand(t, "unshare"), "--ipc", progs["sleeper"])
	p.waitLog(t, `(?m)^tick \d+$`, 1, 10*time.Second)
	r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "x.img"))
	wantFailure(t, r, 6, fmt.Sprintf("process %d is in another IPC namespace", p.pid), "left running unchanged")
	n := lastInt(p.log, `(?m)^tick (\d+)$`)
	p.waitInt(t, `(?m)^tick (\d+)$`, n+2, 10*time.Second)
}

// Under `chpox run`, a triggered checkpoint saves the System V objects and
// the SEM_UNDO adjustments too (asked by the supervisor). The objects stay
// in use with the job, so once it is killed they are removed by hand before
// the image restores.
func TestSysVRun(t *testing.T) {
	setup(t, "sysv")
	img := filepath.Join(t.TempDir(), "job.chp")
	j := startRun(t, "--signal", "31", "-o", img, "--", progs["sysv"])
	m := j.waitFile(t, j.stdout, `(?m)^ids (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$`, 1, 10*time.Second)
	child := atoi(m[2])
	killAtEnd(t, child)
	shmA, shmB, shmC, sem, q, shmD, qE := m[3], m[4], m[5], m[6], m[7], m[8], m[9]
	removeAtEnd(t, []string{shmA, shmB, shmC, shmD}, []string{sem}, []string{q, qE})
	unix.Kill(j.root, unix.Signal(31))
	j.waitFile(t, j.stderr, `(?m)^chpox: checkpoint 1 at `, 1, 20*time.Second)
	out := mustChpox(t, "inspect", img).stdout
	if !strings.Contains(out, "SEM_UNDO adjustments: semid "+sem+" #2: -7") || !strings.Contains(out, "SEM_UNDO adjustments: semid "+sem+" #0: +2") {
		t.Errorf("inspect does not show the adjustments (-7 of the parent, +2 of the child):\n%s", out)
	}
	unix.Kill(child, unix.SIGKILL)
	unix.Kill(j.root, unix.SIGKILL)
	<-j.done
	waitPIDFree(t, j.root, 10*time.Second)
	waitPIDFree(t, child, 10*time.Second)
	exec.Command("ipcrm", "-m", shmA, "-m", shmC, "-m", shmD, "-s", sem, "-q", q).Run()
	r := restoreDetached(t, img, &proc{name: "sysv", pid: j.root, log: j.stdout})
	r.signal(t, unix.SIGUSR1)
	r.waitLog(t, `(?m)^check ok parent$`, 1, 10*time.Second)
	unix.Kill(child, unix.SIGUSR2)
	r.waitLog(t, `(?m)^undo ok 5$`, 1, 10*time.Second)
}

// What chpox cannot restore exactly is refused by name (exit 6) and the
// processes run on: an attachment of which a part was unmapped (shmat
// maps whole segments), a segment locked with SHM_LOCK.
func TestSysVUnsupported(t *testing.T) {
	setup(t, "sysv")
	for _, tc := range []struct{ mode, want string }{
		{"partial", "is attached only in part"},
		{"lock", "locked in memory (SHM_LOCK)"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p := start(t, "sysv", tc.mode)
			m := p.waitLog(t, `(?m)^ids (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$`, 1, 10*time.Second)
			killAtEnd(t, atoi(m[2]))
			removeAtEnd(t, []string{m[3], m[4], m[5], m[8]}, []string{m[6]}, []string{m[7], m[9]})
			r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "x.img"))
			wantFailure(t, r, 6, "System V shared memory segment "+m[3], tc.want, "left running unchanged")
			n := lastInt(p.log, `(?m)^parent (\d+) \d+$`)
			p.waitInt(t, `(?m)^parent (\d+) \d+$`, n+5, 10*time.Second)
		})
	}
}
