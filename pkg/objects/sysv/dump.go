package sysv

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
)

const semGetpid = 11 // GETPID, include/uapi/linux/sem.h

// Ref names an object by kind ("shm", "sem", "msg") and kernel id, for
// objects the rule does not find (`chpox dump --ipc shm:ID`).
type Ref struct {
	Kind string
	KID  int
}

// ParseRef reads KIND:ID.
func ParseRef(s string) (Ref, error) {
	kind, id, ok := strings.Cut(s, ":")
	kid, err := strconv.Atoi(id)
	if !ok || err != nil || kid < 0 || (kind != "shm" && kind != "sem" && kind != "msg") {
		return Ref{}, fmt.Errorf("%q is not KIND:ID with KIND shm, sem or msg and ID the kernel id (ipcs shows it)", s)
	}
	return Ref{kind, kid}, nil
}

// ErrNoObject reports an object named with --ipc that does not exist.
var ErrNoObject = errors.New("no such object")

func named(refs []Ref, kind string, kid int) bool {
	for _, r := range refs {
		if r.Kind == kind && r.KID == kid {
			return true
		}
	}
	return false
}

// missing refuses a named object the namespace does not have.
func missing(t *Table, refs []Ref) error {
	for _, r := range refs {
		found := false
		switch r.Kind {
		case "shm":
			for _, e := range t.Shm {
				found = found || e.KID == r.KID
			}
		case "sem":
			for _, e := range t.Sem {
				found = found || e.KID == r.KID
			}
		case "msg":
			for _, e := range t.Msg {
				found = found || e.KID == r.KID
			}
		}
		if !found {
			return fmt.Errorf("--ipc %s:%d: there is no such System V object (ipcs lists them): %w", r.Kind, r.KID, ErrNoObject)
		}
	}
	return nil
}

// Selected are the objects of the namespace that belong to a checkpoint.
type Selected struct {
	Shm []ShmEntry
	Sem []SemEntry
	Msg []MsgEntry
}

// Empty tells whether nothing belongs.
func (s *Selected) Empty() bool { return len(s.Shm)+len(s.Sem)+len(s.Msg) == 0 }

// Select applies the rule of docs/usage.md: a segment belongs when a
// process of the tree has it attached, or (unattached) created it or was
// the last to attach or detach it; a semaphore set when a process of the
// tree was the last to change one of its semaphores (GETPID); a message
// queue when one was the last to send or receive. attached counts the
// tree's memory areas of each segment, by shmid. An object that a live
// process outside the tree also uses by the same record (attached to the
// segment, the last to change a semaphore, to send or to receive) cannot
// be rebuilt shared with it: it is refused, by name. Objects named in
// extra belong too.
func Select(t *Table, tree map[int]bool, attached map[int]int, extra []Ref) (*Selected, error) {
	if err := missing(t, extra); err != nil {
		return nil, err
	}
	out := &Selected{}
	outside := func(pid int) bool { return pid > 0 && !tree[pid] && alive(pid) }
	for _, e := range t.Shm {
		n := attached[e.KID]
		byName := named(extra, "shm", e.KID)
		switch {
		case n == 0 && e.Nattch > 0 && !byName:
			// Attached by others only: theirs, whoever created it. The
			// creator's and last user's PIDs are old and may be reused
			// by the tree (seen: PostgreSQL's segment, its backend's PID
			// now a test's).
			continue
		case n == 0 && (e.Removed || !(tree[e.CPID] || tree[e.LPID] || byName)):
			continue
		case e.Nattch > n:
			return nil, fmt.Errorf("System V shared memory segment %d (key %#x) is attached %d times, only %d of them in the checkpoint: chpox cannot rebuild it shared with processes outside (ipcs -m -i %d; dump those together): %w",
				e.KID, uint32(e.Key), e.Nattch, n, e.KID, procinfo.ErrUnsupported)
		case e.Locked:
			return nil, fmt.Errorf("System V shared memory segment %d (key %#x) is locked in memory (SHM_LOCK), which chpox does not restore: %w", e.KID, uint32(e.Key), procinfo.ErrUnsupported)
		}
		out.Shm = append(out.Shm, e)
	}
	sems, err := selectSems(t, tree, extra)
	if err != nil {
		return nil, err
	}
	out.Sem = sems
	for _, e := range t.Msg {
		if !tree[e.LSPID] && !tree[e.LRPID] && !named(extra, "msg", e.KID) {
			continue
		}
		for _, pid := range []int{e.LSPID, e.LRPID} {
			if outside(pid) {
				return nil, fmt.Errorf("System V message queue %d (key %#x) is used by the checkpoint and by process %d outside it: chpox cannot rebuild it shared: %w",
					e.KID, uint32(e.Key), pid, procinfo.ErrUnsupported)
			}
		}
		out.Msg = append(out.Msg, e)
	}
	return out, nil
}

// selectSems: a set belongs when a process of tree was the last to change
// one of its semaphores.
func selectSems(t *Table, tree map[int]bool, extra []Ref) ([]SemEntry, error) {
	var out []SemEntry
	for _, e := range t.Sem {
		in, outside := named(extra, "sem", e.KID), 0
		for i := 0; i < e.NSems; i++ {
			pid, err := semctl(e.KID, i, semGetpid, nil)
			if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EIDRM) || errors.Is(err, unix.EINVAL) {
				// Not readable by whoever dumps (nor, then, by a tree of
				// that user), or removed meanwhile: not the tree's.
				break
			}
			if err != nil {
				return nil, fmt.Errorf("System V semaphore set %d: %w", e.KID, err)
			}
			in = in || tree[pid]
			if pid > 0 && !tree[pid] && alive(pid) {
				outside = pid
			}
		}
		if !in {
			continue
		}
		if outside != 0 {
			return nil, fmt.Errorf("System V semaphore set %d (key %#x) is used by the checkpoint and by process %d outside it: chpox cannot rebuild it shared: %w",
				e.KID, uint32(e.Key), outside, procinfo.ErrUnsupported)
		}
		out = append(out, e)
	}
	return out, nil
}

func alive(pid int) bool { return unix.Kill(pid, 0) != unix.ESRCH }

// ShmRecord is a segment's record; its content is read by the caller
// (pkg/vmadump.Shm, from an attachment's map_files link or from Attach).
func ShmRecord(e ShmEntry) format.SysVShm {
	p := e.SysVPerm
	return format.SysVShm{SysVPerm: p, Size: e.Size, Removed: e.Removed, CPID: e.CPID, LPID: e.LPID}
}

// Attach maps a segment no process of the tree has attached into chpox,
// read-only, and returns the map_files path its content is read through
// and the detach to call when done.
func Attach(kid int) (string, func(), error) {
	b, err := unix.SysvShmAttach(kid, 0, unix.SHM_RDONLY)
	if err != nil {
		return "", nil, fmt.Errorf("System V shared memory segment %d: shmat: %w", kid, err)
	}
	at := addrOf(b)
	path := fmt.Sprintf("/proc/self/map_files/%x-%x", at, at+uintptr(pageUp(uint64(len(b)))))
	return path, func() { unix.SysvShmDetach(b) }, nil
}

func pageUp(n uint64) uint64 { return (n + 4095) &^ 4095 }

// SemRecord reads the values of a semaphore set.
func SemRecord(e SemEntry) (format.SysVSem, error) {
	vals, err := semGetAll(e.KID, e.NSems)
	if err != nil {
		return format.SysVSem{}, fmt.Errorf("System V semaphore set %d: %w", e.KID, err)
	}
	rec := format.SysVSem{SysVPerm: e.SysVPerm, Values: vals}
	for i := range vals {
		pid, err := semctl(e.KID, i, semGetpid, nil)
		if err != nil {
			return rec, fmt.Errorf("System V semaphore set %d: GETPID: %w", e.KID, err)
		}
		rec.PIDs = append(rec.PIDs, pid)
	}
	return rec, nil
}

// MsgRecord reads the messages of a queue without taking them, oldest
// first; the caller places each text in the data section.
func MsgRecord(e MsgEntry) (format.SysVMsgQueue, [][]byte, error) {
	q := format.SysVMsgQueue{SysVPerm: e.SysVPerm, LSPID: e.LSPID, LRPID: e.LRPID}
	var err error
	if q.QBytes, err = msgQbytes(e.KID); err != nil {
		return q, nil, fmt.Errorf("System V message queue %d: %w", e.KID, err)
	}
	buf := make([]byte, 8+max(q.QBytes, e.CBytes))
	var texts [][]byte
	for n := uint64(0); n < e.QNum; n++ {
		typ, text, err := msgCopyAt(e.KID, n, buf)
		if errors.Is(err, unix.ENOSYS) {
			return q, nil, fmt.Errorf("System V message queue %d: this kernel cannot read a message without taking it (MSG_COPY needs CONFIG_CHECKPOINT_RESTORE): %w", e.KID, procinfo.ErrUnsupported)
		}
		if err != nil {
			return q, nil, fmt.Errorf("System V message queue %d: message %d: %w", e.KID, n, err)
		}
		q.Messages = append(q.Messages, format.SysVMessage{Type: typ})
		texts = append(texts, append([]byte(nil), text...))
	}
	return q, texts, nil
}

// Remove deletes the objects of an image from the namespace: `dump --kill`
// moves them into the image with the processes (docs/usage.md).
func Remove(sv *format.SysVObjects) error {
	if sv == nil {
		return nil
	}
	var errs []error
	for _, m := range sv.Shm {
		if !m.Removed {
			if _, err := unix.SysvShmCtl(m.KID, unix.IPC_RMID, nil); err != nil && err != unix.EINVAL && err != unix.EIDRM {
				errs = append(errs, fmt.Errorf("remove System V segment %d: %w", m.KID, err))
			}
		}
	}
	for _, s := range sv.Sem {
		if err := semRemove(s.KID); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
			errs = append(errs, fmt.Errorf("remove System V semaphore set %d: %w", s.KID, err))
		}
	}
	for _, q := range sv.Msg {
		if err := msgRemove(q.KID); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
			errs = append(errs, fmt.Errorf("remove System V message queue %d: %w", q.KID, err))
		}
	}
	return errors.Join(errs...)
}
