package sysv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// ErrTaken reports an object of the image whose key or id another object
// of the namespace holds at restore.
var ErrTaken = errors.New("taken")

// Check refuses, before anything is created, an image whose objects'
// keys or ids are held by objects of the namespace (a leftover of the
// dumped program, say, when it was dumped without --kill): restore never
// takes over or changes an object it did not create.
func Check(sv *format.SysVObjects) error {
	if sv == nil {
		return nil
	}
	t, err := ReadTable()
	if err != nil {
		return err
	}
	taken := func(kind, rm string, want format.SysVPerm, have []format.SysVPerm) error {
		for _, h := range have {
			if h.KID == want.KID || (want.Key != 0 && h.Key == want.Key) {
				return fmt.Errorf("System V %s %d (key %#x) of the image: the namespace already has %s %d with key %#x (owner uid %d); remove it (ipcrm %s %d) if it is a leftover of the dumped program: %w",
					kind, want.KID, uint32(want.Key), kind, h.KID, uint32(h.Key), h.UID, rm, h.KID, ErrTaken)
			}
		}
		return nil
	}
	var shm, sem, msg []format.SysVPerm
	for _, e := range t.Shm {
		shm = append(shm, e.SysVPerm)
	}
	for _, e := range t.Sem {
		sem = append(sem, e.SysVPerm)
	}
	for _, e := range t.Msg {
		msg = append(msg, e.SysVPerm)
	}
	for _, m := range sv.Shm {
		if err := taken("shared memory segment", "-m", m.SysVPerm, shm); err != nil {
			return err
		}
	}
	for _, s := range sv.Sem {
		if err := taken("semaphore set", "-s", s.SysVPerm, sem); err != nil {
			return err
		}
	}
	for _, q := range sv.Msg {
		if err := taken("message queue", "-q", q.SysVPerm, msg); err != nil {
			return err
		}
	}
	return nil
}

// Set is the objects of one image, created in the namespace by restore.
type Set struct {
	img     *format.SysVObjects
	shm     map[int][]byte // by image ID: chpox's attachment
	shmKID  map[int]int
	created []func() error // removals, for a failed restore
	texts   map[[2]int]*[]byte
}

// Create makes every object of sv with its key, id, owner, creator and
// mode: segments (attached in chpox, to be filled), semaphore sets with
// their values, empty message queues (Fill sends the messages).
func Create(sv *format.SysVObjects) (s *Set, err error) {
	s = &Set{img: sv, shm: map[int][]byte{}, shmKID: map[int]int{}, texts: map[[2]int]*[]byte{}}
	if sv == nil {
		return s, nil
	}
	defer func() {
		if err != nil {
			s.Remove()
		}
	}()
	for _, m := range sv.Shm {
		kid, err := create("shm", m.SysVPerm, func() (int, error) {
			return unix.SysvShmGet(int(m.Key), int(m.Size), int(m.Mode)|ipcCreat|ipcExcl)
		})
		if err != nil {
			return s, fmt.Errorf("System V shared memory segment %d: %w", m.KID, err)
		}
		s.created = append(s.created, func() error { _, err := unix.SysvShmCtl(kid, unix.IPC_RMID, nil); return err })
		if err := setOwnerShm(kid, m.SysVPerm); err != nil {
			return s, fmt.Errorf("System V shared memory segment %d: %w", m.KID, err)
		}
		b, err := unix.SysvShmAttach(kid, 0, 0)
		if err != nil {
			return s, fmt.Errorf("System V shared memory segment %d: shmat: %w", m.KID, err)
		}
		s.shm[m.ID], s.shmKID[m.ID] = b, kid
	}
	for _, e := range sv.Sem {
		kid, err := create("sem", e.SysVPerm, func() (int, error) {
			return semget(e.Key, len(e.Values), int(e.Mode)|ipcCreat|ipcExcl)
		})
		if err != nil {
			return s, fmt.Errorf("System V semaphore set %d: %w", e.KID, err)
		}
		s.created = append(s.created, func() error { return semRemove(kid) })
		if err := semSetAll(kid, e.Values); err != nil {
			return s, fmt.Errorf("System V semaphore set %d: SETALL: %w", e.KID, err)
		}
		if err := setOwnerSem(kid, e.UID, e.GID, e.Mode); err != nil {
			return s, fmt.Errorf("System V semaphore set %d: IPC_SET: %w", e.KID, err)
		}
	}
	for qi, q := range sv.Msg {
		kid, err := create("msg", q.SysVPerm, func() (int, error) { return msgget(q.Key, int(q.Mode)|ipcCreat|ipcExcl) })
		if err != nil {
			return s, fmt.Errorf("System V message queue %d: %w", q.KID, err)
		}
		s.created = append(s.created, func() error { return msgRemove(kid) })
		if err := setOwnerMsg(kid, q.UID, q.GID, q.Mode, q.QBytes); err != nil {
			return s, fmt.Errorf("System V message queue %d: IPC_SET (owner, msg_qbytes %d): %w", q.KID, q.QBytes, err)
		}
		for i := range q.Messages {
			s.texts[[2]int{qi, i}] = new([]byte)
		}
	}
	return s, nil
}

// create makes one object with the image's id: the kernel gives the next
// object of the kind the id written to /proc/sys/kernel/KIND_next_id
// (ipc/util.c, ipc_idr_alloc; writing needs CAP_CHECKPOINT_RESTORE). It
// is made as its creator (effective ids cuid, cgid, on this thread only)
// so that IPC_STAT tells the same creator as before.
func create(kind string, p format.SysVPerm, get func() (int, error)) (int, error) {
	next := "/proc/sys/kernel/" + kind + "_next_id"
	if err := os.WriteFile(next, []byte(strconv.Itoa(p.KID)), 0); err != nil {
		return 0, fmt.Errorf("ask for id %d: %w", p.KID, err)
	}
	kid, err := asCreator(p.CUID, p.CGID, get)
	os.WriteFile(next, []byte("-1"), 0) // unused if the get failed
	if err != nil {
		return 0, fmt.Errorf("key %#x, id %d: %w", uint32(p.Key), p.KID, err)
	}
	if kid != p.KID {
		// Someone else's object took the id between the write and the get.
		rmByKind(kind, kid)
		return 0, fmt.Errorf("got id %d, not %d: another object was created at the same moment; restore again: %w", kid, p.KID, ErrTaken)
	}
	return kid, nil
}

func rmByKind(kind string, kid int) {
	switch kind {
	case "shm":
		unix.SysvShmCtl(kid, unix.IPC_RMID, nil)
	case "sem":
		semRemove(kid)
	case "msg":
		msgRemove(kid)
	}
}

// asCreator runs get with effective ids uid and gid on this OS thread
// alone (raw setresuid/setresgid, not Go's process-wide ones), then goes
// back to root's.
func asCreator(uid, gid uint32, get func() (int, error)) (int, error) {
	if uid == 0 && gid == 0 {
		return get()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	euid, egid := os.Geteuid(), os.Getegid()
	keep := ^uintptr(0) // -1: unchanged
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(gid), keep); e != 0 {
		return 0, os.NewSyscallError("setresgid", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(uid), keep); e != 0 {
		unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(egid), keep)
		return 0, os.NewSyscallError("setresuid", e)
	}
	kid, err := get()
	_, _, e1 := unix.RawSyscall(unix.SYS_SETRESUID, keep, uintptr(euid), keep)
	_, _, e2 := unix.RawSyscall(unix.SYS_SETRESGID, keep, uintptr(egid), keep)
	if e1 != 0 || e2 != 0 {
		// This thread cannot be trusted with root's work any more.
		panic(fmt.Sprintf("chpox: cannot return to effective ids %d/%d: %v %v", euid, egid, e1, e2))
	}
	return kid, err
}

func setOwnerShm(kid int, p format.SysVPerm) error {
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(kid, unix.IPC_STAT, &ds); err != nil {
		return fmt.Errorf("IPC_STAT: %w", err)
	}
	ds.Perm.Uid, ds.Perm.Gid, ds.Perm.Mode = p.UID, p.GID, p.Mode
	if _, err := unix.SysvShmCtl(kid, unix.IPC_SET, &ds); err != nil {
		return fmt.Errorf("IPC_SET: %w", err)
	}
	return nil
}

// Values are the values set kid was given.
func (s *Set) Values(kid int) []uint16 {
	for _, e := range s.img.Sem {
		if e.KID == kid {
			return e.Values
		}
	}
	return nil
}

// ShmKID is the kernel id of the segment of image ID id, for shmat.
func (s *Set) ShmKID(id int) (int, bool) { kid, ok := s.shmKID[id]; return kid, ok }

// ShmAt is where the saved pages of segment id go.
func (s *Set) ShmAt(id int) io.WriterAt { return memAt(s.shm[id]) }

// TextAt is where the text of message i of queue qi (index in the image) goes.
func (s *Set) TextAt(qi, i int) io.WriterAt { return growAt{s.texts[[2]int{qi, i}]} }

type memAt []byte

func (m memAt) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(m)) || int64(len(p)) > int64(len(m))-off {
		return 0, fmt.Errorf("System V segment: %d bytes at %d beyond its %d", len(p), off, len(m))
	}
	return copy(m[off:], p), nil
}

type growAt struct{ b *[]byte }

func (w growAt) WriteAt(p []byte, off int64) (int, error) {
	if need := int(off) + len(p); need > len(*w.b) {
		*w.b = append(*w.b, make([]byte, need-len(*w.b))...)
	}
	return copy((*w.b)[off:], p), nil
}

// Dummy is the empty message restore passes through a queue first so that
// the queue's last sender and receiver are processes of the image again.
func (s *Set) Dummy(kid int) error {
	return msgSend(kid, binary.LittleEndian.AppendUint64(nil, DummyType))
}

// DummyType is its type.
const DummyType = 1

// TakeDummy receives it in chpox (the receiver was not of the image).
func (s *Set) TakeDummy(kid int) error {
	buf := make([]byte, 8)
	_, _, err := msgRecv(kid, buf)
	return err
}

// Text is the saved text of message i of queue qi.
func (s *Set) Text(qi, i int) []byte { return *s.texts[[2]int{qi, i}] }

// Fill queues the saved messages, in order, once the data section is read;
// of the queues lastBy names it leaves the last message for their last
// sender to send.
func (s *Set) Fill(lastBy func(q format.SysVMsgQueue) bool) error {
	if s == nil || s.img == nil {
		return nil
	}
	for qi, q := range s.img.Msg {
		for i, m := range q.Messages {
			if i == len(q.Messages)-1 && lastBy(q) {
				break
			}
			text := *s.texts[[2]int{qi, i}]
			msg := binary.LittleEndian.AppendUint64(make([]byte, 0, 8+len(text)), uint64(m.Type))
			if err := msgSend(q.KID, append(msg, text...)); err != nil {
				return fmt.Errorf("System V message queue %d: message %d: %w", q.KID, i, err)
			}
		}
	}
	return nil
}

// Finish runs once every process has its attachments: segments that were
// marked removed are marked again (they go with their last detach), and
// chpox detaches its own attachments.
func (s *Set) Finish() error {
	if s == nil || s.img == nil {
		return nil
	}
	for _, m := range s.img.Shm {
		if m.Removed {
			if _, err := unix.SysvShmCtl(s.shmKID[m.ID], unix.IPC_RMID, nil); err != nil {
				return fmt.Errorf("System V shared memory segment %d: mark removed: %w", m.KID, err)
			}
		}
	}
	s.detach()
	return nil
}

func (s *Set) detach() {
	for id, b := range s.shm {
		unix.SysvShmDetach(b)
		delete(s.shm, id)
	}
}

// Remove deletes what Create made, for a restore that failed.
func (s *Set) Remove() {
	s.detach()
	for _, rm := range s.created {
		rm()
	}
	s.created = nil
}
