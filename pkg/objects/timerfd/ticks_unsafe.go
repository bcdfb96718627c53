package timerfd

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// tfdIocSetTicks is TFD_IOC_SET_TICKS, _IOW('T', 0, __u64)
// (include/uapi/linux/timerfd.h); the kernel has it with
// CONFIG_CHECKPOINT_RESTORE (fs/timerfd.c, timerfd_ioctl).
const tfdIocSetTicks = 0x40085400

// setTicks makes ticks expirations of fd unread, as if they had happened.
func setTicks(fd int, ticks uint64) error {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), tfdIocSetTicks, uintptr(unsafe.Pointer(&ticks)))
	if e != 0 {
		return os.NewSyscallError("ioctl(TFD_IOC_SET_TICKS)", e)
	}
	return nil
}
