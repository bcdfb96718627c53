package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
)

// restoreThreads creates the other threads with their TIDs (clone3 with
// CLONE_THREAD and set_tid, injected into the main thread), then gives
// every thread its own state: alternate signal stack, rseq registration,
// robust futex list, clear_child_tid pointer, name and pending signals.
// Registers and masks come last, in finish.
func (x *target) restoreThreads(p *format.Process) error {
	for _, th := range p.Threads[1:] {
		t, err := x.cloneWithPID(th.TID, cloneThread)
		if err != nil {
			return fmt.Errorf("thread %d: %w", th.TID, err)
		}
		x.threads = append(x.threads, t)
	}
	for i, t := range x.allThreads() {
		th := p.Threads[i]
		if err := t.threadState(th, i > 0); err != nil {
			return fmt.Errorf("thread %d: %w", th.TID, err)
		}
		for _, si := range th.Pending {
			if timerSignal(p, si) || isTrap(si) {
				continue // the timer queues it again (armTimers); a trap comes late (lateTrap)
			}
			if err := t.queue(unix.SYS_RT_TGSIGQUEUEINFO, x.pid(), si); err != nil {
				return fmt.Errorf("thread %d: %w", th.TID, err)
			}
		}
	}
	return nil
}

const prSetName = 15 // PR_SET_NAME

func (x *target) threadState(th format.Thread, named bool) error {
	x.resetScratch()
	if th.AltStack.Flags&ssDisable == 0 {
		// SS_ONSTACK is a state, not a setting: it cannot be passed back.
		flags := uint64(uint32(th.AltStack.Flags) &^ ssOnStack)
		at, err := x.put(u64s(th.AltStack.SP, flags, th.AltStack.Size))
		if err != nil {
			return err
		}
		if _, err := x.call("sigaltstack", unix.SYS_SIGALTSTACK, at, 0); err != nil {
			return err
		}
	}
	if th.Rseq != nil {
		if _, err := x.call("rseq", unix.SYS_RSEQ, th.Rseq.Addr, uint64(th.Rseq.Len), 0, uint64(th.Rseq.Sig)); err != nil {
			return err
		}
	}
	if th.RobustHead != 0 {
		if _, err := x.call("set_robust_list", unix.SYS_SET_ROBUST_LIST, th.RobustHead, th.RobustLen); err != nil {
			return err
		}
	}
	if _, err := x.call("set_tid_address", unix.SYS_SET_TID_ADDRESS, th.ClearTID); err != nil {
		return err
	}
	if named && th.Comm != "" {
		name, err := x.cstring(th.Comm)
		if err != nil {
			return err
		}
		if _, err := x.call("prctl(PR_SET_NAME)", unix.SYS_PRCTL, prSetName, name); err != nil {
			return err
		}
	}
	return nil
}
