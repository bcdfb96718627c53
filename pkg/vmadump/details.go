package vmadump

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/chpox/chpox/pkg/format"
)

// advice maps the VmFlags letters of madvise(2) state to the image's names
// (fs/proc/task_mmu.c, show_smap_vma_flags).
var advice = []struct{ flag, name string }{
	{"dc", format.AdviceDontFork},
	{"dd", format.AdviceDontDump},
	{"wf", format.AdviceWipeOnFork},
	{"hg", format.AdviceHugePage},
	{"nh", format.AdviceNoHugePage},
	{"mg", format.AdviceMergeable},
}

// details records what the VmFlags of an area say beyond maps (advice,
// mlock, mseal, whether a shared mapping may become writable) and refuses
// the areas whose memory chpox cannot bring back. The vDSO areas are the
// kernel's own (VM_IO|VM_PFNMAP, dontdump): they are moved, not described.
func details(a *Area, s smapsEntry) error {
	if a.Kind == format.VMAVDSO {
		return nil
	}
	flags := s.flags
	has := func(f string) bool { return slices.Contains(flags, f) }
	name := a.Name
	if name == "" {
		name = "anonymous memory"
	}
	switch {
	case a.Kind == format.VMAFile && (strings.HasPrefix(a.Name, "anon_inode:") || strings.HasPrefix(a.Name, "socket:")):
		// A ring of a perf event, io_uring or packet socket: the kernel
		// object behind it cannot be opened by path again.
		return fmt.Errorf("%s is the mapping of a kernel object (a perf event's, io_uring's or a packet socket's ring), which chpox cannot make again: %w", name, ErrUnsupported)
	case has("io") || has("pf"):
		// remap_pfn_range and friends: the pages are device memory or
		// kernel pages that /proc/PID/mem cannot read and mmap of a file
		// cannot make again without the driver's own state.
		return fmt.Errorf("%s is a device mapping (VM_IO/VM_PFNMAP): its memory belongs to the driver and cannot be saved: %w", name, ErrUnsupported)
	case has("ht"):
		return fmt.Errorf("%s is hugetlb memory (MAP_HUGETLB, hugetlbfs or MFD_HUGETLB), which chpox does not restore yet: %w", name, ErrUnsupported)
	case s.pkey != 0:
		// pkey_mprotect(2): the key's allocation and its area would have
		// to be made again, which chpox does not do yet.
		return fmt.Errorf("%s has memory protection key %d (pkey_mprotect), which chpox does not restore yet: %w", name, s.pkey, ErrUnsupported)
	case has("ss"):
		return fmt.Errorf("%s is a shadow stack (CET), which chpox does not restore yet: %w", name, ErrUnsupported)
	case a.Name == "/secretmem (deleted)":
		// memfd_secret(2) pages are removed from the kernel's direct map:
		// neither /proc/PID/mem nor the file can be read.
		return fmt.Errorf("%s is memfd_secret memory, which no other process (chpox neither) can read: %w", name, ErrUnsupported)
	case a.Name == "[uprobes]":
		return fmt.Errorf("[uprobes] is the kernel's area for uprobe breakpoints of a tracer (perf, bpftrace): detach the uprobes and dump again: %w", ErrUnsupported)
	}
	for _, ad := range advice {
		if has(ad.flag) {
			a.Advice = append(a.Advice, ad.name)
		}
	}
	switch {
	case has("lo") && has("lf"):
		a.Lock = format.LockOnFault
	case has("lo"):
		a.Lock = format.LockLocked
	}
	a.Sealed = has("sl")
	a.NoReserve = has("nr")
	if a.Shared {
		mw := has("mw")
		a.MayWrite = &mw
	}
	a.maybeGuard = has("gu")
	return nil
}

// LockFlags reads, from the VmFlags of the area holding addr, whether the
// process maps new areas locked: mlockall(MCL_FUTURE) puts VM_LOCKED (and
// MCL_ONFAULT VM_LOCKONFAULT) into the mm's default flags, which no /proc
// file shows, but an area mapped after it carries them. Dump maps its
// scratch area in the process anyway: that area tells.
func LockFlags(pid int, addr uint64) (string, error) {
	sm, err := readSmaps(pid)
	if err != nil {
		return "", err
	}
	e, ok := sm[addr]
	if !ok {
		// Merged with a neighbour of the same flags: the neighbour was
		// then mapped (or locked) the same way, and its flags are the
		// scratch area's.
		var best uint64
		for start := range sm {
			if start <= addr && start > best {
				best = start
			}
		}
		e = sm[best]
	}
	switch {
	case slices.Contains(e.flags, "lo") && slices.Contains(e.flags, "lf"):
		return format.LockOnFault, nil
	case slices.Contains(e.flags, "lo"):
		return format.LockLocked, nil
	}
	return "", nil
}

// MMState reads the mm-wide memory settings of pid; scratch is an area
// dump mapped in it a moment ago (see LockFlags).
func MMState(pid int, scratch uint64) (*format.MemoryState, error) {
	var m format.MemoryState
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("dump %d: %w", pid, err)
	}
	// Under mlockall(MCL_FUTURE) the scratch area, which the injected calls
	// have written to, holds locked pages: no locked page at all spares
	// reading smaps a second time (a cost that grows with the areas).
	if !strings.Contains(string(status), "\nVmLck:\t       0 kB") {
		if m.LockFuture, err = LockFlags(pid, scratch); err != nil {
			return nil, err
		}
	}
	// "ksm_merge_any: yes" (fs/proc/base.c, proc_pid_ksm_stat) is
	// prctl(PR_SET_MEMORY_MERGE); the file is missing without CONFIG_KSM.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/ksm_stat", pid)); err == nil {
		m.MergeAny = strings.Contains(string(b), "ksm_merge_any: yes")
	}
	// "THP_enabled: 0" is prctl(PR_SET_THP_DISABLE) (fs/proc/array.c).
	m.THPDisable = strings.Contains(string(status), "\nTHP_enabled:\t0")
	if m == (format.MemoryState{}) {
		return nil, nil
	}
	return &m, nil
}
