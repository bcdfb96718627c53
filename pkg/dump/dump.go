// Package dump takes a checkpoint of a running process: it freezes it under
// ptrace, gathers its state from /proc, from ptrace and from a few injected
// system calls, copies its memory into a new image and lets it go on. A
// failed dump leaves the process running exactly as before and the previous
// image untouched.
package dump

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/ptrace"
)

// Version is written into images as the tool that made them.
var Version = "chpox-dev"

// ErrUnsupported is returned (wrapped) when the process holds something
// chpox cannot checkpoint yet; the error text names it.
var ErrUnsupported = procinfo.ErrUnsupported

// Options control one dump.
type Options struct {
	Output string
	Kill   bool // SIGKILL the process after a successful dump
}

// Result describes a finished dump.
type Result struct {
	PID       int
	Processes int
	Bytes     int64         // size of the image file
	DataBytes int64         // memory and file contents
	Frozen    time.Duration // how long the process was stopped
}

// Dump checkpoints pid into opt.Output.
func Dump(tr *ptrace.Tracer, pid int, opt Options) (*Result, error) {
	in, err := procinfo.Read(pid)
	if err != nil {
		return nil, fmt.Errorf("dump %d: %w", pid, err)
	}
	if err := supported(in); err != nil {
		return nil, fmt.Errorf("dump %d: %w", pid, err)
	}
	res := &Result{PID: pid, Processes: 1}
	err = tr.Do(func() error { return dumpFrozen(pid, opt, res) })
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(opt.Output)
	if err != nil {
		return nil, fmt.Errorf("dump %d: %w", pid, err)
	}
	res.Bytes = st.Size()
	return res, nil
}

func supported(in *procinfo.Info) error {
	switch {
	case in.Zombie:
		return fmt.Errorf("process is a zombie (it exited; its parent has not reaped it)")
	case len(in.Threads) > 1:
		return fmt.Errorf("process has %d threads; multi-threaded processes: %w", len(in.Threads), ErrUnsupported)
	case len(in.Children) > 0:
		return fmt.Errorf("process has child process %d; process trees: %w", in.Children[0], ErrUnsupported)
	case in.Root != "/":
		return fmt.Errorf("process runs in a chroot (%s): %w", in.Root, ErrUnsupported)
	}
	return nil
}

// dumpFrozen runs on the tracer thread: freeze, collect, write, release.
func dumpFrozen(pid int, opt Options, res *Result) (err error) {
	t, err := ptrace.Seize(pid)
	if err != nil {
		if errors.Is(err, unix.ESRCH) || errors.Is(err, ptrace.ErrExited) {
			return fmt.Errorf("dump %d: %w", pid, procinfo.ErrNoProcess)
		}
		return fmt.Errorf("dump %d: %w", pid, err)
	}
	frozenAt := time.Now()
	released := false
	defer func() {
		if !released {
			if rerr := t.Release(); rerr != nil {
				err = errors.Join(err, fmt.Errorf("dump %d: resume after failure: %w", pid, rerr))
			}
		}
	}()
	// The process may have started a thread or a child between the check
	// and the freeze.
	in, err := procinfo.Read(pid)
	if err != nil {
		return fmt.Errorf("dump %d: %w", pid, err)
	}
	if err := supported(in); err != nil {
		return fmt.Errorf("dump %d: %w", pid, err)
	}
	p := &in.Process
	if err := collectThread(t, p); err != nil {
		return err
	}
	if err := inject(t, p); err != nil {
		return err
	}
	// Everything chpox changed is put back before memory is read, so the
	// image holds the process as it was (the stub's page stays a private
	// copy of the same bytes).
	if err := t.Undo(); err != nil {
		return fmt.Errorf("dump %d: %w", pid, err)
	}
	w, err := write(pid, p, opt.Output)
	if err != nil {
		return err
	}
	res.DataBytes = int64(w.dataBytes)
	if opt.Kill {
		// Still frozen: the process cannot change anything after the
		// checkpoint before it dies.
		if err := w.Commit(); err != nil {
			return err
		}
		released = true
		t.Kill()
		res.Frozen = time.Since(frozenAt)
		return nil
	}
	released = true
	if err := t.Release(); err != nil {
		w.Abort()
		return fmt.Errorf("dump %d: resume: %w", pid, err)
	}
	res.Frozen = time.Since(frozenAt)
	slog.Debug("process resumed", "pid", pid, "frozen", res.Frozen)
	return w.Commit() // fsync and rename while the process runs
}

func collectThread(t *ptrace.Tracee, p *format.Process) error {
	th := format.Thread{TID: t.PID, Regs: fromPtrace(&t.Regs)}
	var err error
	if th.XSave, err = t.XState(); err != nil {
		return err
	}
	if th.SigMask, err = t.SigMask(); err != nil {
		return err
	}
	if th.Pending, err = t.PendingSignals(false); err != nil {
		return err
	}
	if p.SharedPending, err = t.PendingSignals(true); err != nil {
		return err
	}
	if t.DeferredSignal() != 0 {
		si, err := t.DeferredSiginfo()
		if err != nil {
			return err
		}
		th.Pending = append(th.Pending, si)
	}
	rs, err := t.Rseq()
	if err != nil {
		return err
	}
	if rs.Registered {
		th.Rseq = &format.Rseq{Addr: rs.Addr, Len: rs.Size, Flags: rs.Flags, Sig: rs.Sig}
	}
	p.Threads = []format.Thread{th}
	return nil
}
