package probe

import (
	"fmt"

	"github.com/chpox/chpox/pkg/vmadump"
)

// uffdItem: asynchronous write-protect through a userfaultfd is what
// dump --live needs.
func uffdItem() Item {
	it := Item{Name: "userfaultfd_wp_async"}
	features, userOnly, err := vmadump.ProbeUffd()
	if err != nil {
		it.Detail = err.Error()
		it.Cost = "dump --live falls back to the frozen copy: the processes stay frozen for the whole memory copy"
		return it
	}
	mode := "all faults"
	if userOnly {
		mode = "user-mode faults only (vm.unprivileged_userfaultfd = 0)"
	}
	it.OK = vmadump.AsyncWP(features)
	it.Detail = fmt.Sprintf("%s; features %#x", mode, features)
	if !it.OK {
		it.Cost = "no asynchronous write-protect: dump --live falls back to the frozen copy"
	}
	return it
}

// pagemapScanItem: PAGEMAP_SCAN tells dump --live which pages were written.
func pagemapScanItem() Item {
	it := Item{Name: "pagemap_scan"}
	if err := vmadump.ProbePagemapScan(); err != nil {
		it.Detail, it.Cost = err.Error(), "dump --live falls back to the frozen copy"
		return it
	}
	it.OK, it.Detail = true, "PAGEMAP_SCAN finds written pages"
	return it
}
