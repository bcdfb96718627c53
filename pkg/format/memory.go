package format

// Memory details kept per area and per process (version 3): madvise(2)
// state, mlock(2), guard regions, mseal(2), whether a shared mapping may be
// made writable, and the mm-wide settings of mlockall(2), KSM and THP.
// Absent fields mean the defaults of a fresh mmap, as in older images.

// Advice names in VMA.Advice: madvise(2) flags the kernel keeps on an area
// (the VmFlags of /proc/PID/smaps, Documentation/filesystems/proc.rst).
const (
	AdviceDontFork   = "dontfork"   // MADV_DONTFORK (dc)
	AdviceDontDump   = "dontdump"   // MADV_DONTDUMP (dd)
	AdviceWipeOnFork = "wipeonfork" // MADV_WIPEONFORK (wf)
	AdviceHugePage   = "hugepage"   // MADV_HUGEPAGE (hg)
	AdviceNoHugePage = "nohugepage" // MADV_NOHUGEPAGE (nh)
	AdviceMergeable  = "mergeable"  // MADV_MERGEABLE (mg): KSM may merge its pages
)

// Advices lists every advice name an image may hold.
var Advices = []string{AdviceDontFork, AdviceDontDump, AdviceWipeOnFork, AdviceHugePage, AdviceNoHugePage, AdviceMergeable}

// Lock states of an area (VMA.Lock).
const (
	LockLocked  = "locked"  // mlock(2): every page resident (lo)
	LockOnFault = "onfault" // mlock2(MLOCK_ONFAULT): pages locked as they fault in (lo lf)
)

// Span is a half-open address range [Start, End).
type Span struct {
	Start uint64 `json:"start"`
	End   uint64 `json:"end"`
}

// MemoryState is what a process's mm keeps for mappings yet to come and
// for all of them at once.
type MemoryState struct {
	// LockFuture is mlockall(MCL_FUTURE) (LockLocked) or
	// mlockall(MCL_FUTURE|MCL_ONFAULT) (LockOnFault): areas mapped later
	// are locked too.
	LockFuture string `json:"lock_future,omitempty"`
	// MergeAny is prctl(PR_SET_MEMORY_MERGE): KSM may merge every area.
	MergeAny bool `json:"merge_any,omitempty"`
	// THPDisable is prctl(PR_SET_THP_DISABLE).
	THPDisable bool `json:"thp_disable,omitempty"`
}

// Seals a memfd may carry (F_SEAL_*, include/uapi/linux/fcntl.h).
const (
	SealSeal        = 0x0001
	SealShrink      = 0x0002
	SealGrow        = 0x0004
	SealWrite       = 0x0008
	SealFutureWrite = 0x0010
	SealExec        = 0x0020
	sealAll         = 0x003f
)
