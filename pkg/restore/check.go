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
			if err := checkFile(v); err != nil {
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
	var st unix.Stat_t
	if path == "-" {
		// A stream is held to the owner of the pipe or file it comes from.
		path = "/dev/stdin"
	}
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("stat image: %w", err)
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

// checkFD makes sure a file reopened by path is still of its kind: a FIFO
// or device in the place of a regular file would block or act on open.
func checkFD(pid int, f format.File) error {
	want := map[string]uint32{format.FileRegular: unix.S_IFREG, format.FileDir: unix.S_IFDIR, format.FileChar: unix.S_IFCHR}[f.Kind]
	if want == 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(f.Path, &st); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("process %d: fd %d: reopen %s: %w (the file is gone: recreate it, or restore where it exists)", pid, f.FD, f.Path, err)
		}
		return fmt.Errorf("process %d: fd %d: reopen %s: %w", pid, f.FD, f.Path, err)
	}
	if st.Mode&unix.S_IFMT != want {
		return fmt.Errorf("process %d: fd %d: %s is no longer a %s (mode %#o): %w", pid, f.FD, f.Path, f.Kind, st.Mode, ErrIncompatible)
	}
	return nil
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
func checkFile(v format.VMA) error {
	if v.Kind != format.VMAFile {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Stat(v.File.Path, &st); err != nil {
		return fmt.Errorf("mapped file %s: %w", v.File.Path, err)
	}
	if st.Size != v.File.Size || st.Mtim.Nano() != v.File.MtimeNS || st.Ino != v.File.Inode {
		return fmt.Errorf("mapped file %s changed since the checkpoint (size %d→%d, inode %d→%d): %w",
			v.File.Path, v.File.Size, st.Size, v.File.Inode, st.Ino, ErrIncompatible)
	}
	return nil
}
