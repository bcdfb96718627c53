package restore

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// ErrMemLock refuses a restore whose locked memory chpox may not lock.
var ErrMemLock = errors.New("cannot lock memory")

var adviceCodes = map[string]uint64{
	format.AdviceDontFork:   unix.MADV_DONTFORK,
	format.AdviceDontDump:   unix.MADV_DONTDUMP,
	format.AdviceWipeOnFork: unix.MADV_WIPEONFORK,
	format.AdviceHugePage:   unix.MADV_HUGEPAGE,
	format.AdviceNoHugePage: unix.MADV_NOHUGEPAGE,
	format.AdviceMergeable:  unix.MADV_MERGEABLE,
}

// mlock2 flag and mlockall flags (include/uapi/asm-generic/mman-common.h, mman.h).
const (
	mlockOnFault = 1
	mclFuture    = 2
	mclOnFault   = 4
)

// memoryDetails gives the filled and protected areas what the kernel keeps
// on them besides pages: madvise state, guard regions, mlock, and last
// mseal (after it nothing can change them); then the mm-wide settings.
// KSM's process-wide merging comes first, as it marks every area mergeable.
func (x *target) memoryDetails(p *format.Process) error {
	m := p.Memory
	if m == nil {
		m = &format.MemoryState{}
	}
	if m.MergeAny {
		if _, err := x.call("prctl(PR_SET_MEMORY_MERGE)", unix.SYS_PRCTL, unix.PR_SET_MEMORY_MERGE, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	if m.THPDisable {
		if _, err := x.call("prctl(PR_SET_THP_DISABLE)", unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
			return err
		}
	}
	for _, v := range p.VMAs {
		if err := x.areaDetails(v); err != nil {
			return fmt.Errorf("%#x-%#x (%s): %w", v.Start, v.End, v.Name, err)
		}
	}
	if m.LockFuture != "" {
		flags := uint64(mclFuture)
		if m.LockFuture == format.LockOnFault {
			flags |= mclOnFault
		}
		if _, err := x.call("mlockall(MCL_FUTURE)", unix.SYS_MLOCKALL, flags); err != nil {
			return err
		}
	}
	for _, v := range p.VMAs {
		if v.Sealed {
			if _, err := x.call("mseal", unix.SYS_MSEAL, v.Start, v.End-v.Start, 0); err != nil {
				return fmt.Errorf("%#x-%#x (%s): %w", v.Start, v.End, v.Name, err)
			}
		}
	}
	return nil
}

func (x *target) areaDetails(v format.VMA) error {
	size := v.End - v.Start
	for _, a := range v.Advice {
		if _, err := x.call("madvise("+a+")", unix.SYS_MADVISE, v.Start, size, adviceCodes[a]); err != nil {
			return err
		}
	}
	for _, g := range v.Guards {
		if _, err := x.call("madvise(MADV_GUARD_INSTALL)", unix.SYS_MADVISE, g.Start, g.End-g.Start, unix.MADV_GUARD_INSTALL); err != nil {
			return fmt.Errorf("guard region %#x-%#x: %w", g.Start, g.End, err)
		}
	}
	if v.Lock != "" {
		flags := uint64(0)
		if v.Lock == format.LockOnFault {
			flags = mlockOnFault
		}
		if _, err := x.call("mlock2", unix.SYS_MLOCK2, v.Start, size, flags); err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EAGAIN) {
				return fmt.Errorf("the process had %d KiB locked here (mlock) and chpox may not lock them (%w): raise RLIMIT_MEMLOCK (ulimit -l) or restore with CAP_IPC_LOCK: %w",
					size>>10, err, ErrMemLock)
			}
			return err
		}
	}
	return nil
}
