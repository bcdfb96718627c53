package restore

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/pipe"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/procinfo"
)

// check refuses images that cannot be restored here, before anything starts.
func check(path string, img *format.Image, opt Options) error {
	if err := checkOwner(path, img); err != nil {
		return err
	}
	h := &img.Header
	if h.Arch != runtime.GOARCH {
		return fmt.Errorf("image is for %s, this machine is %s: %w", h.Arch, runtime.GOARCH, ErrIncompatible)
	}
	if h.PageSize != os.Getpagesize() {
		return fmt.Errorf("image has %d-byte pages, this machine %d: %w", h.PageSize, os.Getpagesize(), ErrIncompatible)
	}
	if err := checkCPU(img); err != nil {
		return err
	}
	if err := checkVDSO(img); err != nil {
		return err
	}
	if err := checkMemLock(img); err != nil {
		return err
	}
	if err := checkMemory(img); err != nil {
		return err
	}
	inImage := map[int]bool{}
	for _, p := range img.Processes {
		inImage[p.PID] = true
	}
	for _, p := range img.Processes {
		if err := checkCreds(p); err != nil {
			return err
		}
		if err := waitPIDFree(p.PID, time.Duration(opt.PIDWaitMS)*time.Millisecond); err != nil {
			return err
		}
		for _, v := range p.VMAs {
			if err := checkFile(p.PID, v); err != nil {
				return err
			}
		}
		for _, f := range p.Files {
			if ownProcEntry(f.Path, inImage) {
				continue // it appears with its process
			}
			if err := checkFD(p.PID, f); err != nil {
				return err
			}
		}
	}
	if err := checkExternals(img, opt); err != nil {
		return err
	}
	if err := checkPdeathSig(img.Processes[0], opt); err != nil {
		return err
	}
	if err := sysv.Check(img.Objects.SysV); err != nil {
		return err
	}
	for _, pi := range img.Objects.Pipes {
		if err := pipe.CheckFIFO(pi); errors.Is(err, pipe.ErrNotFIFO) {
			return fmt.Errorf("%w: %w", err, ErrIncompatible)
		} else if err != nil {
			return err
		}
	}
	return nil
}

// ErrUntrusted refuses an image whose owner could have forged what it
// asks root to do.
var ErrUntrusted = errors.New("image not trusted")

// checkOwner: an image is as trustworthy as whoever could write it. Root
// restores without question only images root owns and nobody else may
// write; an image owned by a user may only bring back that user's own
// unprivileged processes, so a forged one gains its owner nothing.
func checkOwner(path string, img *format.Image) error {
	st, err := statImage(path)
	if err != nil {
		return err
	}
	if st.Mode&0o022 != 0 {
		return fmt.Errorf("%s is writable by group or others (mode %#o): anyone could have changed it; chmod 600 it if you trust it: %w",
			path, st.Mode&0o777, ErrUntrusted)
	}
	if unix.Geteuid() != 0 || st.Uid == 0 {
		return nil // a non-root restorer is held to its own ids by checkCreds
	}
	for _, p := range img.Processes {
		c := p.Creds
		for i := 0; i < 4; i++ {
			if c.UID[i] != st.Uid {
				return fmt.Errorf("%s belongs to uid %d but process %d in it claims uid %d: %w", path, st.Uid, p.PID, c.UID[i], ErrUntrusted)
			}
		}
		if c.CapPrm|c.CapEff|c.CapAmb != 0 {
			return fmt.Errorf("%s belongs to uid %d but process %d in it claims capabilities %#x: %w", path, st.Uid, p.PID, c.CapPrm|c.CapEff, ErrUntrusted)
		}
	}
	// System V objects are created as their creator and given to their
	// owner: a user's image may make only that user's.
	if sv := img.Objects.SysV; sv != nil {
		var perms []format.SysVPerm
		for _, m := range sv.Shm {
			perms = append(perms, m.SysVPerm)
		}
		for _, m := range sv.Sem {
			perms = append(perms, m.SysVPerm)
		}
		for _, m := range sv.Msg {
			perms = append(perms, m.SysVPerm)
		}
		for _, p := range perms {
			if p.UID != st.Uid || p.CUID != st.Uid {
				return fmt.Errorf("%s belongs to uid %d but its System V object %d claims owner %d, creator %d: %w", path, st.Uid, p.KID, p.UID, p.CUID, ErrUntrusted)
			}
		}
	}
	return nil
}

// ownProcEntry tells whether path is under /proc/PID of a process of the
// image (dump refuses others), which exists only once restore made it.
func ownProcEntry(path string, inImage map[int]bool) bool {
	rest, ok := strings.CutPrefix(path, "/proc/")
	if !ok {
		return false
	}
	num, _, _ := strings.Cut(rest, "/")
	pid, err := strconv.Atoi(num)
	return err == nil && inImage[pid]
}

// untrustedImage tells whether root restores an image a user owns: its
// processes may then have only what that user could give them.
func untrustedImage(path string) (bool, error) {
	st, err := statImage(path)
	if err != nil {
		return false, err
	}
	return unix.Geteuid() == 0 && st.Uid != 0, nil
}

// statImage stats the image at path; a stream ("-") is held to the owner
// of the pipe or file it comes from.
func statImage(path string) (unix.Stat_t, error) {
	if path == "-" {
		path = "/dev/stdin"
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return st, fmt.Errorf("stat image: %w", err)
	}
	return st, nil
}

// checkFD makes sure a file reopened by path is still of its kind (a FIFO
// or device in the place of a regular file would block or act on open)
// and, where the image knows it, still the same file: the same device
// and inode (through a bind mount too), or for a device the same device
// number. A deleted one gets a stand-in instead; a device node only root
// can make.
func checkFD(pid int, f format.File) error {
	want := map[string]uint32{format.FileRegular: unix.S_IFREG, format.FileDir: unix.S_IFDIR, format.FileChar: unix.S_IFCHR,
		format.FileBlock: unix.S_IFBLK, format.FilePath: f.Mode & unix.S_IFMT}[f.Kind]
	if want == 0 {
		return nil
	}
	if f.Deleted {
		if (f.Kind == format.FileChar || f.Kind == format.FileBlock) && unix.Geteuid() != 0 {
			return fmt.Errorf("process %d: fd %d: %s was a device node (%d:%d) deleted while open: only root can make its stand-in: %w",
				pid, f.FD, f.Path, unix.Major(f.Rdev), unix.Minor(f.Rdev), os.ErrPermission)
		}
		return nil
	}
	var st unix.Stat_t
	stat := unix.Stat
	if want == unix.S_IFLNK {
		stat = unix.Lstat // an O_PATH|O_NOFOLLOW symlink
	}
	if err := stat(f.Path, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("process %d: fd %d: reopen %s: %w (the file is gone: recreate it, or restore where it exists)", pid, f.FD, f.Path, err)
		}
		return fmt.Errorf("process %d: fd %d: reopen %s: %w", pid, f.FD, f.Path, err)
	}
	if st.Mode&unix.S_IFMT != want {
		return fmt.Errorf("process %d: fd %d: %s is no longer a %s (mode %#o): %w", pid, f.FD, f.Path, kindName(f), st.Mode, ErrIncompatible)
	}
	device := want == unix.S_IFCHR || want == unix.S_IFBLK
	switch {
	case device && f.Rdev != 0 && st.Rdev != f.Rdev:
		return fmt.Errorf("process %d: fd %d: %s is now device %d:%d, it was %d:%d: %w",
			pid, f.FD, f.Path, unix.Major(st.Rdev), unix.Minor(st.Rdev), unix.Major(f.Rdev), unix.Minor(f.Rdev), ErrIncompatible)
	case !device && f.Inode != 0 && (st.Ino != f.Inode || st.Dev != f.Dev):
		return fmt.Errorf("process %d: fd %d: %s is another file than the one the process had open (device %d:%d inode %d, it was %d:%d inode %d): "+
			"put the original back where it was (or mount it there again), or dump again: %w",
			pid, f.FD, f.Path, unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino, unix.Major(f.Dev), unix.Minor(f.Dev), f.Inode, ErrIncompatible)
	}
	return nil
}

// kindName says what a file record named, for messages.
func kindName(f format.File) string {
	if f.Kind != format.FilePath {
		return f.Kind
	}
	return map[uint32]string{unix.S_IFREG: "regular file", unix.S_IFDIR: "directory", unix.S_IFLNK: "symlink", unix.S_IFCHR: "character device",
		unix.S_IFBLK: "block device", unix.S_IFIFO: "FIFO", unix.S_IFSOCK: "socket file"}[f.Mode&unix.S_IFMT]
}

// checkCreds enforces that restore never grants more than the restorer has:
// without CAP_SETUID/CAP_SETGID (root) only one's own images are restored.
func checkCreds(p *format.Process) error {
	if unix.Geteuid() == 0 {
		return nil
	}
	uid, gid := uint32(unix.Getuid()), uint32(unix.Getgid())
	for i := 0; i < 3; i++ {
		if p.Creds.UID[i] != uid || p.Creds.GID[i] != gid {
			return fmt.Errorf("process %d ran as uid %d gid %d; you are uid %d gid %d: only root or the same user may restore it: %w",
				p.PID, p.Creds.UID[0], p.Creds.GID[0], uid, gid, os.ErrPermission)
		}
	}
	return nil
}

// waitPIDFree waits briefly for a PID held by a zombie: the original was
// just killed and its parent (often PID 1, which reaps late) has not yet
// collected it. A live process keeps the PID: that is ErrPIDInUse.
func waitPIDFree(pid int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		state, comm, err := procinfo.State(pid)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if state != "Z" || time.Now().After(deadline) {
			return fmt.Errorf("pid %d is %w by %q (state %s); the original process may still run", pid, ErrPIDInUse, comm, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkFile makes sure a mapped file is still the one that was mapped: a
// different file would silently give the process other code or data.
func checkFile(pid int, v format.VMA) error {
	if v.Kind != format.VMAFile {
		return nil
	}
	changed, err := fileChanges(v.File.Path, v.File.Inode, v.File.Size, v.File.MtimeNS)
	if v.File.Embedded != 0 && (err != nil || len(changed) > 0) {
		why := "is missing"
		if err == nil {
			why = "changed since the checkpoint: " + strings.Join(changed, ", ")
		}
		return checkEmbedded(pid, v, why)
	}
	if err != nil {
		return fmt.Errorf("process %d: mapped file %s: %w (put the file back where it was, or dump again, with --embed-files to carry it in the image): %w", pid, v.File.Path, err, ErrIncompatible)
	}
	if len(changed) > 0 {
		return fmt.Errorf("process %d: mapped file %s (at %#x-%#x) changed since the checkpoint: %s; the process would run other code or data: "+
			"put the original file back, or dump again (with --embed-files the image carries the file): %w", pid, v.File.Path, v.Start, v.End, strings.Join(changed, ", "), ErrIncompatible)
	}
	return nil
}

// Signals whose default action is to do nothing (signal(7)).
var ignoredByDefault = map[int]bool{17: true, 23: true, 28: true} // SIGCHLD, SIGURG, SIGWINCH

// checkPdeathSig: the root's parent after restore is chpox. A detached
// restore ends chpox at once, which to the kernel is the death of the
// root's parent: a parent-death signal (PR_SET_PDEATHSIG) of the root's
// threads would come that instant and, unless it is one the process
// ignores, change its course (often SIGKILL: end it). A foreground restore
// stays its parent.
func checkPdeathSig(root *format.Process, opt Options) error {
	if !opt.Detach || root.Zombie {
		return nil
	}
	for _, th := range root.Threads {
		if th.Attrs == nil || th.Attrs.PdeathSig == 0 {
			continue
		}
		sig := th.Attrs.PdeathSig
		handler := uint64(0) // SIG_DFL
		for _, sa := range root.Sigactions {
			if sa.Signal == sig {
				handler = sa.Handler
			}
		}
		if handler == 1 || (handler == 0 && ignoredByDefault[sig]) { // SIG_IGN, or ignored by default
			continue
		}
		return fmt.Errorf("thread %d of process %d has parent-death signal %d (prctl PR_SET_PDEATHSIG): with --detach its parent after restore, chpox, exits at once and the signal would come then; restore in the foreground, which stays its parent: %w",
			th.TID, root.PID, sig, ErrIncompatible)
	}
	return nil
}
