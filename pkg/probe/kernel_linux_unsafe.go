package probe

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// userfaultfd and PAGEMAP_SCAN, which golang.org/x/sys v0.50 lacks:
// include/uapi/linux/userfaultfd.h and include/uapi/linux/fs.h.
const (
	uffdUserModeOnly = 1
	uffdAPI          = 0xAA
	uffdioAPI        = 0xc018aa3f // _IOWR(0xAA, 0x3F, struct uffdio_api)

	uffdFeatureWPUnpopulated = 1 << 13
	uffdFeatureWPAsync       = 1 << 15

	pagemapScan   = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pageIsPresent = 1 << 3
)

type uffdioAPIArg struct{ API, Features, Ioctls uint64 }

// pmScanArg is struct pm_scan_arg; vec is a typed pointer (8 bytes, as
// the kernel's u64) so that the collector knows what it points to.
type pmScanArg struct {
	Size, Flags, Start, End, WalkEnd uint64
	Vec                              *pageRegion
	VecLen, MaxPages                 uint64
	CategoryInverted, CategoryMask   uint64
	CategoryAnyofMask, ReturnMask    uint64
}

type pageRegion struct{ Start, End, Categories uint64 }

// uffdItem opens a userfaultfd and asks which features it has: async
// write-protect is what a live copy of memory needs. A normal user may
// only open it for user-mode faults (vm.unprivileged_userfaultfd = 0).
func uffdItem() Item {
	it := Item{Name: "userfaultfd_wp_async"}
	flags := unix.O_CLOEXEC | unix.O_NONBLOCK
	mode := "all faults"
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, uintptr(flags), 0, 0)
	if errno == unix.EPERM {
		mode = "user-mode faults only (vm.unprivileged_userfaultfd = 0)"
		fd, _, errno = unix.Syscall(unix.SYS_USERFAULTFD, uintptr(flags|uffdUserModeOnly), 0, 0)
	}
	if errno != 0 {
		it.Detail = fmt.Sprintf("userfaultfd: %v", errno)
		it.Cost = "dump --live falls back to the frozen copy: the processes stay frozen for the whole memory copy"
		return it
	}
	defer unix.Close(int(fd))
	api := uffdioAPIArg{API: uffdAPI}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, uffdioAPI, uintptr(unsafe.Pointer(&api))); errno != 0 {
		it.Detail = fmt.Sprintf("UFFDIO_API: %v", errno)
		it.Cost = "dump --live falls back to the frozen copy: the processes stay frozen for the whole memory copy"
		return it
	}
	want := uint64(uffdFeatureWPAsync | uffdFeatureWPUnpopulated)
	it.OK = api.Features&want == want
	it.Detail = fmt.Sprintf("%s; features %#x", mode, api.Features)
	if !it.OK {
		it.Cost = "no asynchronous write-protect: dump --live falls back to the frozen copy"
	}
	return it
}

// pagemapScanItem asks PAGEMAP_SCAN for the present pages of a fresh
// mapping with one page touched: it must find exactly that one.
func pagemapScanItem() Item {
	it := Item{Name: "pagemap_scan"}
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, 4*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		it.Detail = fmt.Sprintf("mmap: %v", err)
		return it
	}
	defer unix.Munmap(mem)
	mem[page] = 1
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		it.Detail, it.Cost = err.Error(), "dump --live falls back to the frozen copy"
		return it
	}
	defer f.Close()
	regs := make([]pageRegion, 4)
	start := uint64(uintptr(unsafe.Pointer(&mem[0])))
	arg := pmScanArg{Size: uint64(unsafe.Sizeof(pmScanArg{})), Start: start, End: start + uint64(4*page),
		Vec: &regs[0], VecLen: uint64(len(regs)),
		CategoryAnyofMask: pageIsPresent, ReturnMask: pageIsPresent}
	n, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), pagemapScan, uintptr(unsafe.Pointer(&arg)))
	switch {
	case errno != 0:
		it.Detail = fmt.Sprintf("ioctl(PAGEMAP_SCAN): %v", errno)
		it.Cost = "dump --live falls back to the frozen copy (incremental checkpoints without soft-dirty need it too)"
	case n != 1 || regs[0].Start != start+uint64(page) || regs[0].End != start+uint64(2*page):
		it.Detail = fmt.Sprintf("PAGEMAP_SCAN answered %d regions, not the one touched page", n)
		it.Cost = "dump --live falls back to the frozen copy"
	default:
		it.OK, it.Detail = true, "PAGEMAP_SCAN finds written pages"
	}
	return it
}
