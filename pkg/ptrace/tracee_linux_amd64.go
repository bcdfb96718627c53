package ptrace

import (
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// SiginfoSize is sizeof(siginfo_t).
const SiginfoSize = 128

// xstateMax bounds the XSAVE buffer; the kernel trims it to the real size
// (about 2.7 KiB with AVX-512, 11 KiB with AMX).
const xstateMax = 64 << 10

// stubCode is "syscall; int3": run one system call, then trap back to us.
var stubCode = []byte{0x0f, 0x05, 0xcc}

// testHook is called at each step of an injected call through the
// trampoline; the tests of what a tracee does when chpox dies there stop
// the tracer at one of them.
var testHook = func(point string) {}

// ErrExited reports that the tracee died while we worked on it.
var ErrExited = errors.New("process exited")

// Reaped is ErrExited when a wait of this package collected the end
// itself: the kernel reports an end once, so a caller that waits for the
// same process later (chpox run's loop, for its job's root) would wait
// forever; it learns the status here instead (Ends).
type Reaped struct {
	PID    int
	Status unix.WaitStatus
}

func (e *Reaped) Error() string { return fmt.Sprintf("%v (status %#x)", ErrExited, uint32(e.Status)) }
func (e *Reaped) Unwrap() error { return ErrExited }

// Ends lists the ends in err (joined errors included) that waits of this
// package collected.
func Ends(err error) []*Reaped {
	switch e := err.(type) {
	case nil:
		return nil
	case *Reaped:
		return []*Reaped{e}
	case interface{ Unwrap() []error }:
		var out []*Reaped
		for _, sub := range e.Unwrap() {
			out = append(out, Ends(sub)...)
		}
		return out
	}
	return Ends(errors.Unwrap(err))
}

// Error is a failed operation on one tracee.
type Error struct {
	PID int
	Op  string
	Err error
}

func (e *Error) Error() string { return fmt.Sprintf("pid %d: %s: %v", e.PID, e.Op, e.Err) }
func (e *Error) Unwrap() error { return e.Err }

// Tracee is a process stopped under ptrace. All methods must run on the
// Tracer thread that attached to it.
type Tracee struct {
	PID int
	// Regs are the registers at the stop; Detach puts them back.
	Regs unix.PtraceRegs
	// Children lists PIDs reported by fork/clone events during injection.
	Children []int
	// Guard, if set, is asked before every injected call with its number,
	// arguments and the address after its syscall instruction (what a
	// seccomp filter sees); an error stops the call from being made.
	Guard func(nr uint64, args []uint64, ip uint64) error

	stub      uint64 // address of stubCode in the tracee
	stubOrig  []byte // bytes the stub overwrote, if it was poked into tracee code
	stubWord  uint64 // word-aligned address of the poke
	tramp     *Trampoline
	inTramp   bool // the registers point into the trampoline (Undo leaves it first)
	maskSaved bool
	mask      uint64
	deferred  int         // a signal caught at a stop, re-delivered on release
	keep      bool        // stays traced after Release (a `chpox run` tracee)
	groupStop bool        // was in a job-control stop; Release stops it again
	stopSig   unix.Signal // the signal of that stop (SIGSTOP, SIGTSTP ...)
	swallowed bool        // Interrupt met the signal it was told to keep back
	execed    bool        // Interrupt continued an exec event of it
	// other, while set, gets the stops and exits of other tracees that
	// come while this one is waited for (InterruptServing).
	other     func(pid int, ws unix.WaitStatus)
	suspended bool // PTRACE_O_SUSPEND_SECCOMP is set (SuspendSeccomp)
}

func (t *Tracee) fail(op string, err error) error {
	if errors.Is(err, unix.ESRCH) {
		err = fmt.Errorf("%w (%w)", ErrExited, err)
	}
	return &Error{PID: t.PID, Op: op, Err: err}
}

// Seize attaches to a running process without stopping it in a way it could
// see (PTRACE_SEIZE, with PTRACE_O_TRACESYSGOOD for Enter's injected calls,
// never EXITKILL: if chpox dies the process goes on) and stops it with
// PTRACE_INTERRUPT.
func Seize(pid int) (*Tracee, error) {
	t := &Tracee{PID: pid}
	if err := SeizeWith(pid, unix.PTRACE_O_TRACESYSGOOD); err != nil {
		return nil, t.fail("ptrace(PTRACE_SEIZE)", errors.Unwrap(err))
	}
	if err := unix.PtraceInterrupt(pid); err != nil {
		unix.PtraceDetach(pid)
		return nil, t.fail("ptrace(PTRACE_INTERRUPT)", err)
	}
	if err := t.settle(0); err != nil {
		unix.PtraceDetach(pid)
		return nil, err
	}
	return t, nil
}

// settle waits for the stop a PTRACE_INTERRUPT asked for. A signal met on
// the way (a signal-delivery-stop comes before the interrupt's trap) is
// delivered at once, so nothing is held back that chpox's death would
// lose: the process is then stopped in the signal's handler, before its
// first instruction, or in a group-stop. The signal swallow (a `chpox run`
// trigger) is suppressed instead. Fork, clone and exec event stops are
// continued: a process frozen in the middle of fork would be dumped with
// the call half done.
func (t *Tracee) settle(swallow unix.Signal) error {
	for {
		ws, err := t.waitStop()
		if err != nil {
			return err
		}
		sig := ws.StopSignal()
		switch cause := StopEvent(ws); {
		case cause == unix.PTRACE_EVENT_STOP:
			t.noteGroupStop(ws)
			return t.LoadRegs()
		case cause > 0:
			t.execed = t.execed || cause == unix.PTRACE_EVENT_EXEC
			sig = 0
		case swallow != 0 && sig == swallow:
			t.swallowed = true
			sig = 0
		}
		if err := unix.PtraceCont(t.PID, int(sig)); err != nil {
			return t.fail("ptrace(PTRACE_CONT)", err)
		}
	}
}

// Attached wraps a process already traced by this thread (a loader started
// with PTRACE_TRACEME, or a child auto-attached through a fork event) and
// waits for its first stop.
func Attached(pid int) (*Tracee, error) {
	t := &Tracee{PID: pid}
	return t, t.waitFirstStop()
}

// waitFirstStop waits for a stop and loads the registers. A real signal
// caught here is kept to be re-delivered on detach, not lost.
func (t *Tracee) waitFirstStop() error {
	ws, err := t.waitStop()
	if err != nil {
		return err
	}
	if sig := ws.StopSignal(); ws.TrapCause() <= 0 && sig != unix.SIGTRAP && sig != unix.SIGSTOP {
		t.deferred = int(sig)
	}
	t.noteGroupStop(ws)
	return t.LoadRegs()
}

// noteGroupStop remembers that the tracee sat in a group-stop (kill
// -STOP, Ctrl-Z): injection runs it, so Release stops it again.
func (t *Tracee) noteGroupStop(ws unix.WaitStatus) {
	if GroupStop(ws) {
		t.groupStop, t.stopSig = true, ws.StopSignal()
	}
}

// StopEvent is the PTRACE_EVENT_* of a stop, 0 for a signal-delivery or
// syscall stop. Unlike WaitStatus.TrapCause it also sees the
// PTRACE_EVENT_STOP of a group-stop, which carries the stop signal, not
// SIGTRAP (status>>16 == PTRACE_EVENT_STOP: man 2 ptrace, "Group-stop").
func StopEvent(ws unix.WaitStatus) int {
	if !ws.Stopped() {
		return -1
	}
	return int(ws>>16) & 0xff
}

// GroupStop tells whether ws is a seized tracee's group-stop (kill -STOP,
// Ctrl-Z), which the tracer keeps with PTRACE_LISTEN. WaitStatus.TrapCause
// cannot tell: it is -1 whenever the stop signal is not SIGTRAP.
func GroupStop(ws unix.WaitStatus) bool {
	return StopEvent(ws) == unix.PTRACE_EVENT_STOP && isStopSignal(ws.StopSignal())
}

func isStopSignal(sig unix.Signal) bool {
	return sig == unix.SIGSTOP || sig == unix.SIGTSTP || sig == unix.SIGTTIN || sig == unix.SIGTTOU
}

// GroupStopped tells whether the tracee was stopped by job control when
// chpox stopped it.
func (t *Tracee) GroupStopped() bool { return t.groupStop }

// GroupStopSignal is the signal of that stop (the group-stop's, which a
// parent's waitpid(WUNTRACED) reports), 0 if not stopped.
func (t *Tracee) GroupStopSignal() unix.Signal {
	if !t.groupStop {
		return 0
	}
	if t.stopSig == 0 {
		return unix.SIGSTOP
	}
	return t.stopSig
}

// StopTimeout bounds the wait for a process to stop after it was asked
// to: one in uninterruptible sleep (a hung NFS read) or waiting for a
// vfork child does not stop, and chpox must not hang with it.
var StopTimeout = 10 * time.Second

// ErrNoStop reports a process that did not stop in time.
var ErrNoStop = errors.New("did not stop (uninterruptible sleep, or waiting for a vfork child?); try again later")

// waitStop is wait with StopTimeout.
func (t *Tracee) waitStop() (unix.WaitStatus, error) {
	deadline := time.Now().Add(StopTimeout)
	for delay := 50 * time.Microsecond; ; delay = min(2*delay, 10*time.Millisecond) {
		var ws unix.WaitStatus
		who := t.PID
		if t.other != nil {
			who = -1
		}
		pid, err := unix.Wait4(who, &ws, unix.WALL|unix.WNOHANG, nil)
		if pid > 0 && pid != t.PID {
			t.other(pid, ws)
			delay = 50 * time.Microsecond
			continue
		}
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return ws, t.fail("wait4", err)
		case pid == t.PID && (ws.Exited() || ws.Signaled()):
			return ws, t.fail("wait4", &Reaped{PID: t.PID, Status: ws})
		case pid == t.PID:
			return ws, nil
		case time.Now().After(deadline):
			return ws, t.fail("stop", fmt.Errorf("%w (waited %v)", ErrNoStop, StopTimeout))
		}
		time.Sleep(delay)
	}
}

func (t *Tracee) wait() (unix.WaitStatus, error) {
	for {
		var ws unix.WaitStatus
		_, err := unix.Wait4(t.PID, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return ws, t.fail("wait4", err)
		}
		if ws.Exited() || ws.Signaled() {
			return ws, t.fail("wait4", &Reaped{PID: t.PID, Status: ws})
		}
		return ws, nil
	}
}

// KeptOptions are the PTRACE_O_* options of the tracees that stay traced
// after Release (`chpox run`'s job, pkg/supervisor sets them), which
// SETOPTIONS replaces as a whole.
var KeptOptions int

// SuspendSeccomp sets (on) or clears PTRACE_O_SUSPEND_SECCOMP on a tracee
// chpox seized itself (its options are PTRACE_O_TRACESYSGOOD only): while
// set, the kernel runs none of the thread's seccomp checks, strict mode
// included (kernel/seccomp.c, __secure_computing). Setting it needs
// CAP_SYS_ADMIN and a tracer not under seccomp itself (kernel/ptrace.c,
// check_ptrace_options); the kernel clears it with the tracer link, at
// detach or at the tracer's death (__ptrace_unlink sets ptrace to 0), so
// an orphan is always sandboxed again. A `chpox run` tracee keeps its
// options, KeptOptions, besides.
func (t *Tracee) SuspendSeccomp(on bool) error {
	if !on && !t.suspended {
		return nil
	}
	opts := unix.PTRACE_O_TRACESYSGOOD
	if t.keep {
		if KeptOptions == 0 {
			return t.fail("ptrace(PTRACE_SETOPTIONS, PTRACE_O_SUSPEND_SECCOMP)", errors.New("the options of this kept tracee are unknown"))
		}
		opts = KeptOptions
	}
	if on {
		opts |= unix.PTRACE_O_SUSPEND_SECCOMP
	}
	if err := unix.PtraceSetOptions(t.PID, opts); err != nil {
		return t.fail("ptrace(PTRACE_SETOPTIONS, PTRACE_O_SUSPEND_SECCOMP)", err)
	}
	t.suspended = on
	return nil
}

// SetOptions sets PTRACE_O_* options.
func (t *Tracee) SetOptions(opts int) error {
	return wrap(t, "ptrace(PTRACE_SETOPTIONS)", unix.PtraceSetOptions(t.PID, opts))
}

func wrap(t *Tracee, op string, err error) error {
	if err != nil {
		return t.fail(op, err)
	}
	return nil
}

// LoadRegs reads the registers into t.Regs.
func (t *Tracee) LoadRegs() error {
	return wrap(t, "ptrace(PTRACE_GETREGS)", unix.PtraceGetRegs(t.PID, &t.Regs))
}

// SetRegs writes registers.
func (t *Tracee) SetRegs(r *unix.PtraceRegs) error {
	return wrap(t, "ptrace(PTRACE_SETREGS)", unix.PtraceSetRegs(t.PID, r))
}

// XState returns the full XSAVE area (x87, SSE, AVX, AVX-512 ...).
func (t *Tracee) XState() ([]byte, error) {
	buf := make([]byte, xstateMax)
	n, err := getRegSet(t.PID, unix.NT_X86_XSTATE, buf)
	if err != nil {
		return nil, t.fail("read xstate", err)
	}
	return buf[:n:n], nil
}

// SetXState writes an XSAVE area taken by XState.
func (t *Tracee) SetXState(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return wrap(t, "write xstate", setRegSet(t.PID, unix.NT_X86_XSTATE, b))
}

// SigMask returns the blocked signal mask.
func (t *Tracee) SigMask() (uint64, error) {
	m, err := getSigMask(t.PID)
	return m, wrap(t, "read signal mask", err)
}

// SetSigMask sets the blocked mask; the first call remembers the old mask
// so that RestoreSigMask (and Detach) can put it back.
func (t *Tracee) SetSigMask(m uint64) error {
	if !t.maskSaved {
		old, err := t.SigMask()
		if err != nil {
			return err
		}
		t.mask, t.maskSaved = old, true
	}
	return wrap(t, "set signal mask", setSigMask(t.PID, m))
}

// KeepSigMask forgets the saved mask: the mask set last stays on detach.
func (t *Tracee) KeepSigMask() { t.maskSaved = false }

// PendingSignals returns the queued siginfos, private to the thread or
// shared by the process, without dequeuing them.
func (t *Tracee) PendingSignals(shared bool) ([][]byte, error) {
	var out [][]byte
	buf := make([]byte, 32*SiginfoSize)
	for {
		n, err := peekSiginfo(t.PID, uint64(len(out)), shared, buf)
		if err != nil {
			return nil, t.fail("read pending signals", err)
		}
		for i := 0; i < n; i++ {
			out = append(out, append([]byte(nil), buf[i*SiginfoSize:(i+1)*SiginfoSize]...))
		}
		if n < len(buf)/SiginfoSize {
			return out, nil
		}
	}
}

// Rseq is a thread's rseq registration as the kernel reports it.
type Rseq struct {
	Addr       uint64
	Size, Sig  uint32
	Flags      uint32
	Registered bool
}

func (t *Tracee) guard(nr uint64, args []uint64) error {
	if t.Guard == nil {
		return nil
	}
	return t.Guard(nr, args, t.stub+syscallInsnLen)
}

// SeccompFilters returns the thread's seccomp filters, oldest first (index
// 0 of PTRACE_SECCOMP_GET_FILTER is the first installed: kernel/seccomp.c,
// get_nth_filter, whatever ptrace(2) says), with the flags of each
// (PTRACE_SECCOMP_GET_METADATA). None for a thread not in filter mode.
func (t *Tracee) SeccompFilters() (progs [][]byte, flags []uint64, err error) {
	for i := 0; ; i++ {
		n, err := seccompFilter(t.PID, i, nil)
		if err == unix.ENOENT || (i == 0 && err == unix.EINVAL) {
			return progs, flags, nil // past the newest; or no filter mode
		}
		if err != nil {
			return nil, nil, t.fail(fmt.Sprintf("ptrace(PTRACE_SECCOMP_GET_FILTER, %d)", i), err)
		}
		buf := make([]byte, 8*n)
		if _, err := seccompFilter(t.PID, i, buf); err != nil {
			return nil, nil, t.fail(fmt.Sprintf("ptrace(PTRACE_SECCOMP_GET_FILTER, %d)", i), err)
		}
		f, err := seccompMetadata(t.PID, i)
		if err != nil {
			return nil, nil, t.fail(fmt.Sprintf("ptrace(PTRACE_SECCOMP_GET_METADATA, %d)", i), err)
		}
		progs, flags = append(progs, buf), append(flags, f)
	}
}

// Rseq returns the rseq registration of the tracee.
func (t *Tracee) Rseq() (Rseq, error) {
	c, err := getRseq(t.PID)
	if err != nil {
		return Rseq{}, t.fail("read rseq configuration", err)
	}
	return Rseq{Addr: c.Addr, Size: c.Size, Sig: c.Sig, Flags: c.Flags, Registered: c.Addr != 0}, nil
}

// DeferredSignal is the signal caught at the first stop, 0 if none. The
// caller records it as pending; Detach re-delivers it.
func (t *Tracee) DeferredSignal() int { return t.deferred }

// DeferredSiginfo returns the siginfo of the deferred signal.
func (t *Tracee) DeferredSiginfo() ([]byte, error) {
	b, err := getSiginfo(t.PID)
	return b, wrap(t, "read siginfo", err)
}

// detachSig detaches and delivers a signal.
func (t *Tracee) detachSig(sig int) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(t.PID), 0, uintptr(sig), 0, 0)
	if e != 0 {
		return t.fail("ptrace(PTRACE_DETACH)", e)
	}
	return nil
}

// Undo restores code, mask and registers, keeping the tracee stopped. It
// tries every step even when one fails, so as much as possible is put back.
// The mask comes back before the registers: a tracee orphaned in between
// still points into the trampoline, whose recovery code puts the rest back.
func (t *Tracee) Undo() error {
	var errs []error
	if t.inTramp {
		if err := t.leaveTrampoline(); err != nil {
			errs = append(errs, err)
		}
	}
	if t.stubOrig != nil {
		if _, err := unix.PtracePokeText(t.PID, uintptr(t.stubWord), t.stubOrig); err != nil {
			errs = append(errs, t.fail("restore code under the syscall stub", err))
		} else {
			t.stubOrig = nil
		}
	}
	if t.maskSaved {
		if err := setSigMask(t.PID, t.mask); err != nil {
			errs = append(errs, t.fail("restore signal mask", err))
		} else {
			t.maskSaved = false
		}
	}
	if t.inTramp {
		testHook("unmasked")
	}
	if err := t.SetRegs(&t.Regs); err != nil {
		errs = append(errs, err)
	} else {
		t.inTramp = false
	}
	return errors.Join(errs...)
}

// Release detaches after Undo (or, for a tracee that stays traced, lets it
// continue), re-delivering a signal caught at the first stop so that the
// tracee sees it as if chpox had never been there.
func (t *Tracee) Release() error {
	err := t.Undo()
	sig := t.deferred
	if t.groupStop {
		if sig != 0 {
			// Both a caught signal and a group-stop: queue the signal
			// again (its siginfo becomes tkill's) so that SIGCONT finds
			// it pending, as it would have been.
			unix.Syscall(unix.SYS_TKILL, uintptr(t.PID), uintptr(sig), 0)
		}
		// Back into the group-stop it was in. Detached while its group
		// is stopped, the kernel puts it back there itself (kernel/ptrace.c,
		// __ptrace_unlink), and a stopped group keeps its stop signal
		// (kernel/signal.c, do_signal_stop): what its parent's wait
		// reports does not change. A stop signal that arrived during the
		// dump and was kept back is delivered now, the same signal.
		sig = int(t.GroupStopSignal())
	}
	if t.keep {
		if t.groupStop {
			// A signal given with PTRACE_CONT at an interrupt stop is
			// ignored (ptrace(2)), and the tracee would run: the stop
			// signal is queued again instead, and stops it at its
			// delivery, which the tracer passes on (back to the
			// group-stop, kept with PTRACE_LISTEN).
			unix.Syscall(unix.SYS_TKILL, uintptr(t.PID), uintptr(sig), 0)
			sig = 0
		}
		if cerr := unix.PtraceCont(t.PID, sig); cerr != nil && err == nil {
			err = t.fail("ptrace(PTRACE_CONT)", cerr)
		}
		return err
	}
	if derr := t.detachSig(sig); derr != nil && err == nil {
		err = derr
	}
	return err
}

// Interrupt stops a process this thread already traces (seized) and
// returns it; Release lets it continue, still traced. Fork, clone and exec
// event stops on the way are continued: a process frozen in the middle of
// fork would be dumped with the call half done. A stop for signal swallow
// (a checkpoint trigger) is reported by Swallowed and never delivered.
//
// The tracee must have PTRACE_O_TRACESYSGOOD set (chpox run seizes its job
// with it) for injected calls through a Trampoline.
func Interrupt(pid int, swallow unix.Signal) (*Tracee, error) {
	return InterruptServing(pid, swallow, nil)
}

// InterruptServing is Interrupt for a tracer of other processes too (chpox
// run): while it waits, their stops and exits go to other. A parent in
// vfork stops only once its child exec'd, and the child may sit at a stop
// of its own that nobody else would serve.
func InterruptServing(pid int, swallow unix.Signal, other func(pid int, ws unix.WaitStatus)) (*Tracee, error) {
	t := &Tracee{PID: pid, keep: true, other: other}
	defer func() { t.other = nil }()
	if err := unix.PtraceInterrupt(pid); err != nil {
		return nil, t.fail("ptrace(PTRACE_INTERRUPT)", err)
	}
	if err := t.settle(swallow); err != nil {
		return nil, err
	}
	return t, nil
}

// Swallowed tells whether Interrupt met (and kept back) the swallow signal.
func (t *Tracee) Swallowed() bool { return t.swallowed }

// StayTraced makes Release let the tracee go on still traced, as the
// tracees of Interrupt are: chpox run --attach keeps the tree it seized.
func (t *Tracee) StayTraced() { t.keep = true }

// Execed tells whether Interrupt met an exec of the process on the way to
// its stop (it continued it): the process has a new memory since, and a
// caller that follows execs (chpox run) would not see that exec otherwise.
func (t *Tracee) Execed() bool { return t.execed }

// Suppress turns a signal-delivery-stop for swallow, which the caller
// has waited for, into an interrupt stop: the signal is dropped now, so
// it is not delivered to the job should chpox die before the tracee is
// continued. It reports whether another swallow signal came meanwhile.
func Suppress(pid int, swallow unix.Signal) (again bool, err error) {
	t := &Tracee{PID: pid, keep: true}
	if err := unix.PtraceInterrupt(pid); err != nil {
		return false, t.fail("ptrace(PTRACE_INTERRUPT)", err)
	}
	if err := unix.PtraceCont(pid, 0); err != nil {
		return false, t.fail("ptrace(PTRACE_CONT)", err)
	}
	err = t.settle(swallow)
	return t.swallowed, err
}

// Stopped wraps a traced process the caller has already waited for in an
// interrupt stop (see Suppress).
func Stopped(pid int) (*Tracee, error) {
	t := &Tracee{PID: pid, keep: true}
	return t, t.LoadRegs()
}

// DetachAsIs detaches without touching registers: the caller has set the
// final state (restore). A non-zero sig is delivered (SIGSTOP: the process
// comes back stopped, as it was).
func (t *Tracee) DetachAsIs(sig unix.Signal) error {
	return t.detachSig(int(sig))
}

// Kill sends SIGKILL to the tracee's process and reaps it and the given
// other threads of it, all traced by this thread.
func (t *Tracee) Kill(threads ...*Tracee) {
	unix.Kill(t.PID, unix.SIGKILL)
	// Traced threads that die stay zombies until their tracer reaps them,
	// and the leader cannot be reaped before them: reap the others first
	// or the wait for the leader never returns.
	for _, th := range threads {
		if th != t {
			reap(th.PID)
		}
	}
	reap(t.PID)
}

func reap(pid int) {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if err != unix.EINTR {
			return
		}
	}
}

// PokeStub writes the syscall stub over the tracee's own code at the current
// instruction (word-aligned so the poke never crosses a page). Undo puts the
// original bytes back.
func (t *Tracee) PokeStub() error { return t.PokeStubAt(t.Regs.Rip) }

// PokeStubAt writes the stub at the word holding addr, which must be in
// executable private memory of the tracee.
func (t *Tracee) PokeStubAt(addr uint64) error {
	word := addr &^ 7
	orig := make([]byte, 8)
	if _, err := unix.PtracePeekText(t.PID, uintptr(word), orig); err != nil {
		return t.fail("read code for the syscall stub", err)
	}
	code := append([]byte(nil), orig...)
	copy(code, stubCode)
	if _, err := unix.PtracePokeText(t.PID, uintptr(word), code); err != nil {
		return t.fail("write the syscall stub", err)
	}
	t.stubOrig, t.stubWord, t.stub = orig, word, word
	return nil
}

// Stub is the address of the syscall stub in use.
func (t *Tracee) Stub() uint64 { return t.stub }

// UseStub points injection at a stub the caller placed in tracee memory.
func (t *Tracee) UseStub(addr uint64) { t.stub = addr }

// StubCode is the stub's machine code, for callers that place it.
func StubCode() []byte { return append([]byte(nil), stubCode...) }

// Syscall runs one system call in the tracee and returns its result. Errors
// returned by the call come back as unix.Errno.
func (t *Tracee) Syscall(nr uint64, args ...uint64) (uint64, error) {
	if err := t.guard(nr, args); err != nil {
		return 0, err
	}
	if t.tramp != nil {
		return t.trampSyscall(nr, args)
	}
	if err := t.start(nr, args); err != nil {
		return 0, err
	}
	if err := t.runTo(unix.SIGTRAP, t.stub+uint64(len(stubCode))); err != nil {
		return 0, err
	}
	var r unix.PtraceRegs
	if err := unix.PtraceGetRegs(t.PID, &r); err != nil {
		return 0, t.fail("ptrace(PTRACE_GETREGS)", err)
	}
	if int64(r.Rax) < 0 && int64(r.Rax) > -4096 {
		return 0, unix.Errno(-int64(r.Rax))
	}
	return r.Rax, nil
}

func (t *Tracee) start(nr uint64, args []uint64) error {
	if err := t.setCall(nr, args); err != nil {
		return err
	}
	return wrap(t, "ptrace(PTRACE_CONT)", unix.PtraceCont(t.PID, 0))
}

// setCall loads the registers for one injected call at the stub.
func (t *Tracee) setCall(nr uint64, args []uint64) error {
	r := t.Regs
	r.Rip = t.stub
	r.Rax = nr
	// orig_rax -1: the kernel must not apply syscall-restart logic to the
	// injected registers (arch/x86/kernel/signal.c, arch_do_signal_or_restart).
	r.Orig_rax = ^uint64(0)
	dst := []*uint64{&r.Rdi, &r.Rsi, &r.Rdx, &r.R10, &r.R8, &r.R9}
	for i, a := range args {
		*dst[i] = a
	}
	return t.SetRegs(&r)
}

// runTo resumes until the tracee stops with sig at rip, continuing through
// fork/clone events (recording the children) and interrupt stops.
func (t *Tracee) runTo(sig unix.Signal, rip uint64) error {
	for {
		ws, err := t.wait()
		if err != nil {
			return err
		}
		switch cause := ws.TrapCause(); {
		case cause == unix.PTRACE_EVENT_FORK || cause == unix.PTRACE_EVENT_CLONE || cause == unix.PTRACE_EVENT_VFORK:
			msg, err := unix.PtraceGetEventMsg(t.PID)
			if err != nil {
				return t.fail("ptrace(PTRACE_GETEVENTMSG)", err)
			}
			t.Children = append(t.Children, int(msg))
		case cause > 0: // interrupt or group stop: just go on
		case isStopSignal(ws.StopSignal()):
			// Job control wants the process stopped (it was, or is being,
			// stopped): kept back now, Release stops it again.
			t.groupStop, t.stopSig = true, ws.StopSignal()
		case ws.StopSignal() == sig:
			var r unix.PtraceRegs
			if err := unix.PtraceGetRegs(t.PID, &r); err != nil {
				return t.fail("ptrace(PTRACE_GETREGS)", err)
			}
			if r.Rip == rip {
				return nil
			}
			return t.fail("injected syscall", fmt.Errorf("stopped by %v at %#x, expected %#x", sig, r.Rip, rip))
		default:
			return t.fail("injected syscall", fmt.Errorf("unexpected signal %v", ws.StopSignal()))
		}
		if err := unix.PtraceCont(t.PID, 0); err != nil {
			return t.fail("ptrace(PTRACE_CONT)", err)
		}
	}
}

// SyscallLast runs a system call that removes the stub itself (munmap of the
// scratch page) and stops at its syscall-exit, before the tracee could fetch
// the int3 from the unmapped page: a fault there would make the kernel reset
// the SIGSEGV handler (kernel/signal.c, force_sig_info_to_task). Needs
// PTRACE_O_TRACESYSGOOD. The tracee stays stopped for its final registers.
func (t *Tracee) SyscallLast(nr uint64, args ...uint64) (uint64, error) {
	if err := t.guard(nr, args); err != nil {
		return 0, err
	}
	if err := t.setCall(nr, args); err != nil {
		return 0, err
	}
	for stops := 0; stops < 2; stops++ { // syscall-entry, then syscall-exit
		if err := unix.PtraceSyscall(t.PID, 0); err != nil {
			return 0, t.fail("ptrace(PTRACE_SYSCALL)", err)
		}
		ws, err := t.wait()
		if err != nil {
			return 0, err
		}
		if ws.StopSignal() != unix.SIGTRAP|0x80 {
			return 0, t.fail("injected syscall", fmt.Errorf("unexpected stop %v", ws.StopSignal()))
		}
	}
	var out unix.PtraceRegs
	if err := unix.PtraceGetRegs(t.PID, &out); err != nil {
		return 0, t.fail("ptrace(PTRACE_GETREGS)", err)
	}
	if int64(out.Rax) < 0 && int64(out.Rax) > -4096 {
		return 0, unix.Errno(-int64(out.Rax))
	}
	return out.Rax, nil
}

// Exit makes the tracee exit: with the system call nr (exit_group) when
// sig is 0, or by delivering sig (whose action the caller made fatal). It
// waits until the tracer side of the exit is reaped; the process stays a
// zombie for its real parent, as it was at the checkpoint.
func (t *Tracee) Exit(sig int, nr uint64, args ...uint64) error {
	if sig == 0 {
		if err := t.setCall(nr, args); err != nil {
			return err
		}
	}
	if err := unix.PtraceCont(t.PID, sig); err != nil {
		return t.fail("ptrace(PTRACE_CONT)", err)
	}
	for stops := 0; ; stops++ {
		var ws unix.WaitStatus
		_, err := unix.Wait4(t.PID, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return t.fail("wait4", err)
		}
		if ws.Exited() || ws.Signaled() {
			return nil
		}
		if stops == 8 {
			// The signal did not end it (its action is not fatal): stop.
			unix.Kill(t.PID, unix.SIGKILL)
			return t.fail("exit", fmt.Errorf("signal %d did not end the process", sig))
		}
		// A stop on the way out (the signal's own delivery stop): go on
		// with the signal.
		if err := unix.PtraceCont(t.PID, sig); err != nil {
			return t.fail("ptrace(PTRACE_CONT)", err)
		}
	}
}

// Enter prepares injected calls through the trampoline tr of the
// tracee's process: it writes the save block with the registers at the
// stop and the blocked mask, from which the recovery code after each
// call's `syscall` puts the thread back if chpox dies. One thread at a
// time may be entered per process (they share the block); Undo leaves.
func (t *Tracee) Enter(tr *Trampoline) error {
	mask, err := t.SigMask()
	if err != nil {
		return err
	}
	if t.maskSaved {
		mask = t.mask
	}
	if err := pokeMem(t.PID, tr.Block, saveBlock(t.Regs, mask)); err != nil {
		return t.fail("write the trampoline's save block", err)
	}
	t.tramp, t.stub = tr, tr.Code
	return nil
}

// Leave undoes Enter: the tracee is back at its own registers and mask,
// stopped, and later Syscalls are refused until the next Enter.
func (t *Tracee) Leave() error {
	err := t.Undo()
	t.tramp, t.stub = nil, 0
	return err
}

// trampSyscall runs one call at the trampoline, driven by PTRACE_SYSCALL
// from the syscall-entry to the syscall-exit stop: while chpox lives, the
// tracee never runs the recovery code after the call. If chpox dies at
// any point, the orphan runs the call and then the recovery code.
func (t *Tracee) trampSyscall(nr uint64, args []uint64) (uint64, error) {
	if err := t.setCall(nr, args); err != nil {
		return 0, err
	}
	t.inTramp = true
	testHook("regs")
	// All signals blocked only once rip points into the trampoline, whose
	// recovery code puts the mask back (Undo does the reverse).
	if !t.maskSaved {
		if err := t.SetSigMask(AllSignals); err != nil {
			return 0, err
		}
	}
	testHook("mask")
	for stops := 0; ; {
		if err := unix.PtraceSyscall(t.PID, 0); err != nil {
			return 0, t.fail("ptrace(PTRACE_SYSCALL)", err)
		}
		ws, err := t.wait()
		if err != nil {
			return 0, err
		}
		switch cause := StopEvent(ws); {
		case ws.StopSignal() == unix.SIGTRAP|0x80:
			// The syscall-entry stop, then the syscall-exit stop.
			if stops++; stops < 2 {
				testHook("entry")
				continue
			}
			testHook("exit")
			var r unix.PtraceRegs
			if err := unix.PtraceGetRegs(t.PID, &r); err != nil {
				return 0, t.fail("ptrace(PTRACE_GETREGS)", err)
			}
			if r.Rip != t.stub+syscallInsnLen {
				return 0, t.fail("injected syscall", fmt.Errorf("syscall-exit stop at %#x, expected %#x", r.Rip, t.stub+syscallInsnLen))
			}
			if int64(r.Rax) < 0 && int64(r.Rax) > -4096 {
				return 0, unix.Errno(-int64(r.Rax))
			}
			return r.Rax, nil
		case cause > 0: // an interrupt or group-stop trap: go on
		case isStopSignal(ws.StopSignal()):
			t.groupStop, t.stopSig = true, ws.StopSignal() // kept back now, Release stops it again
		default:
			return 0, t.fail("injected syscall", fmt.Errorf("unexpected signal %v", ws.StopSignal()))
		}
	}
}

// leaveTrampoline moves a tracee stopped at a syscall-exit stop in the
// trampoline to an interrupt stop before its registers are put back: from
// there (inside get_signal) the kernel applies its own restart rules to
// an interrupted call of the thread (arch_do_signal_or_restart), which it
// would skip on the way out of a syscall-exit stop. The tracee runs no
// instruction meanwhile: the trap comes on its way to user space.
func (t *Tracee) leaveTrampoline() error {
	if err := unix.PtraceInterrupt(t.PID); err != nil {
		return t.fail("ptrace(PTRACE_INTERRUPT)", err)
	}
	if err := unix.PtraceCont(t.PID, 0); err != nil {
		return t.fail("ptrace(PTRACE_CONT)", err)
	}
	for {
		ws, err := t.waitStop()
		if err != nil {
			return err
		}
		switch cause := StopEvent(ws); {
		case cause == unix.PTRACE_EVENT_STOP:
			testHook("interrupt")
			return nil
		case cause > 0:
		case isStopSignal(ws.StopSignal()):
			t.groupStop, t.stopSig = true, ws.StopSignal()
		default:
			return t.fail("leave the trampoline", fmt.Errorf("unexpected signal %v", ws.StopSignal()))
		}
		if err := unix.PtraceCont(t.PID, 0); err != nil {
			return t.fail("ptrace(PTRACE_CONT)", err)
		}
	}
}

// StepOut lets a thread found inside tr's code (an orphan of an earlier
// chpox that died mid-injection, still on its way back) run to the end of
// the recovery code by single steps, so that its registers are its own
// again and the save block it reads is not overwritten under it.
func (t *Tracee) StepOut(tr *Trampoline) error {
	for steps := 0; tr.Contains(t.Regs.Rip); steps++ {
		if steps > 4*len(tramCode) {
			return t.fail("step out of the trampoline", fmt.Errorf("still at %#x", t.Regs.Rip))
		}
		sig := 0
		for {
			if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SINGLESTEP, uintptr(t.PID), 0, uintptr(sig), 0, 0); e != 0 {
				return t.fail("ptrace(PTRACE_SINGLESTEP)", e)
			}
			ws, err := t.waitStop()
			if err != nil {
				return err
			}
			if ws.StopSignal() == unix.SIGTRAP && StopEvent(ws) == 0 {
				break // the step's trap
			}
			if StopEvent(ws) > 0 {
				t.noteGroupStop(ws)
				sig = 0
				continue
			}
			sig = int(ws.StopSignal()) // a signal unblocked by the recovery: deliver it
		}
		if err := t.LoadRegs(); err != nil {
			return err
		}
	}
	return nil
}

// GroupStop puts a traced process, stopped at a syscall-exit stop with its
// final registers (restore), into the group-stop that sig (a job-control
// stop signal) makes, as job control would have: the parent's waitpid then
// reports WSTOPSIG sig, and SIGCONT resumes it. PTRACE_CONT with a signal
// from a syscall-exit stop sends it (include/linux/ptrace.h,
// ptrace_report_syscall); at its delivery stop it is let through, and the
// tracee stops in do_signal_stop, where a non-seized tracee reports the
// stop signal again (kernel/signal.c, do_jobctl_trap). The caller blocks
// every other signal first: no handler may run. The other threads are let
// into the group-stop too, so it is complete (and the parent told) before
// detach; detaching keeps them in it (kernel/ptrace.c, __ptrace_unlink).
// The process runs no instruction of its own.
func (t *Tracee) GroupStop(sig unix.Signal, others []*Tracee) error {
	if err := unix.PtraceCont(t.PID, int(sig)); err != nil {
		return t.fail("ptrace(PTRACE_CONT)", err)
	}
	ws, err := t.wait()
	if err != nil {
		return err
	}
	if ws.StopSignal() != sig || ws.TrapCause() > 0 {
		return t.fail("stop it again", fmt.Errorf("stop %v (status %#x) before the delivery of %v", ws.StopSignal(), uint32(ws), sig))
	}
	if err := unix.PtraceCont(t.PID, int(sig)); err != nil {
		return t.fail("ptrace(PTRACE_CONT)", err)
	}
	if err := t.waitGroupStop(sig); err != nil {
		return err
	}
	for _, o := range others {
		if err := unix.PtraceCont(o.PID, 0); err != nil {
			return o.fail("ptrace(PTRACE_CONT)", err)
		}
		if err := o.waitGroupStop(sig); err != nil {
			return err
		}
	}
	t.groupStop, t.stopSig = true, sig
	return nil
}

// waitGroupStop waits for the group-stop report of sig: a stop with that
// signal for which PTRACE_GETSIGINFO fails (man 2 ptrace, "Group-stop").
func (t *Tracee) waitGroupStop(sig unix.Signal) error {
	ws, err := t.wait()
	if err != nil {
		return err
	}
	if ws.StopSignal() != sig {
		return t.fail("stop it again", fmt.Errorf("stop %v (status %#x), want the group-stop of %v", ws.StopSignal(), uint32(ws), sig))
	}
	if _, err := getSiginfo(t.PID); err == nil {
		return t.fail("stop it again", fmt.Errorf("%v was not acted on (the kernel ignores SIGTSTP, SIGTTIN and SIGTTOU in an orphaned process group)", sig))
	}
	return nil
}
