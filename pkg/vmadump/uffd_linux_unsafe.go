package vmadump

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
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
	uffdioUnregister    = 0x8010aa01 // _IOR(0xAA, 0x01, struct uffdio_range)
	uffdioWriteprotect  = 0xc018aa06 // _IOWR(0xAA, 0x06, struct uffdio_writeprotect)
	uffdioRegisterModeW = 1 << 1     // UFFDIO_REGISTER_MODE_WP
	uffdioWPModeWP      = 1 << 0     // UFFDIO_WRITEPROTECT_MODE_WP

	uffdFeatureWPUnpopulated = 1 << 13
	uffdFeatureWPAsync       = 1 << 15

	pagemapScan        = 0xc0606610 // _IOWR('f', 16, struct pm_scan_arg)
	pmScanWPMatching   = 1 << 0     // PM_SCAN_WP_MATCHING
	pmScanCheckWPAsync = 1 << 1     // PM_SCAN_CHECK_WPASYNC

	pageIsWritten = 1 << 1 // PAGE_IS_WRITTEN
	pageIsFile    = 1 << 2 // PAGE_IS_FILE
	pageIsPresent = 1 << 3 // PAGE_IS_PRESENT
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

func uffdUnregister(f *os.File, start, end uint64) error {
	r := [2]uint64{start, end - start} // struct uffdio_range
	_, err := ioctl(f.Fd(), uffdioUnregister, unsafe.Pointer(&r))
	return err
}

func uffdProtect(f *os.File, start, end uint64) error {
	r := uffdioWriteprotectArg{Start: start, Len: end - start, Mode: uffdioWPModeWP}
	_, err := ioctl(f.Fd(), uffdioWriteprotect, unsafe.Pointer(&r))
	return err
}

// scanWritten calls fn for each run of present pages of [start, end)
// written since they were last protected; with final, also those now
// mapped to the zero page, and every page not present (swapped out, or a
// page of a private file mapping dropped with MADV_DONTNEED, whose
// protection marker hides that it reads as the file again): their staged
// copy may be stale without a write. With reprotect, the written pages
// are write-protected again in the same step. Only present pages count:
// the kernel reports an unpopulated page of a tracked area as written
// (it carries no protection), and a sparse area would be read in full. A
// page created later is present when it matters. An area not (or no
// longer) registered for asynchronous write-protect fails with EPERM.
func scanWritten(pm *os.File, start, end uint64, reprotect, final bool, fn func(start, end uint64)) error {
	flags := uint64(pmScanCheckWPAsync)
	if reprotect {
		flags |= pmScanWPMatching
	}
	if !final {
		return scan(pm, start, end, flags, pageIsPresent|pageIsWritten, 0, fn)
	}
	if err := scan(pm, start, end, flags, pageIsPresent, pageIsWritten|pageIsPFNZero, fn); err != nil {
		return err
	}
	return scan(pm, start, end, flags, 0, pageIsSwapped, fn)
}

// scan is PAGEMAP_SCAN over [start, end): the pages in all of the mask
// categories and, if anyof is not 0, in one of anyof.
func scan(pm *os.File, start, end, flags, mask, anyof uint64, fn func(start, end uint64)) error {
	return scanCategories(pm, start, end, flags, 0, mask, anyof, fn)
}

// scanCategories is scan with the inverted categories (those of mask that
// must be absent).
func scanCategories(pm *os.File, start, end, flags, inverted, mask, anyof uint64, fn func(start, end uint64)) error {
	return scanRegions(pm, start, end, flags, inverted, mask, anyof, 0, func(r pageRegion) { fn(r.Start, r.End) })
}

// scanRegions is scanCategories that also reports the categories of ret
// of each region (the kernel splits regions where they differ).
func scanRegions(pm *os.File, start, end, flags, inverted, mask, anyof, ret uint64, fn func(pageRegion)) error {
	vec := make([]pageRegion, 512)
	for start < end {
		arg := pmScanArg{Size: uint64(unsafe.Sizeof(pmScanArg{})), Flags: flags, Start: start, End: end,
			Vec: &vec[0], VecLen: uint64(len(vec)), CategoryInverted: inverted, CategoryMask: mask, CategoryAnyofMask: anyof, ReturnMask: mask | anyof | ret}
		n, err := ioctl(pm.Fd(), pagemapScan, unsafe.Pointer(&arg))
		if err != nil {
			return err
		}
		for _, r := range vec[:n] {
			fn(r)
		}
		if arg.WalkEnd <= start {
			return fmt.Errorf("PAGEMAP_SCAN made no progress at %#x", start)
		}
		start = arg.WalkEnd
	}
	return nil
}

// splitMin is the least memory scanSplit gives one thread: the kernel
// walks page tables at about 13 ns a page here, 13 ms for 4 GiB, all of
// it inside the final freeze.
const splitMin = 256 << 20

// scanSplit is scanRegions over [start, end) cut into pieces scanned at
// once, one per CPU (the job is frozen: the CPUs are free), the regions
// returned in address order (one region may come cut in two where the
// pieces meet).
func scanSplit(pm *os.File, start, end, flags, inverted, mask, anyof, ret uint64) ([]pageRegion, error) {
	n := min(uint64(runtime.GOMAXPROCS(0)), (end-start)/splitMin)
	if n <= 1 {
		var out []pageRegion
		err := scanRegions(pm, start, end, flags, inverted, mask, anyof, ret, func(r pageRegion) { out = append(out, r) })
		return out, err
	}
	// Cuts on 2 MiB boundaries: a huge page is never cut (a scan that
	// protects again would split it).
	step := (end - start) / n
	cut := func(i uint64) uint64 {
		switch i {
		case 0:
			return start
		case n:
			return end
		}
		return (start + i*step) &^ (1<<21 - 1) // step >= splitMin: still after start
	}
	parts := make([][]pageRegion, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		lo, hi := cut(i), cut(i+1)
		wg.Go(func() {
			errs[i] = scanRegions(pm, lo, hi, flags, inverted, mask, anyof, ret, func(r pageRegion) { parts[i] = append(parts[i], r) })
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return slices.Concat(parts...), nil
}

// ProbeUffd opens a userfaultfd of this process, as chpox check does, and
// returns the features its UFFDIO_API offers; userOnly tells it could only
// be had for user-mode faults (vm.unprivileged_userfaultfd = 0).
func ProbeUffd() (features uint64, userOnly bool, err error) {
	flags := uintptr(unix.O_CLOEXEC | unix.O_NONBLOCK)
	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, flags, 0, 0)
	if errno == unix.EPERM {
		userOnly = true
		fd, _, errno = unix.Syscall(unix.SYS_USERFAULTFD, flags|UffdUserModeOnly, 0, 0)
	}
	if errno != 0 {
		return 0, userOnly, os.NewSyscallError("userfaultfd", errno)
	}
	defer unix.Close(int(fd))
	api := uffdioAPIArg{API: uffdAPI}
	if _, err := ioctl(fd, uffdioAPI, unsafe.Pointer(&api)); err != nil {
		return 0, userOnly, fmt.Errorf("UFFDIO_API: %w", err)
	}
	return api.Features, userOnly, nil
}

// AsyncWP tells whether features hold what a live copy needs.
func AsyncWP(features uint64) bool {
	want := uint64(uffdFeatureWPAsync | uffdFeatureWPUnpopulated)
	return features&want == want
}

// ProbePagemapScan maps four pages of this process, writes the second and
// asks PAGEMAP_SCAN for the present ones: it must find exactly that one.
func ProbePagemapScan() error {
	page := os.Getpagesize()
	mem, err := unix.Mmap(-1, 0, 4*page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return os.NewSyscallError("mmap", err)
	}
	defer unix.Munmap(mem)
	mem[page] = 1
	pm, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return err
	}
	defer pm.Close()
	start := uint64(uintptr(unsafe.Pointer(&mem[0])))
	var found [][2]uint64
	if err := scan(pm, start, start+uint64(4*page), 0, pageIsPresent, 0, func(s, e uint64) { found = append(found, [2]uint64{s, e}) }); err != nil {
		return fmt.Errorf("ioctl(PAGEMAP_SCAN): %w", err)
	}
	if len(found) != 1 || found[0] != [2]uint64{start + uint64(page), start + uint64(2*page)} {
		return fmt.Errorf("PAGEMAP_SCAN answered %d regions, not the one written page", len(found))
	}
	return nil
}
