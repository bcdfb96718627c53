package format

import (
	"fmt"
	"math"
)

// File lock kinds (version 3), as /proc/PID/fdinfo/N names them
// (fs/locks.c, lock_get_status).
const (
	// LockFlock is a flock(2) lock: it belongs to the open file
	// description, whichever fd or process of it took it.
	LockFlock = "flock"
	// LockPOSIX is an fcntl(F_SETLK) record lock: it belongs to the
	// process (its file table) and goes away when it closes any fd of the
	// file.
	LockPOSIX = "posix"
	// LockOFD is an open file description lock (fcntl(F_OFD_SETLK)): a
	// record lock owned by the description, like flock.
	LockOFD = "ofd"
	// LockLease is a lease (fcntl(F_SETLEASE)) on the description; the
	// process is told (LeaseSignal, SIGIO by default) when another opens
	// the file in a conflicting way.
	LockLease = "lease"
)

// Lock is one lock held through an fd (version 3). A lock owned by an
// open file description (flock, OFD, lease) is recorded once, on one fd
// of one process holding the description: the process that took it where
// it is in the checkpoint (PID), else the first. A POSIX lock is recorded
// on the fd it was taken through, in the process that owns it.
type Lock struct {
	Kind string `json:"kind"`
	// Write is an exclusive lock (F_WRLCK, LOCK_EX, a write lease);
	// otherwise it is shared (F_RDLCK, LOCK_SH, a read lease).
	Write bool `json:"write,omitempty"`
	// Start and End are the first and last byte of a record lock; End
	// is -1 for "to the end of the file, however long". flock and
	// leases cover the whole file (0, -1).
	Start int64 `json:"start"`
	End   int64 `json:"end"`
	// PID is the process the kernel names as the lock's holder (flock,
	// POSIX, lease; OFD locks have none and record 0).
	PID int `json:"pid,omitempty"`
	// LeaseSignal is F_GETSIG of the description for a lease: the signal
	// that tells of a lease break (0: SIGIO).
	LeaseSignal int `json:"lease_signal,omitempty"`
}

// validLock tells whether a lock record is one restore can take.
func validLock(l Lock) bool {
	switch l.Kind {
	case LockFlock:
		return l.Start == 0 && l.End == -1 && l.LeaseSignal == 0
	case LockLease:
		return l.Start == 0 && l.End == -1 && l.LeaseSignal >= 0 && l.LeaseSignal <= 64
	case LockPOSIX, LockOFD:
		return l.Start >= 0 && (l.End == -1 || l.End >= l.Start && l.End < math.MaxInt64) && l.LeaseSignal == 0
	}
	return false
}

// String names a lock for messages: "POSIX write lock on bytes 20-EOF",
// "exclusive flock", "read lease".
func (l Lock) String() string {
	switch l.Kind {
	case LockFlock:
		if l.Write {
			return "exclusive flock"
		}
		return "shared flock"
	case LockLease:
		if l.Write {
			return "write lease"
		}
		return "read lease"
	}
	kind := map[string]string{LockPOSIX: "POSIX", LockOFD: "OFD"}[l.Kind]
	if kind == "" {
		kind = fmt.Sprintf("%q", l.Kind)
	}
	mode := "read"
	if l.Write {
		mode = "write"
	}
	end := "EOF"
	if l.End >= 0 {
		end = fmt.Sprint(l.End)
	}
	return fmt.Sprintf("%s %s lock on bytes %d-%s", kind, mode, l.Start, end)
}
