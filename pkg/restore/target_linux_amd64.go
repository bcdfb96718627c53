package restore

import (
	"encoding/binary"
	"fmt"
	"os/exec"
	"sort"
	"syscall"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/ptrace"
)

const (
	scratchSize = 64 << 10
	scratchData = 4096 // data area starts after the code page
	minAddr     = 1 << 20
	maxAddr     = 0x7ffffffff000
	atFDCWD     = ^uint64(99) // AT_FDCWD (-100) as a register value
)

// target is a process being built, stopped under ptrace, with a scratch
// area (stub code + data) where injected calls find their arguments.
type target struct {
	t        *ptrace.Tracee
	scratch  uint64
	dataOff  uint64    // next free byte of the scratch data area
	supPidfd uint64    // the process's pidfd of chpox, once opened
	freeFD   uint64    // lowest fd number above all of the image's
	threads  []*target // the other threads, once created
	caps     uint64    // the image's effective capabilities, for the files step
}

// allThreads is the main thread, then the others, in image order.
func (x *target) allThreads() []*target { return append([]*target{x}, x.threads...) }

func (x *target) pid() int { return x.t.PID }

// call injects one system call and names it in the error.
func (x *target) call(name string, nr uint64, args ...uint64) (uint64, error) {
	r, err := x.t.Syscall(nr, args...)
	if err != nil {
		return 0, fmt.Errorf("injected %s: %w", name, err)
	}
	return r, nil
}

// put copies b into the scratch data area and returns its address there.
// resetScratch makes the whole area free again.
func (x *target) put(b []byte) (uint64, error) {
	n := (uint64(len(b)) + 7) &^ 7
	if scratchData+x.dataOff+n > scratchSize {
		return 0, fmt.Errorf("scratch area full (%d bytes wanted)", len(b))
	}
	addr := x.scratch + scratchData + x.dataOff
	if err := ptrace.WriteMem(x.pid(), addr, b); err != nil {
		return 0, err
	}
	x.dataOff += n
	return addr, nil
}

func (x *target) resetScratch() { x.dataOff = 0 }

func (x *target) cstring(s string) (uint64, error) { return x.put(append([]byte(s), 0)) }

// startLoader starts this binary traced and stopped at its first
// instruction, with a scratch area at an address that neither it nor the
// image uses. It must run on the tracer thread.
func startLoader(avoid []span) (*target, error) {
	exe, err := self()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Args = []string{"chpox-loader"}
	cmd.Env = []string{}
	// Pdeathsig covers chpox's death before the first stop, where
	// PTRACE_O_EXITKILL is set; the tracer thread lives as long as chpox.
	cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true, Pdeathsig: unix.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start loader: %w", err)
	}
	t, err := ptrace.Attached(cmd.Process.Pid)
	if err != nil {
		unix.Kill(cmd.Process.Pid, unix.SIGKILL)
		cmd.Wait()
		return nil, fmt.Errorf("loader: %w", err)
	}
	x := &target{t: t}
	if err := x.setup(avoid); err != nil {
		t.Kill()
		return nil, fmt.Errorf("loader: %w", err)
	}
	return x, nil
}

func (x *target) setup(avoid []span) error {
	if err := x.t.SetOptions(traceOptions); err != nil {
		return err
	}
	own, err := mappings(x.pid())
	if err != nil {
		return err
	}
	at, err := freeSpan(append(avoid, own...), scratchSize)
	if err != nil {
		return err
	}
	// The first call runs from a stub poked over the loader's entry point.
	if err := x.t.PokeStub(); err != nil {
		return err
	}
	_, err = x.call("mmap(scratch)", unix.SYS_MMAP, at, scratchSize, unix.PROT_READ|unix.PROT_WRITE|unix.PROT_EXEC,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uint64(0), 0)
	if err != nil {
		return err
	}
	if err := ptrace.WriteMem(x.pid(), at, ptrace.StubCode()); err != nil {
		return err
	}
	x.scratch = at
	x.t.UseStub(at)
	return nil
}

type cloneMode int

const (
	cloneSibling cloneMode = iota // the root: a child of chpox, not of the loader
	cloneChild                    // a child process of x
	cloneThread                   // a thread of x's process
)

// cloneWithPID makes x create a child (or thread) with the given ID and returns it,
// stopped and traced. The loader creates the root as its sibling
// (CLONE_PARENT: a child of chpox, so a foreground restore can wait for it);
// every other process is forked by its own restored parent, so parent and
// child are related as they were.
func (x *target) cloneWithPID(pid int, mode cloneMode) (*target, error) {
	x.resetScratch()
	tid := make([]byte, 4)
	binary.LittleEndian.PutUint32(tid, uint32(pid))
	tidAt, err := x.put(tid)
	if err != nil {
		return nil, err
	}
	args := make([]byte, 88) // struct clone_args, CLONE_ARGS_SIZE_VER2
	le := binary.LittleEndian
	switch mode {
	case cloneSibling:
		le.PutUint64(args[0:], unix.CLONE_PARENT) // exit_signal must be 0: inherited
	case cloneChild:
		le.PutUint64(args[32:], uint64(unix.SIGCHLD)) // exit_signal, as fork(2)
	case cloneThread:
		// The thread's TLS, stack and registers are set before it runs.
		le.PutUint64(args[0:], unix.CLONE_VM|unix.CLONE_FS|unix.CLONE_FILES|unix.CLONE_SIGHAND|
			unix.CLONE_THREAD|unix.CLONE_SYSVSEM)
	}
	le.PutUint64(args[64:], tidAt) // set_tid
	le.PutUint64(args[72:], 1)     // set_tid_size
	argsAt, err := x.put(args)
	if err != nil {
		return nil, err
	}
	x.t.Children = nil
	if _, err := x.t.Syscall(unix.SYS_CLONE3, argsAt, uint64(len(args))); err != nil {
		if err == unix.EEXIST {
			return nil, fmt.Errorf("pid %d is %w (taken just now)", pid, ErrPIDInUse)
		}
		if err == unix.EPERM {
			return nil, fmt.Errorf("clone3 with the original pid %d: %w (restoring PIDs needs CAP_CHECKPOINT_RESTORE)", pid, err)
		}
		return nil, fmt.Errorf("injected clone3(pid %d): %w", pid, err)
	}
	if len(x.t.Children) != 1 || x.t.Children[0] != pid {
		return nil, fmt.Errorf("clone3 made %v, want pid %d", x.t.Children, pid)
	}
	ct, err := ptrace.Attached(pid)
	if err != nil {
		return nil, err
	}
	if err := ct.SetOptions(traceOptions); err != nil {
		ct.Kill()
		return nil, err
	}
	ct.UseStub(x.scratch)
	return &target{t: ct, scratch: x.scratch}, nil
}

// traceOptions for every process being built: it dies with chpox, its
// forks are traced, and syscall stops are told apart from SIGTRAP.
const traceOptions = unix.PTRACE_O_EXITKILL | unix.PTRACE_O_TRACECLONE | unix.PTRACE_O_TRACEFORK |
	unix.PTRACE_O_TRACEVFORK | unix.PTRACE_O_TRACESYSGOOD

// span is a half-open address range.
type span struct{ start, end uint64 }

// mappings lists the address ranges pid has mapped.
func mappings(pid int) ([]span, error) {
	named, err := namedMappings(pid)
	out := make([]span, len(named))
	for i, m := range named {
		out[i] = m.span
	}
	return out, err
}

// namedMappings lists pid's mappings with their names ([vdso], paths).
func namedMappings(pid int) ([]namedSpan, error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return nil, err
	}
	maps, err := p.ProcMaps()
	if err != nil {
		return nil, fmt.Errorf("read maps of %d: %w", pid, err)
	}
	var out []namedSpan
	for _, m := range maps {
		out = append(out, namedSpan{span{uint64(m.StartAddr), uint64(m.EndAddr)}, m.Pathname})
	}
	return out, nil
}

// freeSpan finds size bytes that overlap none of used, leaving a page of
// room on each side so the kernel cannot merge areas.
func freeSpan(used []span, size uint64) (uint64, error) {
	sort.Slice(used, func(i, j int) bool { return used[i].start < used[j].start })
	cand := uint64(minAddr)
	for _, u := range used {
		if cand+size+4096 <= u.start {
			break
		}
		cand = max(cand, u.end+4096)
	}
	if cand+size <= maxAddr {
		return cand, nil
	}
	return 0, fmt.Errorf("no free address range of %d bytes", size)
}
