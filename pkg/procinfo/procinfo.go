// Package procinfo reads the per-process state that /proc exposes without
// stopping or changing the process: identity, credentials, limits, mm
// fields, auxv and open files. It uses prometheus/procfs where procfs parses
// the file and reads the rest directly. It never writes to the process.
package procinfo

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// ErrUnsupported marks process state chpox cannot checkpoint yet.
var ErrUnsupported = errors.New("not supported yet")

// ErrNoProcess reports that the PID does not exist.
var ErrNoProcess = errors.New("no such process")

// Info is the /proc view of one process.
type Info struct {
	format.Process
	TIDs     []int  // threads
	Seccomp  string // seccomp mode: "0" none, "1" strict, "2" filter
	Children []int
	Zombie   bool
	// RootDeleted: the root directory (a chroot's) was removed.
	RootDeleted bool
	// TTYNr is the device number of the controlling terminal (0: none),
	// TPGID its foreground process group (stat fields 7 and 8, proc(5)).
	TTYNr, TPGID int
	// Started is the start time (stat field 22, clock ticks after boot):
	// with the PID, it names this process and not a later one that got
	// the same PID.
	Started uint64
}

// Read collects the state of pid that /proc can tell.
func Read(pid int) (*Info, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return nil, fmt.Errorf("pid %d: %w", pid, err)
	}
	st, err := p.Stat()
	if err != nil {
		return nil, fmt.Errorf("pid %d: read stat: %w", pid, err)
	}
	in := &Info{Process: format.Process{PID: pid, PPID: st.PPID, PGID: st.PGRP, SID: st.Session, Comm: st.Comm}, TTYNr: st.TTY, TPGID: st.TPGID, Started: st.Starttime}
	// A "Z" main thread with other threads alive is a running process
	// whose main thread called pthread_exit, not a zombie.
	in.Zombie = st.State == "Z" && st.NumThreads <= 1
	if st.State == "Z" && !in.Zombie {
		return nil, fmt.Errorf("pid %d: its main thread has exited while %d threads run on: %w", pid, st.NumThreads-1, ErrUnsupported)
	}
	if in.Zombie {
		// A zombie has no memory, files or paths left: only its identity
		// and the status its parent will reap.
		return in, readZombie(p, in)
	}
	steps := []struct {
		what string
		f    func(procfs.Proc, *Info) error
	}{
		{"status", readStatus}, {"mm fields", readMM}, {"paths", readPaths},
		{"limits", readLimits}, {"tasks", readTasks}, {"personality", readPersonality},
	}
	for _, s := range steps {
		if err := s.f(p, in); err != nil {
			if exiting(pid, err) {
				// It exited while being read: now a zombie or gone.
				return readExited(pid)
			}
			return nil, fmt.Errorf("pid %d: read %s: %w", pid, s.what, err)
		}
	}
	return in, nil
}

// exiting tells whether a read failed because pid is exiting: gone (zombie
// or reaped) already, or on its way, its memory already released (ESRCH
// from auxv or environ) and its exit soon complete.
func exiting(pid int, err error) bool {
	if !errors.Is(err, syscall.ESRCH) {
		return gone(pid)
	}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if gone(pid) {
			return true
		}
	}
	return false
}

// gone tells whether pid has exited (zombie or reaped).
func gone(pid int) bool {
	st, _, err := State(pid)
	return err != nil || st == "Z" || st == "X"
}

// State returns the state letter (R, S, D, T, Z ...) and the name of pid
// from /proc/PID/stat.
func State(pid int) (state, comm string, err error) {
	return statState(procPath(pid, "stat"))
}

// statState parses a stat file: comm may hold spaces and parentheses, so
// the state is found after the last ')'.
func statState(path string) (state, comm string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i || j+3 > len(s) {
		return "", "", fmt.Errorf("%s: malformed", path)
	}
	return s[j+2 : j+3], s[i+1 : j], nil
}

// readExited reads a process that exited during Read: as a zombie if its
// parent has not reaped it yet, else ErrNoProcess.
func readExited(pid int) (*Info, error) {
	p, err := procfs.NewProc(pid)
	if err == nil {
		var st procfs.ProcStat
		if st, err = p.Stat(); err == nil && st.State == "Z" {
			in := &Info{Process: format.Process{PID: pid, PPID: st.PPID, PGID: st.PGRP, SID: st.Session, Comm: st.Comm}, Zombie: true}
			if err = readZombie(p, in); err == nil {
				return in, nil
			}
		}
	}
	return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
}

func procPath(pid int, name string) string { return fmt.Sprintf("/proc/%d/%s", pid, name) }

func readStatus(p procfs.Proc, in *Info) error {
	b, err := os.ReadFile(procPath(p.PID, "status"))
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, _ := strings.Cut(line, ":")
		f := strings.Fields(val)
		switch key {
		case "Umask":
			u, err := strconv.ParseUint(strings.TrimSpace(val), 8, 32)
			if err != nil {
				return fmt.Errorf("umask %q: %w", val, err)
			}
			in.Umask = uint32(u)
		case "Uid", "Gid":
			dst := &in.Creds.UID
			if key == "Gid" {
				dst = &in.Creds.GID
			}
			for i := 0; i < 4 && i < len(f); i++ {
				v, _ := strconv.ParseUint(f[i], 10, 32)
				dst[i] = uint32(v)
			}
		case "Groups":
			for _, g := range f {
				v, _ := strconv.ParseUint(g, 10, 32)
				in.Creds.Groups = append(in.Creds.Groups, uint32(v))
			}
		case "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb":
			v, err := strconv.ParseUint(strings.TrimSpace(val), 16, 64)
			if err != nil {
				return fmt.Errorf("%s %q: %w", key, val, err)
			}
			*map[string]*uint64{"CapInh": &in.Creds.CapInh, "CapPrm": &in.Creds.CapPrm, "CapEff": &in.Creds.CapEff,
				"CapBnd": &in.Creds.CapBnd, "CapAmb": &in.Creds.CapAmb}[key] = v
		case "NoNewPrivs":
			in.Creds.NoNewPrivs = strings.TrimSpace(val) == "1"
		case "Seccomp":
			in.Seccomp = strings.TrimSpace(val)
		}
	}
	return nil
}

// readMM parses the mm fields of /proc/PID/stat that procfs does not expose
// (fields 26-28 and 45-51, see proc(5)).
func readMM(p procfs.Proc, in *Info) error {
	b, err := os.ReadFile(procPath(p.PID, "stat"))
	if err != nil {
		return err
	}
	// comm may hold spaces and parentheses: split after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return fmt.Errorf("malformed stat")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3 (state)
	field := func(n int) uint64 {
		if n-3 >= len(f) {
			return 0
		}
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		return v
	}
	if len(f) < 52-3 {
		return fmt.Errorf("stat has %d fields, want 52", len(f)+2)
	}
	in.MM = format.MM{
		StartCode: field(26), EndCode: field(27), StartStack: field(28),
		StartData: field(45), EndData: field(46), StartBrk: field(47),
		ArgStart: field(48), ArgEnd: field(49), EnvStart: field(50), EnvEnd: field(51),
	}
	in.Auxv, err = os.ReadFile(procPath(p.PID, "auxv"))
	return err
}

func readPaths(p procfs.Proc, in *Info) error {
	var err error
	if in.Cwd, err = p.Cwd(); err != nil {
		return err
	}
	if in.Root, err = p.RootDir(); err != nil {
		return err
	}
	// A removed directory has no links left (rmdir clears them).
	var st unix.Stat_t
	if unix.Stat(procPath(p.PID, "cwd"), &st) == nil && st.Nlink == 0 {
		in.Cwd, in.CwdDeleted = strings.TrimSuffix(in.Cwd, " (deleted)"), true
		in.CwdMode, in.CwdOwner = st.Mode&0o7777, &format.Ownership{UID: st.Uid, GID: st.Gid}
	}
	if unix.Stat(procPath(p.PID, "root"), &st) == nil && st.Nlink == 0 {
		in.RootDeleted = true
	}
	if in.Exe, err = p.Executable(); err != nil {
		return err
	}
	in.Cmdline, err = p.CmdLine()
	return err
}

// readLimits parses /proc/PID/limits: prlimit64 on another user's process
// needs CAP_SYS_RESOURCE, which chpox may not have, and procfs keeps only
// the soft limits. The rows follow RLIMIT_* order; the kernel prints
// "%-25s %-20s %-20s %-10s" (fs/proc/base.c, proc_pid_limits).
func readLimits(p procfs.Proc, in *Info) error {
	b, err := os.ReadFile(procPath(p.PID, "limits"))
	if err != nil {
		return err
	}
	in.Rlimits, err = parseLimits(string(b))
	return err
}

func parseLimits(text string) ([]format.Rlimit, error) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("limits: %d lines", len(lines))
	}
	var out []format.Rlimit
	for r, line := range lines[1:] {
		if len(line) < 67 {
			return nil, fmt.Errorf("limits line %q is short", line)
		}
		soft, err1 := limitValue(line[26:46])
		hard, err2 := limitValue(line[47:67])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("limits line %q: bad value", line)
		}
		out = append(out, format.Rlimit{Resource: r, Cur: soft, Max: hard})
	}
	return out, nil
}

func limitValue(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	if s == "unlimited" {
		return unix.RLIM_INFINITY, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

func readTasks(p procfs.Proc, in *Info) error {
	ents, err := os.ReadDir(procPath(p.PID, "task"))
	if err != nil {
		return err
	}
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		kids, err := taskChildren(p.PID, tid)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			continue // the thread ended since the listing: a running process's threads come and go
		}
		if err != nil {
			return err
		}
		in.TIDs = append(in.TIDs, tid)
		in.Children = append(in.Children, kids...)
	}
	return nil
}

func taskChildren(pid, tid int) ([]int, error) {
	b, err := os.ReadFile(procPath(pid, fmt.Sprintf("task/%d/children", tid)))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, c := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(c); err == nil {
			out = append(out, n)
		}
	}
	return out, nil
}

// Children lists the children of all threads of pid, best effort: a
// process or thread that ends meanwhile contributes none.
func Children(pid int) []int {
	var out []int
	tids, _ := TIDs(pid)
	for _, tid := range tids {
		kids, _ := taskChildren(pid, tid)
		out = append(out, kids...)
	}
	return out
}

func readPersonality(p procfs.Proc, in *Info) error {
	b, err := os.ReadFile(procPath(p.PID, "personality"))
	if err != nil {
		return err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 32)
	in.Personality = uint32(v)
	return err
}

// readZombie reads the wait status (field 52 of stat) and credentials of
// an exited, unreaped process.
func readZombie(p procfs.Proc, in *Info) error {
	in.Process.Zombie = true
	if err := readStatus(p, in); err != nil {
		return fmt.Errorf("pid %d: read status: %w", p.PID, err)
	}
	b, err := os.ReadFile(procPath(p.PID, "stat"))
	if err != nil {
		return fmt.Errorf("pid %d: read stat: %w", p.PID, err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 52-2 {
		return fmt.Errorf("pid %d: stat has %d fields, want 52", p.PID, len(f)+2)
	}
	ws, err := strconv.Atoi(f[52-3])
	in.WaitStatus = ws
	return err
}

// TracerPID returns the process tracing pid (0 if none or unknown). The
// kernel's TracerPid names the tracing thread, which in a Go tracer (chpox
// itself) is seldom the main one: its thread group is the process.
func TracerPID(pid int) int {
	tid := statusInt(pid, "TracerPid:")
	if tid <= 0 {
		return 0
	}
	if tgid := statusInt(tid, "Tgid:"); tgid > 0 {
		return tgid
	}
	return tid
}

// TGID is the process a thread ID belongs to (0 if unknown).
func TGID(tid int) int { return statusInt(tid, "Tgid:") }

// StartTime is pid's start time, as Info.Started (0 if unknown).
func StartTime(pid int) uint64 {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	return st.Starttime
}

// ParentOf is the parent of pid (0 if unknown).
func ParentOf(pid int) int { return statusInt(pid, "PPid:") }

// statusInt is one number of /proc/PID/status (0 if missing).
func statusInt(pid int, key string) int {
	b, err := os.ReadFile(procPath(pid, "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// TIDs lists the threads of pid.
func TIDs(pid int) ([]int, error) {
	ents, err := os.ReadDir(procPath(pid, "task"))
	if err != nil {
		return nil, fmt.Errorf("pid %d: list threads: %w", pid, err)
	}
	var out []int
	for _, e := range ents {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, tid)
		}
	}
	return out, nil
}

// ThreadComm is the name of one thread ("" if it is gone).
func ThreadComm(tid int) string {
	b, _ := os.ReadFile(procPath(tid, "comm"))
	return strings.TrimSuffix(string(b), "\n")
}

// pfIOWorker is PF_IO_WORKER in a task's flags (include/linux/sched.h).
const pfIOWorker = 0x10

// IOWorker tells whether thread tid of pid is one the kernel runs for an
// io_uring (iou-sqp-PID, the SQPOLL thread, or iou-wrk-PID, an io-wq
// worker): it is listed among the process's threads but never returns to
// user space, so it can be stopped but never run an injected call.
func IOWorker(pid, tid int) bool {
	b, err := os.ReadFile(procPath(pid, fmt.Sprintf("task/%d/stat", tid)))
	if err != nil {
		return false
	}
	s := string(b)
	// After "pid (comm) ": state ppid pgrp session tty_nr tpgid flags (proc(5)).
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 7 {
		return false
	}
	flags, err := strconv.ParseUint(fields[6], 10, 64)
	return err == nil && flags&pfIOWorker != 0
}

// ThreadAlive tells whether thread tid of pid still runs (not exiting).
func ThreadAlive(pid, tid int) bool {
	st, _, err := statState(procPath(pid, fmt.Sprintf("task/%d/stat", tid)))
	return err == nil && st != "Z" && st != "X"
}
