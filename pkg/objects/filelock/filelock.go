// Package filelock checkpoints the file locks a process holds: flock(2)
// locks, POSIX record locks (fcntl F_SETLK), open file description locks
// (F_OFD_SETLK) and leases (F_SETLEASE).
//
// Dump reads them from the "lock:" lines of /proc/PID/fdinfo/N (fs/proc/fd.c,
// show_fd_locks): an fd shows the POSIX locks its process took through it
// and the flock, OFD and lease locks of its open file description.
// Restore takes each lock again by system calls injected into the owning
// process, on its own fd, before any process of the tree runs: a POSIX lock
// then belongs to the process and a flock/OFD lock to the description, as
// the kernel defines them, and the kernel names the same holder.
//
// A lease being broken and an NFS delegation are refused by name.
package filelock

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
	"github.com/chpox/chpox/pkg/procinfo"
)

// Held is one lock an fd shows.
type Held struct {
	format.Lock
	// ByDescription: flock, OFD and lease locks belong to the open file
	// description and show on every fd of it, in every process.
	ByDescription bool
}

// Read lists the locks /proc/PID/fdinfo/FD shows.
func Read(pid, fd int, path string) ([]Held, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%d", pid, fd))
	if err != nil {
		return nil, fmt.Errorf("read fdinfo: %w", err)
	}
	return Parse(string(b), path)
}

// Parse reads the "lock:" lines of an fdinfo text (fs/locks.c,
// lock_get_status), e.g.
//
//	lock:	1: FLOCK  ADVISORY  WRITE 31209 fe:00:9980652 0 EOF
//	lock:	2: POSIX  ADVISORY  READ 31209 fe:00:9980653 0 9
//	lock:	3: OFDLCK ADVISORY  WRITE -1 fe:00:9980654 5 9
//	lock:	4: LEASE  ACTIVE    READ 31209 fe:00:9980655 0 EOF
//
// path names the file in refusals.
func Parse(fdinfo, path string) ([]Held, error) {
	var out []Held
	for _, line := range strings.Split(fdinfo, "\n") {
		rest, ok := strings.CutPrefix(line, "lock:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 8 {
			return nil, fmt.Errorf("fdinfo lock line %q: want 8 fields", line)
		}
		f = f[1:] // the "N:" counter
		var h Held
		switch f[0] {
		case "FLOCK":
			h.Kind, h.ByDescription = format.LockFlock, true
		case "POSIX":
			h.Kind = format.LockPOSIX
		case "OFDLCK":
			h.Kind, h.ByDescription = format.LockOFD, true
		case "LEASE":
			h.Kind, h.ByDescription = format.LockLease, true
			if f[1] != "ACTIVE" {
				// BREAKING: another process opened the file and waits for
				// the holder to give the lease up; the kernel's break timer
				// cannot be saved.
				return nil, fmt.Errorf("lease on %s is being broken (%s: another process opened the file and waits for the holder to release it); dump again once it is released: %w",
					path, f[1], procinfo.ErrUnsupported)
			}
		case "DELEG":
			return nil, fmt.Errorf("NFS delegation on %s (a lease the kernel's NFS server holds): %w", path, procinfo.ErrUnsupported)
		default:
			return nil, fmt.Errorf("%s lock on %s (fdinfo %q): %w", f[0], path, strings.TrimSpace(rest), procinfo.ErrUnsupported)
		}
		if h.Kind != format.LockLease && f[1] != "ADVISORY" {
			return nil, fmt.Errorf("%s %s lock on %s: %w", f[1], f[0], path, procinfo.ErrUnsupported)
		}
		switch f[2] {
		case "WRITE":
			h.Write = true
		case "READ":
		default:
			return nil, fmt.Errorf("%s lock of type %s on %s (fdinfo %q): %w", f[0], f[2], path, strings.TrimSpace(rest), procinfo.ErrUnsupported)
		}
		pid, err1 := strconv.Atoi(f[3])
		start, err2 := strconv.ParseInt(f[5], 10, 64)
		end, err3 := int64(-1), error(nil)
		if f[6] != "EOF" {
			end, err3 = strconv.ParseInt(f[6], 10, 64)
		}
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("fdinfo lock line %q: bad number", line)
		}
		if pid > 0 {
			h.PID = pid
		}
		h.Start, h.End = start, end
		out = append(out, h)
	}
	return out, nil
}

// LeaseSignal is F_GETSIG of pid's fd: the signal a lease break sends
// (0 for SIGIO). It is asked of chpox's copy of the very description.
func LeaseSignal(pid, fd int) (int, error) {
	cp, err := objects.Dup(pid, fd)
	if err != nil {
		return 0, err
	}
	defer cp.Close()
	sig, err := unix.FcntlInt(cp.Fd(), unix.F_GETSIG, 0)
	if err != nil {
		return 0, os.NewSyscallError("fcntl(F_GETSIG)", err)
	}
	return sig, nil
}

// Call is one system call that takes a lock again, injected into the
// process that holds the fd. If Mem is set, Args[2] is replaced by the
// address where the caller placed it.
type Call struct {
	Name string
	NR   uint64
	Args []uint64
	Mem  []byte
}

// Calls are the system calls that take l again through fd. Each fails
// (EAGAIN) rather than wait if a conflicting lock is held now.
func Calls(l format.Lock, fd int) []Call {
	ufd := uint64(fd)
	switch l.Kind {
	case format.LockFlock:
		op := uint64(unix.LOCK_SH | unix.LOCK_NB)
		if l.Write {
			op = unix.LOCK_EX | unix.LOCK_NB
		}
		return []Call{{Name: "flock", NR: unix.SYS_FLOCK, Args: []uint64{ufd, op}}}
	case format.LockPOSIX, format.LockOFD:
		cmd, name := uint64(unix.F_SETLK), "fcntl(F_SETLK)"
		if l.Kind == format.LockOFD {
			cmd, name = unix.F_OFD_SETLK, "fcntl(F_OFD_SETLK)"
		}
		return []Call{{Name: name, NR: unix.SYS_FCNTL, Args: []uint64{ufd, cmd, 0}, Mem: flockStruct(l)}}
	case format.LockLease:
		typ := uint64(unix.F_RDLCK)
		if l.Write {
			typ = unix.F_WRLCK
		}
		calls := []Call{{Name: "fcntl(F_SETLEASE)", NR: unix.SYS_FCNTL, Args: []uint64{ufd, unix.F_SETLEASE, typ}}}
		if l.LeaseSignal != 0 {
			calls = append(calls, Call{Name: "fcntl(F_SETSIG)", NR: unix.SYS_FCNTL, Args: []uint64{ufd, unix.F_SETSIG, uint64(l.LeaseSignal)}})
		}
		return calls
	}
	return nil
}

// flockStruct is a struct flock (x86_64: l_type, l_whence as shorts, then
// l_start, l_len as off_t, l_pid; 32 bytes). l_len 0 means "to the end of
// the file"; l_pid must be 0 for an OFD lock (fs/locks.c).
func flockStruct(l format.Lock) []byte {
	b := make([]byte, 32)
	le := binary.LittleEndian
	typ := uint16(unix.F_RDLCK)
	if l.Write {
		typ = unix.F_WRLCK
	}
	le.PutUint16(b[0:], typ)
	le.PutUint16(b[2:], unix.SEEK_SET)
	le.PutUint64(b[8:], uint64(l.Start))
	if l.End >= 0 {
		le.PutUint64(b[16:], uint64(l.End-l.Start+1))
	}
	return b
}
