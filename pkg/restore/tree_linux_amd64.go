package restore

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/tty"
	"github.com/chpox/chpox/pkg/ptrace"
)

// node is one process of the tree being restored.
type node struct {
	p      *format.Process
	x      *target
	parent *node
	// joinSession: the root led a session whose controlling terminal is
	// outside the tree; it leads a process group of chpox's session.
	joinSession bool
}

// treeOf links every process to its parent. The image lists parents before
// children; the first process is the root.
func treeOf(img *format.Image) ([]*node, error) {
	byPID := map[int]*node{}
	var nodes []*node
	for i, p := range img.Processes {
		n := &node{p: p}
		if i > 0 {
			if n.parent = byPID[p.PPID]; n.parent == nil {
				return nil, fmt.Errorf("process %d: its parent %d is not in the image before it: %w", p.PID, p.PPID, format.ErrCorrupt)
			}
			if n.parent.p.Zombie {
				return nil, fmt.Errorf("process %d: its parent %d is a zombie: %w", p.PID, p.PPID, format.ErrCorrupt)
			}
		} else if p.Zombie {
			return nil, fmt.Errorf("the root process %d is a zombie: %w", p.PID, format.ErrCorrupt)
		}
		byPID[p.PID] = n
		nodes = append(nodes, n)
	}
	return nodes, nil
}

// restoreTree builds the whole tree stopped, then lets it run at once.
// Until then every process is traced with PTRACE_O_EXITKILL and has not run
// an instruction of its own; on failure all are killed.
//
// With l (a lazy restore), the private anonymous areas are registered on
// userfaultfds instead of written, and their copy begins once the tree runs.
func restoreTree(img *format.Image, opt Options, l *lazyState) (*Restored, error) {
	nodes, err := treeOf(img)
	if err != nil {
		if l != nil {
			unix.Munmap(l.data)
		}
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			for i := len(nodes) - 1; i >= 0; i-- {
				if nodes[i].x != nil {
					x := nodes[i].x
					var threads []*ptrace.Tracee
					for _, th := range x.threads {
						threads = append(threads, th.t)
					}
					x.t.Kill(threads...) // SIGKILL ends every thread
				}
			}
		}
	}()
	if opt.Foreground && outsideCTTY(img, nodes[0].p) != nil {
		nodes[0].joinSession = true
	}
	// Pty pairs first: a session leader takes its pair as controlling
	// terminal before it forks the rest of its session, which inherit it
	// (a process gets its controlling terminal at fork or by TIOCSCTTY,
	// which only a session leader may call: drivers/tty/tty_jobctrl.c).
	pairs, err := openPairs(img)
	if err != nil {
		return nil, err
	}
	if err := createTree(nodes, pairs); err != nil {
		closePairs(pairs)
		return nil, err
	}
	o, err := newObjects(img, opt, pairs)
	if err != nil {
		return nil, err
	}
	defer o.close()
	live := liveNodes(nodes)
	if l != nil {
		// Runs before the processes are killed (deferred above): they
		// never ran, only injected calls touched their lazy memory.
		defer func() {
			if ok {
				return
			}
			if l.cp != nil {
				l.cp.Abort()
			} else {
				unix.Munmap(l.data)
			}
		}()
	}
	for _, n := range live {
		// Files are opened with the process's own filesystem ids, the
		// mapped ones too: an image cannot make chpox map what its
		// process could not open.
		if err := n.x.setFSCreds(n.p.Creds); err != nil {
			return nil, fmt.Errorf("pid %d: restore file credentials: %w", n.p.PID, err)
		}
		if err := n.x.mapMemory(n.p, o); err != nil {
			return nil, fmt.Errorf("pid %d: restore memory: %w", n.p.PID, err)
		}
		if l != nil {
			if err := l.register(n); err != nil {
				return nil, fmt.Errorf("pid %d: lazy restore: %w", n.p.PID, err)
			}
		}
	}
	if l == nil {
		err = writeData(img, o, opt.Progress)
	} else {
		err = writeMapped(l.data, sinksOf(img, o, l.skip), opt.Progress)
	}
	if err != nil {
		return nil, err
	}
	var skip map[*format.VMA]bool
	if l != nil {
		skip = l.skip
	}
	if err := copyInherited(live, skip); err != nil {
		return nil, err
	}
	if err := o.fill(); err != nil {
		return nil, err
	}
	if err := o.sysvAfterData(img, live); err != nil {
		return nil, err
	}
	for _, n := range live {
		if err := n.x.build(n.p, o, opt.untrusted); err != nil {
			return nil, fmt.Errorf("pid %d: %w", n.p.PID, err)
		}
	}
	// Locks once every process holds its fds: a lock may belong to a
	// description that a later process of the tree created.
	for _, n := range live {
		if err := n.x.restoreLocks(n.p); err != nil {
			return nil, fmt.Errorf("pid %d: restore locks: %w", n.p.PID, err)
		}
	}
	// Children first: a stopped child is put into its group-stop once its
	// registers are final, and its parent, still able to run injected
	// calls, then collects that stop if it had collected it before and
	// loses the SIGCHLD it did not have.
	stoppedKids := map[*node][]*node{}
	for i := len(live) - 1; i >= 0; i-- {
		n := live[i]
		if err := n.x.afterChildStops(n.p, stoppedKids[n]); err != nil {
			return nil, fmt.Errorf("pid %d: %w", n.p.PID, err)
		}
		// Timers start once every process is built, so the time that
		// takes does not count against them; registers last.
		if err := n.x.armTimers(n.p); err != nil {
			return nil, fmt.Errorf("pid %d: restore timers: %w", n.p.PID, err)
		}
		// The seccomp filters are the last injected calls of the
		// process: they may block any other (a call chpox would make
		// after them is first run through them, ptrace.Tracee.Guard).
		if err := n.x.restoreSeccomp(n.p); err != nil {
			return nil, fmt.Errorf("pid %d: restore seccomp filters: %w", n.p.PID, err)
		}
		if err := n.x.finish(n.p); err != nil {
			return nil, fmt.Errorf("pid %d: restore registers: %w", n.p.PID, err)
		}
		if n.p.Stopped {
			if err := n.x.stopAgain(n.p); err != nil {
				return nil, fmt.Errorf("pid %d: %w", n.p.PID, err)
			}
			if n.parent != nil {
				stoppedKids[n.parent] = append(stoppedKids[n.parent], n)
			}
		}
	}
	if err := o.beforeRun(); err != nil {
		return nil, err
	}
	if l != nil && l.cp != nil {
		if err := l.cp.Guard(); err != nil {
			return nil, err
		}
	}
	root := nodes[0].p
	if opt.BeforeRun != nil {
		opt.BeforeRun(jobOf(img, o.groups))
	}
	// Children first: a parent that runs must find its children there.
	for i := len(live) - 1; i >= 0; i-- {
		for _, t := range live[i].x.allThreads() {
			// A stopped process is in its group-stop already; detached,
			// it stays there (stopAgain).
			if err := t.t.DetachAsIs(0); err != nil {
				return nil, err
			}
		}
	}
	ok, o.done = true, true
	out := &Restored{PID: root.PID, Processes: len(nodes)}
	switch {
	case l != nil && l.cp != nil:
		l.cp.Run()
		out.Lazy = l.cp
	case l != nil:
		unix.Munmap(l.data) // nothing to fill lazily
	}
	return out, nil
}

func liveNodes(nodes []*node) []*node {
	var out []*node
	for _, n := range nodes {
		if !n.p.Zombie {
			out = append(out, n)
		}
	}
	return out
}

// createTree makes every process with its PID, top-down, each forked by its
// restored parent (the root by the loader, as chpox's child), gives them
// their process groups and sessions, and ends the zombies.
func createTree(nodes []*node, pairs map[int]*tty.Pair) error {
	var avoid []span
	for _, n := range nodes {
		avoid = append(avoid, spansOf(n.p.VMAs)...)
	}
	loader, err := startLoader(avoid)
	if err != nil {
		return err
	}
	nodes[0].x, err = loader.cloneWithPID(nodes[0].p.PID, cloneSibling)
	loader.t.Kill()
	if err != nil {
		return err
	}
	for i, n := range nodes {
		if i > 0 {
			if n.x, err = n.parent.x.cloneWithPID(n.p.PID, cloneChild); err != nil {
				return err
			}
		}
		if err := n.x.t.SetSigMask(ptrace.AllSignals); err != nil {
			return err
		}
		// A session or group leader must lead before its children are
		// forked, so that they inherit the session.
		if err := n.x.lead(n.p, n.joinSession); err != nil {
			return fmt.Errorf("pid %d: %w", n.p.PID, err)
		}
		if pair := pairs[n.p.CTTY]; pair != nil && n.p.SID == n.p.PID {
			if err := n.x.acquireCTTY(pair); err != nil {
				return fmt.Errorf("pid %d: %w", n.p.PID, err)
			}
		}
	}
	inTree := map[int]bool{}
	for _, n := range nodes {
		inTree[n.p.PID] = true
	}
	for _, n := range nodes {
		if n.p.PGID != n.p.PID && inTree[n.p.PGID] {
			if _, err := n.x.call("setpgid", unix.SYS_SETPGID, 0, uint64(n.p.PGID)); err != nil {
				return fmt.Errorf("pid %d: join process group %d: %w", n.p.PID, n.p.PGID, err)
			}
		}
	}
	for _, n := range nodes {
		if n.p.Zombie {
			if err := n.x.becomeZombie(n.p); err != nil {
				return fmt.Errorf("pid %d: recreate zombie: %w", n.p.PID, err)
			}
		}
	}
	return nil
}

// lead gives a process that led its session or process group that role.
func (x *target) lead(p *format.Process, joinSession bool) error {
	switch {
	case p.SID == p.PID && !joinSession:
		_, err := x.call("setsid", unix.SYS_SETSID)
		return err
	case p.PGID == p.PID:
		_, err := x.call("setpgid", unix.SYS_SETPGID, 0, 0)
		return err
	}
	return nil
}

// build gives a process whose memory is mapped and filled everything but
// its locks, running timers, seccomp filters and final registers (see
// restoreTree).
//
// Scheduling and the other thread attributes are set by each thread
// itself: before the credentials (as root) for an image root owns, after
// them for one a user owns, so that the kernel holds the request to the
// rights the process has and a forged image gains its owner nothing.
func (x *target) build(p *format.Process, o *objects, untrusted bool) error {
	attrs := func() error { return x.restoreThreadAttrs(p, untrusted) }
	noop := func() error { return nil }
	before, after := attrs, noop
	if untrusted {
		before, after = noop, attrs
	}
	steps := []struct {
		what string
		f    func() error
	}{
		{"memory protection", func() error { return x.protect(p) }},
		{"memory details", func() error { return x.memoryDetails(p) }},
		{"mm fields", func() error { return x.setMM(p, o) }},
		{"files", func() error { return x.restoreFiles(p, o) }},
		{"process state", func() error { return x.restoreMisc(p) }},
		{"process attributes", func() error { return x.restoreProcessAttrs(p, untrusted) }},
		{"threads", func() error { return x.restoreThreads(p) }},
		{"posix timers", func() error { return x.createTimers(p) }},
		{"thread attributes", before},
		{"credentials", func() error { return x.restoreCreds(p.Creds) }},
		{"thread attributes", after},
		// After the credentials: F_SETOWN records who set it, and the
		// kernel checks those ids against the owner's before each SIGIO
		// (fs/fcntl.c, f_modown and sigio_perm).
		{"file owners", func() error { return x.restoreOwners(p, o) }},
		{"parent-death signals", func() error { return x.restorePdeathSig(p) }},
	}
	for _, s := range steps {
		if err := s.f(); err != nil {
			return fmt.Errorf("restore %s: %w", s.what, err)
		}
	}
	return nil
}
