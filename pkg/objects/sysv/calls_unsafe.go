package sysv

import (
	"encoding/binary"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The ipc calls golang.org/x/sys/unix lacks (it has the shm ones only).
// Layouts are x86_64's: struct semid64_ds and msqid64_ds of
// arch/x86/include/uapi/asm/{sembuf,msgbuf}.h, whose ipc64_perm starts
// with key, uid, gid, cuid, cgid, mode (u32 each).

const (
	ipcCreat  = 0o1000         // IPC_CREAT
	ipcExcl   = 0o2000         // IPC_EXCL
	ipcNowait = 0o4000         // IPC_NOWAIT
	ipcRmid   = 0              // IPC_RMID
	ipcSet    = 1              // IPC_SET
	ipcStat   = 2              // IPC_STAT
	semGetall = 13             // GETALL, include/uapi/linux/sem.h
	semSetall = 17             // SETALL
	msgCopy   = 0o40000        // MSG_COPY, include/uapi/linux/msg.h
	permSize  = 48             // struct ipc64_perm
	semDSSize = 104            // struct semid64_ds
	msqDSSize = 128            // struct msqid64_ds
	msqQbytes = permSize + 5*8 // msg_qbytes follows perm, stime, rtime, ctime, cbytes, qnum
)

func semget(key int32, nsems int, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_SEMGET, uintptr(key), uintptr(nsems), uintptr(flags))
	if e != 0 {
		return 0, os.NewSyscallError("semget", e)
	}
	return int(r), nil
}

func semctl(id, num, cmd int, arg unsafe.Pointer) (int, error) {
	r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), uintptr(arg), 0, 0)
	if e != 0 {
		return 0, os.NewSyscallError("semctl", e)
	}
	return int(r), nil
}

// semGetAll returns the values of the n semaphores of set id.
func semGetAll(id, n int) ([]uint16, error) {
	vals := make([]uint16, n)
	_, err := semctl(id, 0, semGetall, unsafe.Pointer(&vals[0]))
	return vals, err
}

func semSetAll(id int, vals []uint16) error {
	_, err := semctl(id, 0, semSetall, unsafe.Pointer(&vals[0]))
	return err
}

func msgget(key int32, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_MSGGET, uintptr(key), uintptr(flags), 0)
	if e != 0 {
		return 0, os.NewSyscallError("msgget", e)
	}
	return int(r), nil
}

func msgctl(id, cmd int, buf []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), uintptr(cmd), uintptr(unsafe.Pointer(&buf[0])))
	if e != 0 {
		return os.NewSyscallError("msgctl", e)
	}
	return nil
}

// msgQbytes is the queue's msg_qbytes (IPC_STAT).
func msgQbytes(id int) (uint64, error) {
	buf := make([]byte, msqDSSize)
	if err := msgctl(id, ipcStat, buf); err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(buf[msqQbytes:]), nil
}

// msgCopyAt reads the n-th message of queue id without taking it
// (MSG_COPY, which needs CONFIG_CHECKPOINT_RESTORE): its type and text.
// buf must hold the type (8 bytes) and the largest message.
func msgCopyAt(id int, n uint64, buf []byte) (int64, []byte, error) {
	r, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8),
		uintptr(n), msgCopy|ipcNowait, 0)
	if e != 0 {
		return 0, nil, os.NewSyscallError("msgrcv(MSG_COPY)", e)
	}
	return int64(binary.LittleEndian.Uint64(buf)), buf[8 : 8+r], nil
}

// msgRecv takes the first message (MSG_NOERROR: a longer text is cut).
func msgRecv(id int, buf []byte) (int64, int, error) {
	const msgNoerror = 0o10000 // MSG_NOERROR
	r, _, e := unix.Syscall6(unix.SYS_MSGRCV, uintptr(id), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)-8), 0, ipcNowait|msgNoerror, 0)
	if e != 0 {
		return 0, 0, os.NewSyscallError("msgrcv", e)
	}
	return int64(binary.LittleEndian.Uint64(buf)), int(r), nil
}

// msgSend queues one message; msg is its type (8 bytes) then its text.
func msgSend(id int, msg []byte) error {
	_, _, e := unix.Syscall6(unix.SYS_MSGSND, uintptr(id), uintptr(unsafe.Pointer(&msg[0])), uintptr(len(msg)-8), ipcNowait, 0, 0)
	if e != 0 {
		return os.NewSyscallError("msgsnd", e)
	}
	return nil
}

// setOwner sets uid, gid and mode with IPC_SET; the other members of the
// struct are ignored (msg_qbytes, set by setQbytes, aside).
func setOwnerSem(id int, uid, gid, mode uint32) error {
	buf := make([]byte, semDSSize)
	putPerm(buf, uid, gid, mode)
	_, err := semctl(id, 0, ipcSet, unsafe.Pointer(&buf[0]))
	return err
}

func setOwnerMsg(id int, uid, gid, mode uint32, qbytes uint64) error {
	buf := make([]byte, msqDSSize)
	putPerm(buf, uid, gid, mode)
	binary.LittleEndian.PutUint64(buf[msqQbytes:], qbytes)
	return msgctl(id, ipcSet, buf)
}

func putPerm(buf []byte, uid, gid, mode uint32) {
	le := binary.LittleEndian
	le.PutUint32(buf[4:], uid)
	le.PutUint32(buf[8:], gid)
	le.PutUint32(buf[20:], mode)
}

func semRemove(id int) error {
	_, err := semctl(id, 0, ipcRmid, nil)
	return err
}

func msgRemove(id int) error {
	_, _, e := unix.Syscall(unix.SYS_MSGCTL, uintptr(id), ipcRmid, 0)
	if e != 0 {
		return os.NewSyscallError("msgctl(IPC_RMID)", e)
	}
	return nil
}

// kcmpSysvsem compares the semaphore undo lists of two processes
// (KCMP_SYSVSEM, include/uapi/linux/kcmp.h): 0 when they are the same
// pointer, also when neither has one.
func kcmpSysvsem(pid1, pid2 int) (uintptr, error) {
	const kcmpSysvsem = 6
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), kcmpSysvsem, 0, 0, 0)
	if e != 0 {
		return 0, os.NewSyscallError("kcmp(KCMP_SYSVSEM)", e)
	}
	return r, nil
}

// addrOf is where a segment chpox attached lies in its address space.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
