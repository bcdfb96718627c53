// Package dump takes a checkpoint of a running process tree: it freezes
// every process under ptrace, gathers their state from /proc, from ptrace
// and from a few injected system calls, finds what they share (open file
// descriptions, pipes, shared memory), copies memory into a new image and
// lets them go on. A failed dump leaves every process running exactly as
// before and the previous image untouched.
package dump

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
	"github.com/chpox/chpox/pkg/objects/inet"
	"github.com/chpox/chpox/pkg/objects/sysv"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/ptrace"
)

// Version is written into images as the tool that made them.
var Version = "chpox-dev"

// ErrUnsupported is returned (wrapped) when a process holds something chpox
// cannot checkpoint yet; the error text names it.
var ErrUnsupported = procinfo.ErrUnsupported

// Options control one dump.
type Options struct {
	Output     string
	Kill       bool // SIGKILL the tree after a successful dump
	NoChildren bool // dump the named process only
	// IPC names System V objects that belong to the checkpoint beyond
	// those the rule finds (docs/usage.md).
	IPC []sysv.Ref
	// Interrupted, if set, is asked between steps; true abandons the dump:
	// the processes are released unchanged and nothing is written.
	Interrupted func() bool
	// Progress, if set, counts the data bytes as they are written.
	Progress *format.Progress
	// Compress stores the data section as zstd chunks (format.WriteOptions).
	Compress bool
	// Live copies memory while the tree runs (pkg/dump/live.go); it is
	// frozen only to start write tracking and for the final state.
	Live bool
	// EmbedFiles stores the mapped files in the image (--embed-files).
	EmbedFiles bool
}

// ErrInterrupted reports a dump abandoned on request.
var ErrInterrupted = errors.New("interrupted: no image written; the processes run on unchanged")

func (o Options) interrupted() bool { return o.Interrupted != nil && o.Interrupted() }

// Result describes a finished dump.
type Result struct {
	PID       int
	Processes int
	LeftOut   []int         // children not dumped (NoChildren)
	Bytes     int64         // size of the image file
	DataBytes int64         // memory, pipe and file contents
	Frozen    time.Duration // how long the processes were stopped
	// OutsideTCP counts the established TCP connections to peers outside
	// the checkpoint (cmd/chpox says what the image will do with them).
	OutsideTCP int
	// SysV counts the System V IPC objects in the image (segments,
	// semaphore sets, message queues).
	SysV int
	// Live: Rounds of copying while the tree ran, or NotLive, why --live
	// fell back to copying memory frozen.
	Rounds  int
	NotLive string
	// Reused: data bytes taken from the last image (an incremental
	// checkpoint), Shared of them without writing (shared blocks).
	Reused, Shared int64
}

// Member is one process of a frozen tree.
type Member struct {
	Info   *procinfo.Info
	T      *ptrace.Tracee   // the main thread; nil for a zombie
	Others []*ptrace.Tracee // the other threads
}

// Threads lists the main thread first, then the others.
func (m *Member) Threads() []*ptrace.Tracee { return append([]*ptrace.Tracee{m.T}, m.Others...) }

// FreezeThreads stops every other thread of m's process with stop (a
// seize, or an interrupt for threads already traced). Threads are listed
// again until no new one appears: once all listed threads are stopped,
// none can start another.
func (m *Member) FreezeThreads(stop func(tid int) (*ptrace.Tracee, error)) error {
	have := map[int]bool{m.T.PID: true}
	for _, t := range m.Others {
		have[t.PID] = true
	}
	for {
		tids, err := procinfo.TIDs(m.Info.PID)
		if err != nil {
			return err
		}
		added := false
		for _, tid := range tids {
			if have[tid] {
				continue
			}
			if procinfo.IOWorker(m.Info.PID, tid) {
				// Seen with node (libuv) under UV_USE_IO_URING=1: the
				// first injected call into this thread waited forever.
				return fmt.Errorf("process %d uses io_uring (thread %d, %s, is the kernel's io_uring worker), which chpox cannot checkpoint: %w",
					m.Info.PID, tid, procinfo.ThreadComm(tid), ErrUnsupported)
			}
			t, err := stop(tid)
			if errors.Is(err, ptrace.ErrExited) || (err != nil && !procinfo.ThreadAlive(m.Info.PID, tid)) {
				continue // the thread ended meanwhile (an exiting thread refuses PTRACE_SEIZE)
			}
			if err != nil {
				return err
			}
			have[tid], added = true, true
			m.Others = append(m.Others, t)
		}
		if !added {
			return nil
		}
	}
}

// AcceptTries is how many times Dump freezes a tree whose TCP listeners
// keep holding connections not yet accepted (10 ms, 20 ms ... between).
var AcceptTries = 8

// Dump checkpoints pid and, unless opt.NoChildren, its descendants.
func Dump(tr *ptrace.Tracer, pid int, opt Options) (*Result, error) {
	res := &Result{PID: pid}
	if opt.Output != "-" {
		if err := CheckOutput(opt.Output, pid, opt.NoChildren); err != nil {
			return nil, fmt.Errorf("dump %d: %w", pid, err)
		}
	}
	var err error
	// A busy server's listener often holds connections it has not accepted
	// yet, which the image cannot keep: let it run a moment and try again.
	for try, wait := 1, 10*time.Millisecond; ; try, wait = try+1, wait*2 {
		err = tr.Do(func() error { return dumpTree(pid, opt, res) })
		if !errors.Is(err, inet.ErrAcceptQueue) || try == AcceptTries || opt.interrupted() {
			break
		}
		slog.Debug("listener busy, trying again", "pid", pid, "try", try, "wait", wait)
		time.Sleep(wait)
	}
	if errors.Is(err, inet.ErrAcceptQueue) {
		err = fmt.Errorf("%w (tried %d times; dump again when the server is less busy)", err, AcceptTries)
	}
	if err != nil {
		return nil, err
	}
	if opt.Output == "-" {
		return res, nil // res.Bytes was counted as written
	}
	st, err := os.Stat(opt.Output)
	if err != nil {
		return nil, fmt.Errorf("dump %d: %w", pid, err)
	}
	res.Bytes = st.Size()
	return res, nil
}

func dumpTree(pid int, opt Options, res *Result) (err error) {
	unlock, err := lockPIDs([]int{pid})
	if err != nil {
		return fmt.Errorf("dump %d: %w", pid, err)
	}
	defer unlock()
	if opt.Live {
		err := dumpLive(pid, opt, res)
		if !errors.Is(err, errNoLive) {
			return err
		}
		res.NotLive = err.Error()
		slog.Info("live copy not possible, copying memory frozen", "pid", pid, "why", err)
	}
	return frozenDump(pid, opt, res, nil)
}

// frozenDump freezes the tree and writes its image. With live, memory
// comes from its staged copy and the tree is released as soon as the
// pages written since the last round are staged.
func frozenDump(pid int, opt Options, res *Result, live *liveDump) (err error) {
	ms, err := freezeTree(pid, opt.NoChildren)
	if err != nil {
		return fmt.Errorf("dump %d: %w", pid, err)
	}
	frozenAt := time.Now()
	if live != nil {
		live.frozen = frozenAt
	}
	released := false
	defer func() {
		if !released {
			if rerr := Release(ms); rerr != nil {
				err = errors.Join(err, fmt.Errorf("dump %d: resume after failure: %w", pid, rerr))
			}
		}
	}()
	if opt.NoChildren {
		res.LeftOut = ms[0].Info.Children
	}
	if live == nil {
		if err := HealUffds(ms); err != nil {
			return fmt.Errorf("dump %d: %w", pid, err)
		}
	}
	if err := Collect(ms, 0, opt.IPC...); err != nil {
		return fmt.Errorf("dump %d: %w", pid, err)
	}
	slog.Debug("frozen: state collected", "since", time.Since(frozenAt))
	if opt.interrupted() {
		return fmt.Errorf("dump %d: %w", pid, ErrInterrupted)
	}
	release := func() error {
		released = true
		err := Release(ms)
		res.Frozen = time.Since(frozenAt)
		return err
	}
	// The staged pages of a live copy are in chpox's memory already: past
	// the page cache they go once to the disk instead of being copied into
	// as much fresh memory first (live is nil when the copy is frozen).
	// Not in chpox run's series: there the next checkpoint reads what it
	// reuses from this image, and on a file system without shared blocks
	// its page cache is what makes that cheap.
	fopt := format.WriteOptions{Compress: opt.Compress, Direct: live != nil}
	w, err := writeImage(ms, opt.Output, WriteOptions{Kill: opt.Kill, Progress: opt.Progress,
		Format: fopt, IPC: opt.IPC, EmbedFiles: opt.EmbedFiles, Serve: Background}, live, release)
	if err != nil {
		return fmt.Errorf("dump %d: %w", pid, err)
	}
	if opt.interrupted() {
		w.Abort()
		return fmt.Errorf("dump %d: %w", pid, ErrInterrupted)
	}
	res.Processes, res.DataBytes, res.OutsideTCP = len(ms), int64(w.DataBytes), w.OutsideTCP
	if sv := w.sysv; sv != nil {
		res.SysV = len(sv.Shm) + len(sv.Sem) + len(sv.Msg)
	}
	defer func() { res.Bytes = w.Size() }()
	if opt.Kill {
		// Still frozen: nothing can change after the checkpoint.
		if err := w.Commit(); err != nil {
			return err
		}
		released = true
		for _, m := range ms {
			unix.Kill(m.Info.PID, unix.SIGKILL)
		}
		Release(ms) // detaching lets the SIGKILLs act
		res.Frozen = time.Since(frozenAt)
		reapKilled(ms)
		return w.Finish()
	}
	if !released {
		if err := release(); err != nil {
			w.Abort()
			return fmt.Errorf("dump %d: resume: %w", pid, err)
		}
	}
	slog.Debug("tree resumed", "pid", pid, "processes", len(ms), "frozen", res.Frozen)
	return Background(w.Commit) // fsync and rename while the processes run
}

// reapKilled waits, as their tracer, for the threads killed after the
// checkpoint. A thread that died before it could be detached stays a
// zombie of its tracer, holding its TID (and the leader, and so the PID,
// with it) until the tracer waits for it or exits: a long-lived caller of
// Dump, like a benchmark that restores at once, would find the PID taken.
// A process whose real parent is elsewhere goes on to that parent once
// its tracer has waited (ptrace(2)). Bounded: 5 s in all.
func reapKilled(ms []*Member) {
	deadline := time.Now().Add(5 * time.Second)
	for _, m := range ms {
		if m.T == nil {
			continue
		}
		// The leader is reported only once the other threads are gone.
		for _, t := range append(append([]*ptrace.Tracee(nil), m.Others...), m.T) {
			for {
				var ws unix.WaitStatus
				pid, err := unix.Wait4(t.PID, &ws, unix.WALL|unix.WNOHANG, nil)
				if (pid == t.PID && (ws.Exited() || ws.Signaled())) || (err != nil && err != unix.EINTR) || time.Now().After(deadline) {
					break // reaped, or not ours (it was detached)
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
	nudgeParent(ms[0])
}

// nudgeParent sends SIGCHLD to the root's parent outside the tree when
// the killed root is still its unreaped zombie a moment later. Seen here
// with tmux (its pane's process, killed after a dump, stayed a zombie
// until the server got another SIGCHLD, and a restore in the next window
// found its PID taken); a shell's `kill -9` of the same process is reaped
// at once. A SIGCHLD with nothing more to reap is harmless to a parent.
func nudgeParent(root *Member) {
	pid, ppid := root.Info.PID, root.Info.PPID
	if ppid <= 1 || ppid == os.Getpid() {
		return
	}
	for i := 0; i < 20; i++ {
		if st, _, err := procinfo.State(pid); err != nil || st != "Z" {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	unix.Kill(ppid, unix.SIGCHLD)
}

// freezeTree seizes root and then, top-down, its descendants: a process is
// listed for children only after it is frozen, so none can appear unseen.
// FreezeTree seizes and stops root and all its descendants, as a dump
// does (chpox run --attach).
func FreezeTree(root int) ([]*Member, error) { return freezeTree(root, false) }

func freezeTree(root int, noChildren bool) ([]*Member, error) {
	var ms []*Member
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		m, err := freezeOne(pid, pid == root)
		if err != nil {
			Release(ms)
			return nil, err
		}
		if m == nil {
			continue // a child that exited meanwhile
		}
		ms = append(ms, m)
		if !noChildren {
			queue = append(queue, m.Info.Children...)
		}
	}
	return ms, nil
}

func freezeOne(pid int, isRoot bool) (*Member, error) {
	in, err := procinfo.Read(pid)
	if err != nil {
		if !isRoot && errors.Is(err, procinfo.ErrNoProcess) {
			return nil, nil
		}
		return nil, err
	}
	if in.Zombie {
		if isRoot {
			return nil, fmt.Errorf("process %d is a zombie (it exited; its parent has not reaped it)", pid)
		}
		return &Member{Info: in}, nil
	}
	if err := Supported(in); err != nil {
		return nil, err
	}
	t, err := ptrace.Seize(pid)
	if err != nil {
		// It may have exited in between: a zombie is recorded as one.
		if again, rerr := procinfo.Read(pid); !isRoot && (rerr != nil || again.Zombie) {
			if rerr != nil {
				return nil, nil
			}
			return &Member{Info: again}, nil
		}
		if errors.Is(err, ptrace.ErrExited) || errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("pid %d: %w", pid, procinfo.ErrNoProcess)
		}
		return nil, traced(pid, err)
	}
	m := &Member{T: t, Info: in}
	err = m.FreezeThreads(ptrace.Seize)
	// Read again now that it is frozen: its children and threads cannot
	// change any more.
	if err == nil {
		if m.Info, err = procinfo.Read(pid); err == nil {
			err = Supported(m.Info)
		}
	}
	if err != nil {
		Release([]*Member{m})
		return nil, err
	}
	return m, nil
}

// traced explains a failed seize: most often another tracer (a debugger, or
// a `chpox run` supervisor, which FromSupervisor handles) holds the process.
func traced(pid int, err error) error {
	if tp := procinfo.TracerPID(pid); tp > 0 && tp != os.Getpid() {
		// A process has one tracer, and what the other one holds (its
		// ptrace-stop, its options, its breakpoints) cannot be saved.
		_, comm, _ := procinfo.State(tp)
		return fmt.Errorf("pid %d is already traced by pid %d (%s: a debugger?); detach that tracer first (%v): %w", pid, tp, comm, err, ErrUnsupported)
	}
	return err
}

// Supported refuses processes chpox cannot checkpoint yet.
func Supported(in *procinfo.Info) error {
	switch {
	case in.RootDeleted:
		// A stand-in root would be an empty directory: nothing the
		// process reaches through / would be there.
		return fmt.Errorf("process %d runs in a chroot whose directory %s was removed: its content is gone, so it cannot be restored: %w", in.PID, in.Root, ErrUnsupported)
	}
	return nil
}

// Release puts every frozen process back as it was and lets it run. The
// main thread's Undo comes first, then every thread is released.
func Release(ms []*Member) error {
	var errs []error
	for _, m := range ms {
		if m.T == nil {
			continue
		}
		if err := m.T.Undo(); err != nil {
			errs = append(errs, err)
		}
		for _, t := range append(m.Others, m.T) {
			if err := t.Release(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Collect reads the registers and signal state of every frozen process and
// asks each, by injected calls, what /proc does not show. Pending signals
// numbered ignoreSig (a `chpox run` trigger) are left out of the image;
// ipc names System V objects beyond those the tree is found to use.
func Collect(ms []*Member, ignoreSig int, ipc ...sysv.Ref) error {
	tree := map[int]bool{}
	for _, m := range ms {
		tree[m.Info.PID] = true
	}
	// The semaphore sets of the tree: each process is asked for its
	// SEM_UNDO adjustments of them.
	sems, err := sysv.SelectSets(tree, ipc)
	if err != nil {
		return err
	}
	var undoers []int
	for _, m := range ms {
		if m.T == nil {
			continue
		}
		p := &m.Info.Process
		p.Threads = nil
		tr, err := trampoline(m.Threads())
		if err != nil {
			return err
		}
		for _, t := range m.Threads() {
			th, err := collectThread(t, ignoreSig)
			if err != nil {
				return err
			}
			p.Threads = append(p.Threads, th)
		}
		repend := func() error {
			for i, t := range m.Threads() {
				var err error
				if p.Threads[i].Pending, err = pendingOf(t, ignoreSig); err != nil {
					return err
				}
			}
			var err error
			if p.SharedPending, err = m.T.PendingSignals(true); err != nil {
				return err
			}
			p.SharedPending = withoutSignal(p.SharedPending, ignoreSig)
			return nil
		}
		if err := repend(); err != nil {
			return err
		}
		var stopped []int
		for _, c := range ms {
			if c.T != nil && c.Info.PPID == m.Info.PID && c.T.GroupStopped() {
				stopped = append(stopped, c.Info.PID)
			}
		}
		waited := map[int]bool{}
		if p.Attrs, err = procinfo.Attrs(m.Info.PID); err != nil {
			return err
		}
		if err := collectSeccomp(m, p); err != nil {
			clearGuards(m.Threads())
			return err
		}
		objects.CrashPoint("seccomp-suspended")
		injected := time.Now()
		err = inject(tr, m.Threads(), p, repend, stopped, waited, sems)
		slog.Debug("injected calls", "pid", m.Info.PID, "threads", len(m.Threads()), "took", time.Since(injected))
		err = errors.Join(err, clearGuards(m.Threads()))
		if err != nil {
			return err
		}
		for _, c := range ms {
			if c.Info.PPID == m.Info.PID {
				c.Info.Process.StopWaited = waited[c.Info.PID]
			}
		}
		if len(p.SemUndo) > 0 {
			undoers = append(undoers, p.PID)
		}
		p.Stopped = m.T.GroupStopped()
		p.StopSignal = int(m.T.GroupStopSignal())
		// Put back what chpox changed before memory is read, so the image
		// holds the process as it was; the main thread (code) last.
		for _, t := range append(m.Others, m.T) {
			if err := t.Undo(); err != nil {
				return err
			}
		}
	}
	return sysv.SharedUndo(undoers)
}

func collectThread(t *ptrace.Tracee, ignoreSig int) (format.Thread, error) {
	th := format.Thread{TID: t.PID, Regs: ptrace.ToFormat(&t.Regs)}
	var err error
	if th.XSave, err = t.XState(); err != nil {
		return th, err
	}
	if th.SigMask, err = t.SigMask(); err != nil {
		return th, err
	}
	rs, err := t.Rseq()
	if err != nil {
		return th, err
	}
	if rs.Registered {
		th.Rseq = &format.Rseq{Addr: rs.Addr, Len: rs.Size, Flags: rs.Flags, Sig: rs.Sig}
	}
	th.Comm = procinfo.ThreadComm(t.PID)
	// /proc/TID/task/TID/stat: any thread's id names its process, too.
	if th.Attrs, err = threadAttrs(t.PID, t.PID); err != nil {
		return th, err
	}
	return th, nil
}

// pendingOf reads the thread's private pending signals (and one held at
// its stop), without ignoreSig.
func pendingOf(t *ptrace.Tracee, ignoreSig int) ([][]byte, error) {
	pending, err := t.PendingSignals(false)
	if err != nil {
		return nil, err
	}
	if t.DeferredSignal() != 0 {
		si, err := t.DeferredSiginfo()
		if err != nil {
			return nil, err
		}
		pending = append(pending, si)
	}
	return withoutSignal(pending, ignoreSig), nil
}

func withoutSignal(sis [][]byte, sig int) [][]byte {
	if sig == 0 {
		return sis
	}
	out := sis[:0]
	for _, si := range sis {
		if int(si[0])|int(si[1])<<8 != sig {
			out = append(out, si)
		}
	}
	return out
}
