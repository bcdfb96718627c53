package objects

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

const kcmpEpollTFD = 7 // KCMP_EPOLL_TFD, include/uapi/linux/kcmp.h

// kcmpEpollSlot is struct kcmp_epoll_slot (include/uapi/linux/kcmp.h).
type kcmpEpollSlot struct {
	Efd, Tfd, Toff uint32
}

// EpollWatches tells whether fd of process pid is the very file that the
// epoll instance epfd of process epid watches as target tfd (the toff-th
// watch with that fd number): kcmp(KCMP_EPOLL_TFD), kernel/kcmp.c. An fd
// that is not open is not it.
func EpollWatches(pid, fd, epid, epfd, tfd, toff int) (bool, error) {
	slot := kcmpEpollSlot{uint32(epfd), uint32(tfd), uint32(toff)}
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid), uintptr(epid), kcmpEpollTFD, uintptr(fd), uintptr(unsafe.Pointer(&slot)), 0)
	switch e {
	case 0:
		return r == 0, nil
	case unix.EBADF:
		return false, nil
	}
	return false, os.NewSyscallError("kcmp(KCMP_EPOLL_TFD)", e)
}
