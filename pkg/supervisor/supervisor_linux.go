// Package supervisor runs a job as a registered process tree (`chpox run`):
// it starts the job traced, follows every fork, clone and exec so that all
// descendants are traced from their first instruction, and checkpoints the
// whole tree whenever a process of it receives the trigger signal, every
// interval, or when `chpox dump` asks through the control socket. The
// trigger signal is never delivered to the job.
//
// chpox run's death must not harm the job: tracees are never given
// PTRACE_O_EXITKILL, and the kernel detaches them when chpox exits.
package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/ptrace"
)

// Options for a supervised run.
type Options struct {
	Args     []string
	Signal   unix.Signal // the checkpoint trigger
	Interval time.Duration
	Output   string    // image path for signal and interval checkpoints
	Log      io.Writer // one line per checkpoint
}

// traceOptions: follow the whole tree; no EXITKILL (see package doc).
const traceOptions = unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK |
	unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEEXEC

// Supervisor is one running job.
type Supervisor struct {
	opt      Options
	tr       *ptrace.Tracer
	root     int
	requests chan *request // from the control socket
	wakeups  chan wakeup   // why a trigger signal was sent by chpox itself
	count    int           // checkpoints taken
	// stopped holds the threads waiting at a trigger stop during
	// checkpoints; a freeze takes them as they are.
	stopped map[int]bool
	// rootStatus is the root's end, if it was collected early.
	rootStatus *unix.WaitStatus
	// again asks for one more checkpoint: a trigger arrived while one was
	// being taken.
	again bool
}

type wakeup int

const (
	wakeInterval wakeup = iota
	wakeRequest
)

// Start starts the job traced and returns once it runs.
func Start(tr *ptrace.Tracer, opt Options) (*Supervisor, error) {
	s := &Supervisor{opt: opt, tr: tr, requests: make(chan *request, 16), wakeups: make(chan wakeup, 64)}
	if err := tr.Do(s.start); err != nil {
		return nil, err
	}
	return s, nil
}

// PID is the job's root process.
func (s *Supervisor) PID() int { return s.root }

// start execs the job stopped at its first instruction, then trades the
// PTRACE_TRACEME link for a seized one (needed for PTRACE_INTERRUPT and for
// group-stops to be visible) while it sits in a SIGSTOP.
func (s *Supervisor) start() error {
	cmd := exec.Command(s.opt.Args[0], s.opt.Args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.opt.Args[0], err)
	}
	pid := cmd.Process.Pid
	s.root = pid
	var ws unix.WaitStatus
	steps := []func() error{
		func() error { _, err := unix.Wait4(pid, &ws, unix.WALL, nil); return err }, // exec SIGTRAP
		func() error { return rawDetach(pid, unix.SIGSTOP) },
		func() error { _, err := unix.Wait4(pid, &ws, unix.WUNTRACED, nil); return err },
		func() error { return seize(pid) },
		func() error { return unix.Kill(pid, unix.SIGCONT) },
	}
	for _, st := range steps {
		if err := st(); err != nil {
			unix.Kill(pid, unix.SIGKILL)
			return fmt.Errorf("start %s traced: %w", s.opt.Args[0], err)
		}
	}
	return nil
}

func rawDetach(pid int, sig unix.Signal) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(pid), 0, uintptr(sig), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func seize(pid int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SEIZE, uintptr(pid), 0, traceOptions, 0, 0)
	if e != 0 {
		return os.NewSyscallError("ptrace(PTRACE_SEIZE)", e)
	}
	return nil
}

// Wait runs the tracing loop until the job's root exits and returns its
// exit status (128+N if signal N killed it).
func (s *Supervisor) Wait() (int, error) {
	if s.opt.Interval > 0 {
		go s.ticker()
	}
	status := 0
	err := s.tr.Do(func() error {
		var err error
		status, err = s.loop()
		return err
	})
	return status, err
}

// Trigger asks for a checkpoint the way a user does: by sending the
// trigger signal to a process of the tree.
func (s *Supervisor) trigger(pid int, why wakeup) error {
	s.wakeups <- why
	return unix.Kill(pid, s.opt.Signal)
}

func (s *Supervisor) ticker() {
	for range time.Tick(s.opt.Interval) {
		if s.trigger(s.root, wakeInterval) != nil {
			return
		}
	}
}

// loop handles every ptrace event of the tree.
func (s *Supervisor) loop() (int, error) {
	for {
		if ws := s.rootStatus; ws != nil {
			return exitStatus(*ws), nil
		}
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("wait for the job: %w", err)
		}
		if ws.Exited() || ws.Signaled() {
			if pid == s.root {
				return exitStatus(ws), nil
			}
			continue
		}
		if ws.StopSignal() == s.opt.Signal && ws.TrapCause() <= 0 {
			s.checkpoints(pid)
			continue
		}
		s.resume(pid, ws)
	}
}

// exitStatus is a shell's view of how a process ended.
func exitStatus(ws unix.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}

// resume lets a stopped tracee go on: events and interrupt stops are
// continued, a group-stop is kept (PTRACE_LISTEN) as job control wants,
// and any other signal is delivered.
func (s *Supervisor) resume(pid int, ws unix.WaitStatus) {
	sig := ws.StopSignal()
	switch cause := ws.TrapCause(); {
	case cause == unix.PTRACE_EVENT_STOP && sig != unix.SIGTRAP:
		ptraceListen(pid)
	case cause > 0:
		unix.PtraceCont(pid, 0)
	default:
		unix.PtraceCont(pid, int(sig))
	}
}

func ptraceListen(pid int) {
	unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_LISTEN, uintptr(pid), 0, 0, 0, 0)
}

// checkpoints serves a trigger stop of pid. Trigger stops already queued
// (the signal sent to several processes at once) and wakeup tokens are
// folded in: one checkpoint to the default image unless the only reason
// was a request, then one per request. Every thread left at a trigger stop
// is continued without the signal: it is never delivered.
func (s *Supervisor) checkpoints(first int) {
	s.stopped = map[int]bool{first: true}
	s.collectQueued()
	defaultWanted, requested := false, 0
	for done := false; !done; {
		select {
		case w := <-s.wakeups:
			if w == wakeRequest {
				requested++
			} else {
				defaultWanted = true
			}
		default:
			done = true
		}
	}
	if requested == 0 {
		defaultWanted = true // the user's own signal
	}
	if defaultWanted && s.opt.Output != "" {
		s.again = true
		for i := 0; s.again && i < 2; i++ { // at most one more: triggers coalesce
			s.again = false
			res, err := s.checkpoint(s.opt.Output, false)
			s.report(res, err, s.opt.Output)
		}
	}
	for ; requested > 0; requested-- {
		select {
		case r := <-s.requests:
			res, err := s.checkpoint(r.Output, r.Kill)
			s.report(res, err, r.Output)
			r.reply <- reply(res, err)
		default:
		}
	}
	for tid := range s.stopped {
		unix.PtraceCont(tid, 0)
	}
	s.stopped = nil
}

// collectQueued takes the events already waiting (no blocking): more
// trigger stops join s.stopped, anything else is handled as usual.
func (s *Supervisor) collectQueued() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WALL|unix.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		switch {
		case ws.Exited() || ws.Signaled():
			if pid == s.root {
				s.rootStatus = &ws
			}
		case ws.StopSignal() == s.opt.Signal && ws.TrapCause() <= 0:
			s.stopped[pid] = true
		default:
			s.resume(pid, ws)
		}
	}
}

func (s *Supervisor) report(res *dump.Result, err error, out string) {
	s.count++
	now := time.Now().Format("15:04:05")
	if err != nil {
		fmt.Fprintf(s.opt.Log, "chpox: checkpoint %d at %s failed: %v (%s still holds the previous checkpoint)\n", s.count, now, err, out)
		return
	}
	fmt.Fprintf(s.opt.Log, "chpox: checkpoint %d at %s: %d processes, %d bytes, frozen %s -> %s\n",
		s.count, now, res.Processes, res.Bytes, res.Frozen.Round(time.Microsecond*100), out)
}

// checkpoint freezes the tree (threads at a trigger stop are frozen
// already), writes the image and lets the tree go on.
func (s *Supervisor) checkpoint(out string, kill bool) (*dump.Result, error) {
	start := time.Now()
	ms, err := s.freeze()
	if err != nil {
		dump.Release(ms)
		return nil, err
	}
	res := &dump.Result{PID: s.root, Processes: len(ms)}
	w, err := s.write(ms, out)
	if err != nil {
		dump.Release(ms)
		return nil, err
	}
	res.DataBytes = int64(w.DataBytes)
	if kill {
		for _, m := range ms {
			unix.Kill(m.Info.PID, unix.SIGKILL)
		}
	}
	rerr := dump.Release(ms)
	res.Frozen = time.Since(start)
	if err := w.Commit(); err != nil {
		return nil, err
	}
	if st, err := os.Stat(out); err == nil {
		res.Bytes = st.Size()
	}
	return res, rerr
}

func (s *Supervisor) write(ms []*dump.Member, out string) (*dump.ImageWriter, error) {
	if err := dump.Collect(ms, int(s.opt.Signal)); err != nil {
		return nil, err
	}
	return dump.Write(ms, out)
}

var errRootGone = errors.New("the job's root process is gone")
