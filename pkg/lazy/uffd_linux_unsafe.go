package lazy

import (
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd(2) in missing mode, which golang.org/x/sys v0.50 lacks:
// include/uapi/linux/userfaultfd.h (checked against Debian 12's header).
const (
	uffdAPI          = 0xAA
	uffdioAPI        = 0xc018aa3f // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegister   = 0xc020aa00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdioWake       = 0x8010aa02 // _IOR(0xAA, 0x02, struct uffdio_range)
	uffdioCopy       = 0xc028aa03 // _IOWR(0xAA, 0x03, struct uffdio_copy)
	uffdioZeropage   = 0xc020aa04 // _IOWR(0xAA, 0x04, struct uffdio_zeropage)
	registerMissing  = 1          // UFFDIO_REGISTER_MODE_MISSING
	featureEventFork = 1 << 1     // UFFD_FEATURE_EVENT_FORK
	featureRemap     = 1 << 2     // UFFD_FEATURE_EVENT_REMAP
	featureRemove    = 1 << 3     // UFFD_FEATURE_EVENT_REMOVE
	featureUnmap     = 1 << 6     // UFFD_FEATURE_EVENT_UNMAP

	// The non-cooperative events: the program forks, moves, discards and
	// unmaps its own memory while chpox fills it, and each changes what a
	// page must read as (see server.event).
	features = featureEventFork | featureRemap | featureRemove | featureUnmap

	msgSize       = 32 // sizeof(struct uffd_msg)
	eventFault    = 0x12
	eventFork     = 0x13
	eventRemap    = 0x14
	eventRemove   = 0x15
	eventUnmap    = 0x16
	userfaultfdNr = unix.SYS_USERFAULTFD
)

type apiArg struct{ API, Features, Ioctls uint64 }

type registerArg struct{ Start, Len, Mode, Ioctls uint64 }

type copyArg struct {
	Dst, Src, Len, Mode uint64
	Copy                int64
}

type zeropageArg struct {
	Start, Len, Mode uint64
	Zeropage         int64
}

type rangeArg struct{ Start, Len uint64 }

func ioctl(fd int, req uintptr, arg unsafe.Pointer) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return errno
	}
	return nil
}

// handshake enables the events chpox follows on a fresh userfaultfd.
func handshake(f *os.File) error {
	api := apiArg{API: uffdAPI, Features: features}
	if err := ioctl(int(f.Fd()), uffdioAPI, unsafe.Pointer(&api)); err != nil {
		return fmt.Errorf("UFFDIO_API: %w", err)
	}
	return nil
}

// register puts [start, end) of the userfaultfd's process into missing
// mode: a first touch of a page not there waits for chpox.
func register(fd int, start, end uint64) error {
	r := registerArg{Start: start, Len: end - start, Mode: registerMissing}
	if err := ioctl(fd, uffdioRegister, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("UFFDIO_REGISTER %#x-%#x: %w", start, end, err)
	}
	return nil
}

// copyIn fills [dst, dst+len(src)) with src (UFFDIO_COPY) and wakes the
// threads waiting there. It returns the bytes copied: all of them, or
// those before the error (EEXIST at a page already there, EAGAIN while an
// event waits to be read).
func copyIn(fd int, dst uint64, src []byte) (uint64, error) {
	c := copyArg{Dst: dst, Src: uint64(uintptr(unsafe.Pointer(&src[0]))), Len: uint64(len(src))}
	err := ioctl(fd, uffdioCopy, unsafe.Pointer(&c))
	if c.Copy > 0 {
		return uint64(c.Copy), err
	}
	return 0, err
}

// zeroIn maps the zero page at [start, start+n) and wakes its waiters.
func zeroIn(fd int, start, n uint64) error {
	z := zeropageArg{Start: start, Len: n}
	return ioctl(fd, uffdioZeropage, unsafe.Pointer(&z))
}

// wake lets the threads waiting on [start, start+n) retry their access.
func wake(fd int, start, n uint64) error {
	r := rangeArg{Start: start, Len: n}
	return ioctl(fd, uffdioWake, unsafe.Pointer(&r))
}

// msg is a decoded struct uffd_msg.
type msg struct {
	event   uint8
	a, b, c uint64 // the arg union's first three words
}

func decodeMsg(b []byte) msg {
	le := binary.LittleEndian
	return msg{event: b[0], a: le.Uint64(b[8:]), b: le.Uint64(b[16:]), c: le.Uint64(b[24:])}
}
