package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/ptrace"
)

// freeze stops every process of the tree, top-down from the root; threads
// in s.stopped are at a trigger stop already (and run again once released,
// so they leave the set). Zombies are recorded as they are. A process that
// exits meanwhile has left the tree.
func (s *Supervisor) freeze() ([]*dump.Member, error) {
	var ms []*dump.Member
	queue := []int{s.root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		in, err := procinfo.Read(pid)
		if err != nil {
			if pid == s.root {
				return ms, errRootGone
			}
			continue
		}
		// The thread at the trigger stop is stopped already.
		stop := func(tid int) (*ptrace.Tracee, error) {
			if s.stopped[tid] {
				delete(s.stopped, tid)
				return ptrace.Stopped(tid)
			}
			t, err := ptrace.InterruptServing(tid, s.opt.Signal, s.handle)
			if errors.Is(err, unix.ESRCH) {
				if aerr := s.adopt(tid, pid, in.Started); aerr != nil {
					return nil, aerr
				}
				t, err = ptrace.InterruptServing(tid, s.opt.Signal, s.handle)
			}
			s.ended(err)
			if err == nil && t.Swallowed() {
				s.again = true // a trigger that came during this checkpoint
			}
			if err == nil && t.Execed() {
				s.forget(tid) // as the loop does for an exec it sees
			}
			return t, err
		}
		m := &dump.Member{Info: in}
		if !in.Zombie {
			m.T, err = stop(pid)
			if errors.Is(err, ptrace.ErrExited) && pid != s.root {
				continue
			}
			if err != nil {
				return ms, err
			}
			if err := m.FreezeThreads(stop); err != nil {
				ms = append(ms, m)
				return ms, err
			}
			if m.Info, err = procinfo.Read(pid); err != nil {
				ms = append(ms, m)
				return ms, err
			}
			if err := dump.Supported(m.Info); err != nil {
				ms = append(ms, m)
				return ms, err
			}
		}
		ms = append(ms, m)
		queue = append(queue, m.Info.Children...)
	}
	return ms, nil
}

// adopt traces a thread of the tree that chpox does not: one made with
// CLONE_UNTRACED, which no tracer's fork tracing follows, or an orphan of
// a process that exited while --attach froze the tree. Left out, it would
// be missing from the image without a word. It is thread tid of process
// pid (started then, as the freeze read it): seized, its ID cannot be
// reused, and one that is no longer that is let go again. A thread that
// is gone is left to the caller's retry, which finds it gone; one that
// another tracer holds, or that cannot be traced, fails the checkpoint.
func (s *Supervisor) adopt(tid, pid int, started uint64) error {
	if tp := procinfo.TracerPID(tid); tp == os.Getpid() {
		return nil // ours: the retry tells what else went wrong
	} else if tp != 0 {
		return tracedElsewhere(tid, tp)
	}
	if err := ptrace.SeizeWith(tid, traceOptions); err != nil {
		if st, _, serr := procinfo.State(tid); serr != nil || st == "Z" || st == "X" {
			return nil // gone meanwhile: the retry says so
		}
		if tp := procinfo.TracerPID(tid); tp != 0 && tp != os.Getpid() {
			return tracedElsewhere(tid, tp)
		}
		return fmt.Errorf("pid %d of the job is not traced, and chpox cannot trace it (%v): %w", tid, err, dump.ErrUnsupported)
	}
	if procinfo.TGID(tid) != pid || (tid == pid && procinfo.StartTime(pid) != started) {
		// Its ID was reused by another process since the freeze listed it.
		if t, err := ptrace.InterruptServing(tid, 0, s.handle); err == nil {
			t.DetachAsIs(0)
		}
		return nil
	}
	slog.Debug("traced a thread of the tree that was not", "tid", tid)
	return nil
}

func tracedElsewhere(tid, tracer int) error {
	_, comm, _ := procinfo.State(tracer)
	return fmt.Errorf("pid %d of the job is traced by pid %d (%s: a debugger?); detach that tracer, then checkpoint again: %w", tid, tracer, comm, dump.ErrUnsupported)
}
