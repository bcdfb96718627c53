package sysv

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
)

// SEM_UNDO adjustments. A process's semop with SEM_UNDO records in its
// undo list what its exit must give back (semadj); the kernel shows the
// list nowhere. chpox reads it by asking the process: an injected
// semop whose last operation cannot proceed (IPC_NOWAIT) changes nothing
// (ipc/sem.c, perform_atomic_semop_slow undoes what it did), but before
// that it fails with ERANGE if an operation would carry semadj out of
// [-32768, 32767]. Operations on the same semaphore apply one after the
// other, so a chain of them can push semadj by any amount while the value
// stays in range: the answer "is semadj >= k?" for any k, and 16 such
// questions find it. Restore sets it with a semop whose SEM_UNDO
// operations add up to it and whose others put the value back.

const (
	semUndo = 0x1000 // SEM_UNDO
	semVMX  = 32767  // SEMVMX, SEMAEM
)

// Caller runs a system call in the process (an injected call) and writes
// to its memory at addr, where len(sops) bytes are free.
type Caller struct {
	Call  func(nr uint64, args ...uint64) (uint64, error)
	Write func(addr uint64, b []byte) error
	Addr  uint64
}

type sembuf struct {
	num      uint16
	op, flag int16
}

func (c Caller) semop(kid int, ops []sembuf) error {
	b := make([]byte, 0, 6*len(ops))
	for _, o := range ops {
		b = binary.LittleEndian.AppendUint16(b, o.num)
		b = binary.LittleEndian.AppendUint16(b, uint16(o.op))
		// IPC_NOWAIT on every operation: were a value not what the
		// image or the probe expects, the call fails instead of holding
		// the process (and chpox) in semop.
		b = binary.LittleEndian.AppendUint16(b, uint16(o.flag)|ipcNowait)
	}
	if err := c.Write(c.Addr, b); err != nil {
		return err
	}
	_, err := c.Call(unix.SYS_SEMOP, uint64(kid), c.Addr, uint64(len(ops)))
	return err
}

// MaxOps is the most sembufs a call here passes (6 bytes each).
const MaxOps = 8

// Sets are the semaphore sets of the tree with their values, read once
// while the tree is frozen: the probes start from them.
type Sets []format.SysVSem

// SelectSets returns the semaphore sets that belong to tree (the rule of
// Select, with the sets extra names).
func SelectSets(tree map[int]bool, extra []Ref) (Sets, error) {
	t, err := ReadTable()
	if err != nil {
		return nil, err
	}
	sel, err := selectSems(t, tree, extra)
	if err != nil {
		return nil, err
	}
	var out Sets
	for _, e := range sel {
		rec, err := SemRecord(e)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// Adjustments asks the process behind c for its semadj of every semaphore
// of sets, and returns those that are not 0.
func (sets Sets) Adjustments(c Caller) ([]format.SemUndo, error) {
	var out []format.SemUndo
	for _, s := range sets {
		for num, v := range s.Values {
			adj, err := c.probe(s.KID, uint16(num), int(v))
			if errors.Is(err, unix.EACCES) {
				break // a process that may not alter the set has no adjustments in it
			}
			if err != nil {
				return nil, fmt.Errorf("System V semaphore set %d: semaphore %d: read SEM_UNDO adjustment: %w", s.KID, num, err)
			}
			if adj != 0 {
				out = append(out, format.SemUndo{KID: s.KID, Num: num, Adj: adj})
			}
		}
	}
	return out, nil
}

// probe finds semadj by bisection over "semadj >= k".
func (c Caller) probe(kid int, num uint16, v int) (int, error) {
	lo, hi := -semVMX-1, semVMX // semadj is in [lo, hi]
	for lo < hi {
		k := lo + (hi-lo+1)/2
		ge, err := c.atLeast(kid, num, v, k)
		if err != nil {
			return 0, err
		}
		if ge {
			lo = k
		} else {
			hi = k - 1
		}
	}
	return lo, nil
}

// atLeast tells whether semadj >= k (-32767 <= k <= 32767): SEM_UNDO
// operations that take 32768-k in all from the value make semadj exceed
// 32767 exactly then; the value is brought to 32767 first and refilled in
// between, and the last operation asks for more than is there.
func (c Caller) atLeast(kid int, num uint16, v, k int) (bool, error) {
	var ops []sembuf
	val := v
	to := func(want int) {
		if want != val {
			ops = append(ops, sembuf{num, int16(want - val), 0})
			val = want
		}
	}
	to(semVMX)
	for left := semVMX + 1 - k; left > 0; {
		step := min(left, semVMX)
		ops = append(ops, sembuf{num, int16(-step), semUndo})
		val -= step
		if left -= step; left > 0 {
			to(semVMX)
		}
	}
	ops = append(ops, sembuf{num, int16(-(val + 1)), ipcNowait})
	err := c.semop(kid, ops)
	switch {
	case errors.Is(err, unix.ERANGE):
		return true, nil
	case errors.Is(err, unix.EAGAIN):
		return false, nil
	case err == nil:
		return false, fmt.Errorf("probe semop went through") // cannot be: its last operation cannot
	}
	return false, err
}

// Restore gives the process behind c its adjustments: for each, SEM_UNDO
// operations that add up to -adj (a fresh undo entry is 0), the value
// moved out of their way and back.
func Restore(c Caller, undo []format.SemUndo, values func(kid int) []uint16) error {
	for _, u := range undo {
		vals := values(u.KID)
		if u.Num >= len(vals) {
			return fmt.Errorf("SEM_UNDO adjustment of semaphore %d of set %d, which the image lacks", u.Num, u.KID)
		}
		v := int(vals[u.Num])
		num := uint16(u.Num)
		var ops []sembuf
		val := v
		to := func(want int) {
			if want != val {
				ops = append(ops, sembuf{num, int16(want - val), 0})
				val = want
			}
		}
		if u.Adj > 0 { // take adj with SEM_UNDO
			to(semVMX)
			ops = append(ops, sembuf{num, int16(-u.Adj), semUndo})
			val -= u.Adj
		} else { // give -adj with SEM_UNDO, at most 32767 at a time
			for left := -u.Adj; left > 0; {
				to(0)
				step := min(left, semVMX)
				ops = append(ops, sembuf{num, int16(step), semUndo})
				val += step
				left -= step
			}
		}
		to(v)
		if err := c.semop(u.KID, ops); err != nil {
			return fmt.Errorf("System V semaphore set %d: semaphore %d: SEM_UNDO adjustment %d: %w", u.KID, u.Num, u.Adj, err)
		}
	}
	return nil
}

// SharedUndo refuses two processes of the tree that share one undo list
// (clone with CLONE_SYSVSEM but not CLONE_THREAD): restore would give each
// its own, and the adjustments would be undone twice. Only processes that
// have adjustments are compared (two without lists compare equal too).
func SharedUndo(pids []int) error {
	for i, a := range pids {
		for _, b := range pids[i+1:] {
			if r, err := kcmpSysvsem(a, b); err == nil && r == 0 {
				return fmt.Errorf("processes %d and %d share one System V semaphore undo list (clone with CLONE_SYSVSEM), which chpox cannot rebuild: %w", a, b, procinfo.ErrUnsupported)
			}
		}
	}
	return nil
}

// The kernel records the last process to use an object (sempid, lspid,
// lrpid, lpid), and dump goes by those records to find a tree's objects.
// Restore has the processes of the image use the objects again as the
// records say, so that a checkpoint of the restored tree finds them as the
// first one did; these calls change no value and no message.

// TouchSem makes the process the last to change semaphore num (value v):
// +1 then -1, or -1 then +1 at SEMVMX, in one semop.
func (c Caller) TouchSem(kid, num int, v uint16) error {
	ops := []sembuf{{uint16(num), 1, 0}, {uint16(num), -1, 0}}
	if v == semVMX {
		ops = []sembuf{{uint16(num), -1, 0}, {uint16(num), 1, 0}}
	}
	if err := c.semop(kid, ops); err != nil {
		return fmt.Errorf("System V semaphore set %d: semaphore %d: %w", kid, num, err)
	}
	return nil
}

// TouchShm makes the process the last to attach and detach segment kid.
func (c Caller) TouchShm(kid int) error {
	at, err := c.Call(unix.SYS_SHMAT, uint64(kid), 0, unix.SHM_RDONLY)
	if err == nil {
		_, err = c.Call(unix.SYS_SHMDT, at)
	}
	if err != nil {
		return fmt.Errorf("System V shared memory segment %d: attach and detach: %w", kid, err)
	}
	return nil
}

// Send queues a message from the process; text must fit in its scratch
// space after the 8-byte type (the caller checks).
func (c Caller) Send(kid int, typ int64, text []byte) error {
	msg := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(text)), uint64(typ))
	if err := c.Write(c.Addr, append(msg, text...)); err != nil {
		return err
	}
	_, err := c.Call(unix.SYS_MSGSND, uint64(kid), c.Addr, uint64(len(text)), ipcNowait)
	return err
}

// Recv takes the first message, an empty one, in the process.
func (c Caller) Recv(kid int) error {
	_, err := c.Call(unix.SYS_MSGRCV, uint64(kid), c.Addr, 0, 0, ipcNowait)
	return err
}
