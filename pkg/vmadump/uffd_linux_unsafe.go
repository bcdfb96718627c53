package vmadump

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd and PAGEMAP_SCAN, which golang.org/x/sys v0.50 lacks:
// include/uapi/linux/userfaultfd.h and include/uapi/linux/fs.h (as in
// pkg/probe).
const (
	UffdUserModeOnly = 1 // UFFD_USER_MODE_ONLY, a flag of userfaultfd(2)

	uffdAPI             = 0xAA
	uffdioAPI           = 0xc018aa3f // _IOWR(0xAA, 0x3F, struct uffdio_api)
	uffdioRegister      = 0xc020aa00 // _IOWR(0xAA, 0x00, struct uffdio_register)
	uffdioWriteprotect  = 0xc018aa06 // _IOWR(0xAA, 0x06, struct uffdio_writeprotect)
	uffdioRegisterModeW = 1 << 1     // UFFDIO_REGISTER_MODE_WP
	uffdioWPModeWP      = 1 << 0     // UFFDIO_WRITEPROTECT_MODE_WP

	uffdFeatureWPUnpopulated = 1 << 13
	uffdFeatureWPAsync       = 1 << 15

	pagemapScan        = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pmScanWPMatching   = 1 << 0     // PM_SCAN_WP_MATCHING
	pmScanCheckWPAsync = 1 << 1     // PM_SCAN_CHECK_WPASYNC

	pageIsWritten = 1 << 1 // PAGE_IS_WRITTEN
	pageIsSwapped = 1 << 4 // PAGE_IS_SWAPPED
	pageIsPFNZero = 1 << 5 // PAGE_IS_PFNZERO
)

type uffdioAPIArg struct{ API, Features, Ioctls uint64 }

type uffdioRegisterArg struct{ Start, Len, Mode, Ioctls uint64 }

type uffdioWriteprotectArg struct{ Start, Len, Mode uint64 }

// pmScanArg is struct pm_scan_arg.
type pmScanArg struct {
	Size, Flags, Start, End, WalkEnd uint64
	Vec                              *pageRegion
	VecLen, MaxPages                 uint64
	CategoryInverted, CategoryMask   uint64
	CategoryAnyofMask, ReturnMask    uint64
}

type pageRegion struct{ Start, End, Categories uint64 }

func ioctl(fd uintptr, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// uffdHandshake enables asynchronous write-protect on a fresh userfaultfd:
// the kernel then resolves write faults itself (it only clears the
// page's protection, which PAGEMAP_SCAN reports as written), so no thread
// of the process ever waits for a handler.
func uffdHandshake(f *os.File) error {
	api := uffdioAPIArg{API: uffdAPI, Features: uffdFeatureWPAsync | uffdFeatureWPUnpopulated}
	if _, err := ioctl(f.Fd(), uffdioAPI, unsafe.Pointer(&api)); err != nil {
		return fmt.Errorf("UFFDIO_API (async write-protect): %w", err)
	}
	return nil
}

func uffdRegisterWP(f *os.File, start, end uint64) error {
	r := uffdioRegisterArg{Start: start, Len: end - start, Mode: uffdioRegisterModeW}
	_, err := ioctl(f.Fd(), uffdioRegister, unsafe.Pointer(&r))
	return err
}

func uffdProtect(f *os.File, start, end uint64) error {
	r := uffdioWriteprotectArg{Start: start, Len: end - start, Mode: uffdioWPModeWP}
	_, err := ioctl(f.Fd(), uffdioWriteprotect, unsafe.Pointer(&r))
	return err
}

// scanWritten calls fn for each run of pages of [start, end) written since
// they were last protected; with final, also those now mapped to the zero
// page or not present (swapped out, or a page of a private file mapping
// dropped with MADV_DONTNEED, which leaves a protected marker and reads
// as the file again): their staged copy may be stale without a write. With
// reprotect, they are write-protected again in the same step. An area not
// (or no longer) registered for asynchronous write-protect fails with
// EPERM.
func scanWritten(pm *os.File, start, end uint64, reprotect, final bool, fn func(start, end uint64)) error {
	vec := make([]pageRegion, 512)
	mask := uint64(pageIsWritten)
	if final {
		mask |= pageIsPFNZero | pageIsSwapped
	}
	flags := uint64(pmScanCheckWPAsync)
	if reprotect {
		flags |= pmScanWPMatching
	}
	for start < end {
		arg := pmScanArg{Size: uint64(unsafe.Sizeof(pmScanArg{})), Flags: flags, Start: start, End: end,
			Vec: &vec[0], VecLen: uint64(len(vec)), CategoryAnyofMask: mask, ReturnMask: mask}
		n, err := ioctl(pm.Fd(), pagemapScan, unsafe.Pointer(&arg))
		if err != nil {
			return err
		}
		for _, r := range vec[:n] {
			fn(r.Start, r.End)
		}
		if arg.WalkEnd <= start {
			return fmt.Errorf("PAGEMAP_SCAN made no progress at %#x", start)
		}
		start = arg.WalkEnd
	}
	return nil
}
