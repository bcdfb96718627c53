package restore

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// check refuses images that cannot be restored here, before anything starts.
func check(img *format.Image, opt Options) error {
	h := &img.Header
	if h.Arch != runtime.GOARCH {
		return fmt.Errorf("image is for %s, this machine is %s: %w", h.Arch, runtime.GOARCH, ErrIncompatible)
	}
	if h.PageSize != os.Getpagesize() {
		return fmt.Errorf("image has %d-byte pages, this machine %d: %w", h.PageSize, os.Getpagesize(), ErrIncompatible)
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
		state, comm, err := pidState(pid)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if state != "Z" || time.Now().After(deadline) {
			return fmt.Errorf("pid %d is %w by %q (state %s); the original process may still run", pid, ErrPIDInUse, comm, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pidState(pid int) (state, comm string, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", "", err
	}
	s := string(b)
	i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if i < 0 || j < i || j+3 > len(s) {
		return "?", "?", nil
	}
	return s[j+2 : j+3], s[i+1 : j], nil
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
