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
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/dump"
	"github.com/chpox/chpox/pkg/objects/inet"
	"github.com/chpox/chpox/pkg/ptrace"
)

// Options for a supervised run.
type Options struct {
	Args     []string
	Signal   unix.Signal // the checkpoint trigger
	Interval time.Duration
	Output   string    // image path for signal and interval checkpoints
	Log      io.Writer // one line per checkpoint
	Errors   io.Writer // one line per failed checkpoint (Log if nil)
	// EmbedFiles stores the mapped files in every image (--embed-files).
	EmbedFiles bool
	// Live copies memory while the job runs, and from the second
	// checkpoint on only the pages written since the last (live_linux.go).
	Live bool
}

// traceOptions: follow the whole tree; no EXITKILL (see package doc).
// TRACESYSGOOD marks syscall stops, which only checkpoints' injected calls
// ask for (ptrace.Tracee.Enter); new tracees inherit all of them.
const traceOptions = unix.PTRACE_O_TRACEFORK | unix.PTRACE_O_TRACEVFORK |
	unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEEXEC | unix.PTRACE_O_TRACESYSGOOD

// Supervisor is one running job.
type Supervisor struct {
	opt     Options
	tr      *ptrace.Tracer
	root    int
	waker   int // a traced `sleep` that chpox signals to wake its tracing loop
	mu      sync.Mutex
	pending []*request // dump requests from the control socket, not yet served
	due     bool       // an --interval checkpoint is due
	busy    int        // checkpoints that met a busy listener in a row (retryBusy)
	count   int        // checkpoints taken
	// stopped holds the threads waiting at a trigger stop during
	// checkpoints; a freeze takes them as they are.
	stopped map[int]bool
	// rootStatus is the root's end, if it was collected early.
	rootStatus *unix.WaitStatus
	// again asks for one more checkpoint: a trigger arrived while one was
	// being taken.
	again bool
	// series carries the write tracking and the last image to the next
	// live checkpoint.
	series *dump.Series
	// gone: processes that exited or exec'd while a live checkpoint held
	// the tracking (inLive; series is nil then), forgotten once it is kept.
	gone   []int
	inLive bool
	// detach: the loop is asked to end and let the tree go on (Detach).
	detach bool
}

// forget ends the write tracking of pid, which exited or exec'd: its
// tracking was of the memory it had, and its PID may come back as
// another process's.
func (s *Supervisor) forget(pid int) {
	if s.series == nil {
		if s.inLive {
			s.gone = append(s.gone, pid)
		}
		return
	}
	s.series.Forget(pid)
}

// end is the loop's end, with the root's status.
func (s *Supervisor) end(ws unix.WaitStatus) int {
	s.finish()
	return exitStatus(ws)
}

// finish stops the doorbell and the tracking (by slices, not in one stall
// of what runs on).
func (s *Supervisor) finish() {
	unix.Kill(s.waker, unix.SIGKILL)
	s.series.Close()
	s.series = nil
	dump.Closed()
}

// Start starts the job traced and returns once it runs.
func Start(tr *ptrace.Tracer, opt Options) (*Supervisor, error) {
	return launch(&Supervisor{opt: opt, tr: tr}, (*Supervisor).start)
}

// launch starts the doorbell, then gets the tree traced (trace).
func launch(s *Supervisor, trace func(*Supervisor) error) (*Supervisor, error) {
	ptrace.KeptOptions = traceOptions // a checkpoint suspending seccomp keeps them
	if err := s.tr.Do(s.startWaker); err != nil {
		return nil, err
	}
	if err := s.tr.Do(func() error { return trace(s) }); err != nil {
		unix.Kill(s.waker, unix.SIGKILL)
		return nil, err
	}
	return s, nil
}

// Attach makes a running tree that chpox did not start a registered one
// (chpox run --attach): all its threads are seized and stopped together,
// as for a dump (no fork escapes), given chpox run's options and let go
// on, traced. From then on it is served as a job chpox started.
func Attach(tr *ptrace.Tracer, pid int, opt Options) (*Supervisor, error) {
	return launch(&Supervisor{opt: opt, tr: tr, root: pid}, (*Supervisor).attach)
}

func (s *Supervisor) attach() error {
	ms, err := dump.FreezeTree(s.root)
	if err != nil {
		return fmt.Errorf("attach to %d: %w", s.root, err)
	}
	for _, m := range ms {
		if m.T == nil {
			continue // a zombie: nothing to trace
		}
		for _, t := range m.Threads() {
			if err := t.SetOptions(traceOptions); err != nil {
				dump.Release(ms) // detached again, as they were
				return fmt.Errorf("attach to %d: %w", s.root, err)
			}
		}
	}
	for _, m := range ms {
		if m.T != nil {
			for _, t := range m.Threads() {
				t.StayTraced()
			}
		}
	}
	if err := dump.Release(ms); err != nil {
		return fmt.Errorf("attach to %d: %w", s.root, err)
	}
	return nil
}

// ErrDetached is Wait's end after Detach: the job runs on, untraced.
var ErrDetached = errors.New("detached")

// Detach asks the loop to end between checkpoints; chpox's exit then
// lets the tree go (the kernel detaches every tracee; letGo says what of
// the signals at their stops).
func (s *Supervisor) Detach() error {
	s.mu.Lock()
	s.detach = true
	s.mu.Unlock()
	return s.wake()
}

func (s *Supervisor) detaching() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.detach
}

// letGo ends the loop for Detach. The stops already queued are served
// first: a trigger there, not yet waited for, would be delivered to the
// job when chpox exits (a stop waited for has its signal cleared).
// Another trigger arriving in the microseconds before the exit can still
// reach the job: a detach cannot take the signal back from the kernel.
func (s *Supervisor) letGo() error {
	s.stopped = map[int]bool{}
	s.collectQueued()
	for tid := range s.stopped {
		ptrace.Cont(tid, 0)
	}
	s.stopped = nil
	s.finish()
	return ErrDetached
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
		func() error { return ptrace.DetachWith(pid, unix.SIGSTOP) },
		func() error { _, err := unix.Wait4(pid, &ws, unix.WUNTRACED, nil); return err },
		func() error { return ptrace.SeizeWith(pid, traceOptions) },
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

// startWaker starts the tracing loop's doorbell: the loop blocks in
// wait4, which only a tracee's stop ends, so requests and the interval
// timer signal this traced `sleep` (never the job: a signal the job does
// not expect could hurt it). It is chpox's child, outside the job's tree.
func (s *Supervisor) startWaker() error {
	cmd := exec.Command("sleep", "infinity")
	// It must not outlive chpox: the tracer thread that starts it lives as
	// long as the process, so the parent-death signal comes with chpox's
	// end; EXITKILL as well, since it is traced.
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Setpgid: true, Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start the supervisor's waker (sleep): %w", err)
	}
	s.waker = cmd.Process.Pid
	var ws unix.WaitStatus
	if _, err := unix.Wait4(s.waker, &ws, unix.WALL, nil); err != nil { // exec SIGTRAP
		return fmt.Errorf("start the supervisor's waker: %w", err)
	}
	if err := unix.PtraceSetOptions(s.waker, unix.PTRACE_O_EXITKILL); err != nil {
		return fmt.Errorf("start the supervisor's waker: %w", os.NewSyscallError("ptrace(PTRACE_SETOPTIONS)", err))
	}
	return ptrace.Cont(s.waker, 0)
}

// wake rings the doorbell.
func (s *Supervisor) wake() error { return unix.Kill(s.waker, unix.SIGUSR1) }

func (s *Supervisor) ticker() {
	for range time.Tick(s.opt.Interval) {
		if s.ring() != nil {
			return
		}
	}
}

// Trigger asks for a checkpoint, as the trigger signal sent to the job
// does (the signal sent to chpox itself comes this way). Triggers that
// come while one is due give one checkpoint.
func (s *Supervisor) Trigger() error { return s.ring() }

// ring asks the loop for a checkpoint to the --output file.
func (s *Supervisor) ring() error {
	s.mu.Lock()
	s.due = true
	s.mu.Unlock()
	return s.wake()
}

// retryBusy tells whether a checkpoint that met a TCP listener holding
// connections not yet accepted is tried again (as dump does, up to
// dump.AcceptTries times, 10 ms, 20 ms ... later). The job runs and its
// events are served meanwhile: a timer rings the doorbell, the loop does
// not sleep.
func (s *Supervisor) retryBusy(err error) bool {
	if !errors.Is(err, inet.ErrAcceptQueue) || s.busy >= dump.AcceptTries-1 {
		s.busy = 0
		return false
	}
	wait := 10 * time.Millisecond << s.busy
	s.busy++
	slog.Debug("listener busy, trying again", "try", s.busy, "wait", wait)
	time.AfterFunc(wait, func() { s.ring() })
	return true
}

// loop handles every ptrace event of the tree.
func (s *Supervisor) loop() (int, error) {
	for {
		if ws := s.rootStatus; ws != nil {
			return s.end(*ws), nil
		}
		// Asked for at any time: the doorbell may have rung during a
		// checkpoint, which serves (and swallows) its stop.
		if s.detaching() {
			return 0, s.letGo()
		}
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			s.finish()
			return 0, fmt.Errorf("wait for the job: %w", err)
		}
		if ws.Exited() || ws.Signaled() {
			s.forget(pid)
			if pid == s.root {
				return s.end(ws), nil
			}
			continue
		}
		switch {
		case pid == s.waker:
			ptrace.Cont(pid, 0) // the doorbell's signal is swallowed
			s.checkpoints(0)
		case ws.StopSignal() == s.opt.Signal && ptrace.StopEvent(ws) == 0:
			s.checkpoints(pid)
		default:
			s.resume(pid, ws)
		}
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
	switch ev := ptrace.StopEvent(ws); {
	case ev == unix.PTRACE_EVENT_EXEC:
		s.forget(pid) // a new memory: its tracking starts again
		ptrace.Cont(pid, 0)
	case ptrace.GroupStop(ws):
		ptrace.Listen(pid)
	case ev > 0:
		ptrace.Cont(pid, 0)
	default:
		ptrace.Cont(pid, sig)
	}
}

// checkpoints serves a trigger stop of thread first (0: a doorbell).
// Trigger stops already queued are folded in, so a signal sent to several
// processes at once makes one checkpoint; a trigger met while freezing
// asks for one more (s.again). Then the requests that arrived are served,
// again until none is left. Every thread left at a trigger stop is
// continued without the signal: it is never delivered.
func (s *Supervisor) checkpoints(first int) {
	s.stopped = map[int]bool{}
	if first != 0 {
		s.hold(first)
	}
	s.collectQueued()
	s.again = s.again || len(s.stopped) > 0 // the user's own signal
	for {
		s.mu.Lock()
		reqs, due := s.pending, s.due
		s.pending, s.due = nil, false
		s.mu.Unlock()
		if s.rootStatus != nil { // the job ended: nothing left to take
			for _, r := range reqs {
				r.reply <- reply(nil, errRootGone)
			}
			s.again = false
			break
		}
		if !s.again && !due && len(reqs) == 0 {
			break
		}
		if s.again || due {
			s.again = false
			res, err := s.checkpoint(s.opt.Output, false)
			if !s.retryBusy(err) {
				s.report(res, err, s.opt.Output)
			}
		}
		for _, r := range reqs {
			res, err := s.checkpoint(r.Output, r.Kill)
			s.report(res, err, r.Output)
			r.reply <- reply(res, err)
		}
	}
	for tid := range s.stopped {
		ptrace.Cont(tid, 0)
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
		s.handle(pid, ws)
	}
}

// handle serves one event met during a checkpoint (collectQueued, and
// while freeze waits for a process to stop).
func (s *Supervisor) handle(pid int, ws unix.WaitStatus) {
	switch {
	case ws.Exited() || ws.Signaled():
		s.forget(pid)
		if pid == s.root {
			s.rootStatus = &ws
		}
	case pid == s.waker:
		ptrace.Cont(pid, 0)
	case ws.StopSignal() == s.opt.Signal && ptrace.StopEvent(ws) == 0:
		s.triggered(pid)
	default:
		s.resume(pid, ws)
	}
}

// triggered handles a trigger met during a checkpoint: it asks for one
// more. A frozen checkpoint holds the thread for it (it comes next, and
// takes the thread as it is); a live one lets it go on at once, since the
// checkpoint under way may still be writing its image for seconds.
func (s *Supervisor) triggered(tid int) {
	if !s.opt.Live {
		s.hold(tid)
		return
	}
	s.again = true
	ptrace.Cont(tid, 0) // from its signal-delivery-stop: the signal is dropped
}

// hold keeps a thread met at a trigger stop stopped for the checkpoint,
// the trigger dropped and the thread moved to an interrupt stop, as the
// other frozen threads are: at a delivery stop a system call the signal
// interrupted is not restarted yet (its registers still hold
// -ERESTARTSYS), which the kernel settles only once the thread goes on.
// (chpox's death would not deliver the trigger either way: waiting for a
// delivery stop clears its signal.)
func (s *Supervisor) hold(tid int) {
	began := time.Now()
	if _, err := ptrace.Suppress(tid, s.opt.Signal); err != nil {
		s.ended(err) // it exited meanwhile
		return
	}
	slog.Debug("trigger dropped", "tid", tid, "took", time.Since(began))
	s.stopped[tid] = true
}

func (s *Supervisor) report(res *dump.Result, err error, out string) {
	s.count++
	now := time.Now().Format("15:04:05")
	if err != nil {
		w := s.opt.Errors
		if w == nil {
			w = s.opt.Log
		}
		fmt.Fprintf(w, "chpox: checkpoint %d at %s failed: %v (%s still holds the previous checkpoint)\n", s.count, now, err, out)
		return
	}
	reused := ""
	if res.Reused > 0 {
		reused = fmt.Sprintf(", %d unchanged taken from the last image", res.Reused)
	}
	if res.Shared > 0 {
		reused += fmt.Sprintf(", %d of them sharing its blocks", res.Shared)
	}
	fmt.Fprintf(s.opt.Log, "chpox: checkpoint %d at %s: %d processes, %d bytes%s, frozen %s -> %s\n",
		s.count, now, res.Processes, res.Bytes, reused, res.Frozen.Round(time.Microsecond*100), out)
}

// checkpoint freezes the tree (threads at a trigger stop are frozen
// already), writes the image and lets the tree go on.
func (s *Supervisor) checkpoint(out string, kill bool) (*dump.Result, error) {
	res, err := s.take(out, kill)
	s.ended(err)
	return res, err
}

// ended takes in the ends that a wait inside a checkpoint collected: the
// kernel reports an end once, so the loop would never see them. The root's
// is kept (the loop would wait for it forever); any process's tracking is
// let go, as the loop does (its PID may come back as another process's).
func (s *Supervisor) ended(err error) {
	for _, r := range ptrace.Ends(err) {
		s.forget(r.PID)
		if r.PID == s.root && s.rootStatus == nil {
			ws := r.Status
			s.rootStatus = &ws
		}
	}
}

func (s *Supervisor) take(out string, kill bool) (*dump.Result, error) {
	if err := dump.CheckOutput(out, s.root, false); err != nil {
		return nil, err
	}
	// A rewrite of the last image still running ends first (stopped, or
	// renamed into place if it is that far), not with the job frozen, and
	// never next to this checkpoint's own rename.
	s.series.Settle(s.collectQueued)
	if s.opt.Live && !kill {
		res, err := s.liveCheckpoint(out)
		if err != nil {
			s.series.Close() // the next one starts afresh
			s.series = nil
		}
		return res, err
	}
	return s.frozenCheckpoint(out, kill)
}

// frozenCheckpoint keeps the tree frozen while its memory is copied.
func (s *Supervisor) frozenCheckpoint(out string, kill bool) (*dump.Result, error) {
	start := time.Now()
	ms, err := s.freeze()
	if err != nil {
		s.ended(dump.Release(ms))
		return nil, err
	}
	res := &dump.Result{PID: s.root, Processes: len(ms)}
	w, err := s.write(ms, out, kill)
	if err != nil {
		s.ended(dump.Release(ms))
		return nil, err
	}
	res.DataBytes, res.OutsideTCP = int64(w.DataBytes), w.OutsideTCP
	if kill {
		// Commit while still frozen: the job dies only once its image is
		// safe; the release then just lets the SIGKILLs act.
		if err := w.Commit(); err != nil {
			s.ended(dump.Release(ms))
			return nil, err
		}
		for _, m := range ms {
			unix.Kill(m.Info.PID, unix.SIGKILL)
		}
		dump.Release(ms)
		res.Frozen = time.Since(start)
		return res, errors.Join(w.Finish(), statSize(res, out))
	}
	rerr := dump.Release(ms)
	res.Frozen = time.Since(start)
	if err := w.Commit(); err != nil {
		return nil, err
	}
	return res, errors.Join(rerr, statSize(res, out))
}

func statSize(res *dump.Result, out string) error {
	st, err := os.Stat(out)
	if err == nil {
		res.Bytes = st.Size()
	}
	return err
}

func (s *Supervisor) write(ms []*dump.Member, out string, kill bool) (*dump.ImageWriter, error) {
	if err := dump.Collect(ms, int(s.opt.Signal)); err != nil {
		return nil, err
	}
	return dump.Write(ms, out, dump.WriteOptions{Kill: kill, EmbedFiles: s.opt.EmbedFiles})
}

var errRootGone = errors.New("the job's root process is gone")
