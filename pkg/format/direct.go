package format

import (
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DirectMin is the shortest data write that WriteOptions.Direct sends
// past the page cache: each such write waits for the device, which a few
// pages at a time (an incremental checkpoint's runs) would make slower
// than the page cache.
const DirectMin = 1 << 20

// openDirect opens the image file a second time with O_DIRECT, through
// its own descriptor (never by name again). A file system without
// O_DIRECT keeps the page cache for everything.
func (w *Writer) openDirect() {
	f, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", w.f.Fd()), os.O_WRONLY|unix.O_DIRECT, 0)
	if err != nil {
		return
	}
	w.direct = f
}

// writeDirect writes p at w.off past the page cache when it can: a long,
// page-aligned write of page-aligned memory (the staged pages of a live
// copy). It reports whether it did; on false the caller writes p as usual.
// The page cache never holds a page of such a range (w.off only grows,
// and a buffered write ends where the next direct one starts: at a page
// boundary), so nothing needs invalidating.
func (w *Writer) writeDirect(p []byte) bool {
	if w.direct == nil || len(p) < DirectMin || len(p)%dataAlign != 0 || w.off%dataAlign != 0 ||
		uintptr(unsafe.Pointer(&p[0]))%dataAlign != 0 {
		return false
	}
	n, err := w.direct.WriteAt(p, w.off)
	if n == 0 && errors.Is(err, unix.EINVAL) {
		// The device wants a larger alignment than a page: the page
		// cache it is, from now on.
		w.closeDirect()
		return false
	}
	w.off += int64(n)
	if err != nil {
		w.err = fmt.Errorf("write image %s: %w", w.path, err)
	}
	return true
}

func (w *Writer) closeDirect() {
	if w.direct != nil {
		w.direct.Close()
		w.direct = nil
	}
}
