package restore

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/ghost"
)

// sigaltstack flags (include/uapi/linux/signal.h).
const (
	ssOnStack = 1
	ssDisable = 2
)

func u64s(vals ...uint64) []byte {
	b := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

// setMM restores the mm fields, auxv and the exe link in one
// prctl(PR_SET_MM, PR_SET_MM_MAP): the single-field calls need
// CAP_SYS_RESOURCE, which restorers often lack.
func (x *target) setMM(p *format.Process, o *objects) error {
	x.resetScratch()
	exeFD := ^uint64(0)
	if t := o.exes[p.PID]; t != nil {
		// A deleted executable's stand-in, read-only: the kernel denies
		// writes to an exe file, and refuses one open for writing
		// (kernel/fork.c, replace_mm_exe_file). Its content is written.
		ro, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", t.Fd()))
		if err != nil {
			return fmt.Errorf("reopen the stand-in of %s: %w", p.Exe, err)
		}
		t.Close()
		o.exes[p.PID] = ro
		if exeFD, err = x.chpoxCopy(ro); err != nil {
			return err
		}
		defer x.call("close", unix.SYS_CLOSE, exeFD)
	} else if cp, err := o.embeddedExe(p.Exe); err != nil {
		return err
	} else if cp != nil {
		// The image's copy of an executable that differs here (embed.go).
		if exeFD, err = x.chpoxCopy(cp); err != nil {
			return err
		}
		defer x.call("close", unix.SYS_CLOSE, exeFD)
	} else if p.Exe != "" && !strings.HasSuffix(p.Exe, " (deleted)") {
		path, err := x.cstring(p.Exe)
		if err != nil {
			return err
		}
		if exeFD, err = x.call("openat "+p.Exe, unix.SYS_OPENAT, atFDCWD, path, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return err
		}
		defer x.call("close", unix.SYS_CLOSE, exeFD)
	}
	auxv, err := x.put(p.Auxv)
	if err != nil {
		return err
	}
	m := p.MM
	b := u64s(m.StartCode, m.EndCode, m.StartData, m.EndData, m.StartBrk, m.Brk, m.StartStack,
		m.ArgStart, m.ArgEnd, m.EnvStart, m.EnvEnd, auxv)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p.Auxv)))
	b = binary.LittleEndian.AppendUint32(b, uint32(exeFD))
	at, err := x.put(b)
	if err != nil {
		return err
	}
	_, err = x.call("prctl(PR_SET_MM_MAP)", unix.SYS_PRCTL, unix.PR_SET_MM, unix.PR_SET_MM_MAP, at, uint64(len(b)), 0)
	return err
}

// credsDiffer tells whether the image ran with other ids than chpox has now.
func credsDiffer(c format.Creds) bool {
	r, e, s := unix.Getresuid()
	rg, eg, sg := unix.Getresgid()
	return c.UID != [4]uint32{uint32(r), uint32(e), uint32(s), uint32(e)} ||
		c.GID != [4]uint32{uint32(rg), uint32(eg), uint32(sg), uint32(eg)} ||
		!sameGroups(c.Groups)
}

// sameGroups compares the image's supplementary groups with chpox's: the
// process must not keep chpox's groups when its ids happen to match.
func sameGroups(want []uint32) bool {
	have, err := unix.Getgroups()
	if err != nil || len(have) != len(want) {
		return false
	}
	set := map[uint32]bool{}
	for _, g := range have {
		set[uint32(g)] = true
	}
	for _, g := range want {
		if !set[g] {
			return false
		}
	}
	return true
}

// setFSCreds makes file opens happen with the image's filesystem ids and
// groups, so no fd is opened with more rights than the process had.
func (x *target) setFSCreds(c format.Creds) error {
	if !credsDiffer(c) {
		return nil
	}
	x.resetScratch()
	groups := make([]byte, 0, 4*len(c.Groups))
	for _, g := range c.Groups {
		groups = binary.LittleEndian.AppendUint32(groups, g)
	}
	at := uint64(0)
	if len(groups) > 0 {
		var err error
		if at, err = x.put(groups); err != nil {
			return err
		}
	}
	if setgroupsAllowed() {
		if _, err := x.call("setgroups", unix.SYS_SETGROUPS, uint64(len(c.Groups)), at); err != nil {
			return err
		}
	}
	if _, err := x.call("setfsgid", unix.SYS_SETFSGID, uint64(c.GID[3])); err != nil {
		return err
	}
	_, err := x.call("setfsuid", unix.SYS_SETFSUID, uint64(c.UID[3]))
	return err
}

// setgroupsAllowed is false in a user namespace made by an ordinary user
// (/proc/self/setgroups is "deny", user_namespaces(7)): nobody there may
// change supplementary groups, so the process keeps those it was created
// with, the restoring user's, which cmd/chpox checked to be the image's
// before it made the namespace.
func setgroupsAllowed() bool {
	b, err := os.ReadFile("/proc/self/setgroups")
	return err != nil || strings.TrimSpace(string(b)) != "deny"
}

// setThreadCreds switches one thread to the image's ids for good.
func (x *target) setThreadCreds(c format.Creds) error {
	if _, err := x.call("setresgid", unix.SYS_SETRESGID, uint64(c.GID[0]), uint64(c.GID[1]), uint64(c.GID[2])); err != nil {
		return err
	}
	if _, err := x.call("setresuid", unix.SYS_SETRESUID, uint64(c.UID[0]), uint64(c.UID[1]), uint64(c.UID[2])); err != nil {
		return err
	}
	x.call("setfsgid", unix.SYS_SETFSGID, uint64(c.GID[3]))
	x.call("setfsuid", unix.SYS_SETFSUID, uint64(c.UID[3]))
	return nil
}

// restoreMisc restores the per-process state that injected calls set.
func (x *target) restoreMisc(p *format.Process) error {
	if err := x.restoreDirs(p); err != nil {
		return err
	}
	x.resetScratch()
	if _, err := x.call("umask", unix.SYS_UMASK, uint64(p.Umask)); err != nil {
		return err
	}
	if _, err := x.call("personality", unix.SYS_PERSONALITY, uint64(p.Personality)); err != nil {
		return err
	}
	for _, r := range p.Rlimits {
		l := unix.Rlimit{Cur: r.Cur, Max: r.Max}
		if err := unix.Prlimit(x.pid(), r.Resource, &l, nil); err != nil {
			return fmt.Errorf("set resource limit %d: %w", r.Resource, err)
		}
	}
	if err := x.restoreSignals(p); err != nil {
		return err
	}
	name, err := x.cstring(p.Comm)
	if err != nil {
		return err
	}
	_, err = x.call("prctl(PR_SET_NAME)", unix.SYS_PRCTL, unix.PR_SET_NAME, name)
	return err
}

// restoreDirs gives the process its working directory (a removed one: an
// empty stand-in, removed again) and then its root: files and memory were
// opened by the paths chpox sees, which for a process in a chroot are
// host paths; chroot(2) comes after them, and leaves the working
// directory where it is.
func (x *target) restoreDirs(p *format.Process) error {
	x.resetScratch()
	if p.CwdDeleted {
		owner, mode := p.CwdOwner, p.CwdMode
		if owner == nil { // an image without them
			owner, mode = &format.Ownership{UID: p.Creds.UID[3], GID: p.Creds.GID[3]}, 0o700
		}
		// Open to all until the process is in it: fchdir needs search
		// permission, which the original's mode may not give it.
		t, err := ghost.Make(p.Cwd, unix.S_IFDIR|0o777, 0, owner)
		if err != nil {
			return fmt.Errorf("working directory %s (deleted): %w", p.Cwd, err)
		}
		defer t.Close()
		cp, err := x.chpoxCopy(t)
		if err != nil {
			return err
		}
		defer x.call("close", unix.SYS_CLOSE, cp)
		if _, err := x.call("fchdir "+p.Cwd+" (deleted)", unix.SYS_FCHDIR, cp); err != nil {
			return err
		}
		if err := ghost.Chmod(t, mode); err != nil {
			return fmt.Errorf("working directory %s (deleted): %w", p.Cwd, err)
		}
	} else {
		cwd, err := x.cstring(p.Cwd)
		if err != nil {
			return err
		}
		if _, err := x.call("chdir "+p.Cwd, unix.SYS_CHDIR, cwd); err != nil {
			return err
		}
	}
	if p.Root == "" || p.Root == "/" {
		return nil
	}
	root, err := x.cstring(p.Root)
	if err != nil {
		return err
	}
	_, err = x.call("chroot "+p.Root, unix.SYS_CHROOT, root)
	return err
}
