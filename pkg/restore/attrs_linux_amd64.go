package restore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/seccomp"
)

const (
	ioprioWhoProcess   = 1      // IOPRIO_WHO_PROCESS (include/uapi/linux/ioprio.h)
	thpExceptAdvised   = 1 << 1 // PR_THP_DISABLE_EXCEPT_ADVISED (include/uapi/linux/prctl.h, 6.18)
	membarrierGetRegs  = 1 << 9 // MEMBARRIER_CMD_GET_REGISTRATIONS
	membarrierRegister = 1<<2 | 1<<4 | 1<<6 | 1<<8
	schedAttrSize      = 56 // SCHED_ATTR_SIZE_VER1
	loginUIDUnset      = ^uint32(0)
)

// restoreProcessAttrs gives the main thread, before its other threads are
// made (they inherit it), its audit loginuid, and the process its
// child-subreaper role, THP setting and membarrier registrations.
func (x *target) restoreProcessAttrs(p *format.Process, untrusted bool) error {
	a := p.Attrs
	if a == nil {
		return nil
	}
	if err := x.restoreLoginUID(a, untrusted); err != nil {
		return err
	}
	if a.ChildSubreaper {
		if _, err := x.call("prctl(PR_SET_CHILD_SUBREAPER)", unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
			return err
		}
	}
	if a.THPDisable != 0 {
		flags := uint64(0)
		if a.THPDisable&2 != 0 {
			flags = thpExceptAdvised
		}
		if _, err := x.call("prctl(PR_SET_THP_DISABLE)", unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE, 1, flags, 0, 0); err != nil {
			return err
		}
		if got, _ := x.call("prctl(PR_GET_THP_DISABLE)", unix.SYS_PRCTL, unix.PR_GET_THP_DISABLE, 0, 0, 0, 0); uint32(got) != a.THPDisable {
			return fmt.Errorf("transparent huge pages disabled %#x, the kernel here gives %#x: %w", a.THPDisable, got, ErrIncompatible)
		}
	}
	if a.Membarrier != nil && *a.Membarrier != 0 {
		for bit := uint64(1); bit <= membarrierRegister; bit <<= 1 {
			if uint64(*a.Membarrier)&bit&membarrierRegister == 0 {
				continue
			}
			if _, err := x.call(fmt.Sprintf("membarrier(register %#x)", bit), unix.SYS_MEMBARRIER, bit, 0, 0); err != nil {
				return err
			}
		}
		got, err := x.call("membarrier(MEMBARRIER_CMD_GET_REGISTRATIONS)", unix.SYS_MEMBARRIER, membarrierGetRegs, 0, 0)
		if err != nil {
			return err
		}
		if uint32(got) != *a.Membarrier {
			return fmt.Errorf("membarrier registrations %#x, the kernel here gives %#x: %w", *a.Membarrier, got, ErrIncompatible)
		}
	}
	return nil
}

// restoreLoginUID: a task may set only its own loginuid
// (/proc/self/loginuid, fs/proc/base.c), with CAP_AUDIT_CONTROL. The
// kernel then gives it a new audit session id: the old one cannot come
// back (kernel/auditsc.c, audit_set_loginuid).
func (x *target) restoreLoginUID(a *format.ProcessAttrs, untrusted bool) error {
	if a.LoginUID == nil {
		return nil
	}
	have, err := readUint(fmt.Sprintf("/proc/%d/loginuid", x.pid()))
	if err != nil || uint32(have) == *a.LoginUID {
		return nil // no audit here, or already right
	}
	if untrusted {
		return fmt.Errorf("the image asks for audit loginuid %d (chpox has %d); only an image root owns may set it: %w", *a.LoginUID, have, ErrUntrusted)
	}
	x.resetScratch()
	path, err := x.cstring("/proc/self/loginuid")
	if err != nil {
		return err
	}
	val := strconv.FormatInt(int64(int32(*a.LoginUID)), 10)
	if *a.LoginUID == loginUIDUnset {
		val = strconv.FormatUint(uint64(*a.LoginUID), 10)
	}
	buf, err := x.put([]byte(val))
	if err != nil {
		return err
	}
	fd, err := x.call("openat /proc/self/loginuid", unix.SYS_OPENAT, atFDCWD, path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, err = x.call(fmt.Sprintf("write loginuid %s", val), unix.SYS_WRITE, fd, buf, uint64(len(val)))
	x.call("close", unix.SYS_CLOSE, fd)
	if err != nil {
		return fmt.Errorf("%w (setting the audit loginuid needs CAP_AUDIT_CONTROL and a kernel without loginuid_immutable)", err)
	}
	return nil
}

// restoreThreadAttrs gives every thread its timer slack, CPU affinity, I/O
// priority and scheduling, each set by the thread itself (so the kernel
// judges the request by the rights the thread has at that point) and read
// back: a value the kernel here changes (a CPU that is not there, a cpuset
// that leaves it out) fails the restore instead of coming back different.
// Then the process's oom_score_adj.
func (x *target) restoreThreadAttrs(p *format.Process, untrusted bool) error {
	for i, t := range x.allThreads() {
		a := p.Threads[i].Attrs
		if a == nil {
			continue
		}
		if err := t.threadAttrs(a); err != nil {
			if untrusted && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) {
				// The user who owns the image could not give it either.
				err = fmt.Errorf("%w: %w", err, ErrUntrusted)
			}
			return fmt.Errorf("thread %d: %w", t.pid(), err)
		}
	}
	if p.Attrs == nil {
		return nil
	}
	path := fmt.Sprintf("/proc/%d/oom_score_adj", x.pid())
	have, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cur, _ := strconv.Atoi(strings.TrimSpace(string(have)))
	if cur == p.Attrs.OOMScoreAdj {
		return nil
	}
	if untrusted && p.Attrs.OOMScoreAdj < cur {
		return fmt.Errorf("the image asks for oom_score_adj %d, below chpox's %d; only an image root owns may lower it: %w", p.Attrs.OOMScoreAdj, cur, ErrUntrusted)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(p.Attrs.OOMScoreAdj)), 0); err != nil {
		return fmt.Errorf("set oom_score_adj %d (chpox's is %d): %w (going below the lowest chpox was given needs CAP_SYS_RESOURCE)", p.Attrs.OOMScoreAdj, cur, err)
	}
	return nil
}

func (x *target) threadAttrs(a *format.ThreadAttrs) error {
	tid := x.pid()
	x.resetScratch()
	// Before the policy: a real-time thread keeps no slack of its own.
	if slack, err := x.call("prctl(PR_GET_TIMERSLACK)", unix.SYS_PRCTL, unix.PR_GET_TIMERSLACK); err != nil {
		return err
	} else if slack != a.TimerSlack && a.TimerSlack != 0 {
		if _, err := x.call("prctl(PR_SET_TIMERSLACK)", unix.SYS_PRCTL, unix.PR_SET_TIMERSLACK, a.TimerSlack); err != nil {
			return err
		}
	}
	if a.TSC == unix.PR_TSC_SIGSEGV {
		if _, err := x.call("prctl(PR_SET_TSC, PR_TSC_SIGSEGV)", unix.SYS_PRCTL, unix.PR_SET_TSC, unix.PR_TSC_SIGSEGV); err != nil {
			return err
		}
	}
	if policy, ok := map[string]uint64{"early": unix.PR_MCE_KILL_EARLY, "late": unix.PR_MCE_KILL_LATE}[a.MCEKill]; ok {
		if _, err := x.call("prctl(PR_MCE_KILL, "+a.MCEKill+")", unix.SYS_PRCTL, unix.PR_MCE_KILL, unix.PR_MCE_KILL_SET, policy, 0, 0); err != nil {
			return err
		}
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(tid, &set); err != nil {
		return fmt.Errorf("sched_getaffinity: %w", err)
	}
	if !sameMask(set, a.Affinity) {
		b := u64s(a.Affinity...)
		at, err := x.put(b)
		if err != nil {
			return err
		}
		if _, err := x.call("sched_setaffinity", unix.SYS_SCHED_SETAFFINITY, 0, uint64(len(b)), at); err != nil {
			return fmt.Errorf("%w (CPUs %s)", err, cpuList(a.Affinity))
		}
		if err := unix.SchedGetaffinity(tid, &set); err != nil {
			return fmt.Errorf("sched_getaffinity: %w", err)
		}
		if !sameMask(set, a.Affinity) {
			return fmt.Errorf("CPU affinity %s cannot be had here (the kernel gives %s: CPUs offline or outside the cpuset): %w", cpuList(a.Affinity), cpuList(words(set)), ErrIncompatible)
		}
	}
	prio, _, errno := unix.Syscall(unix.SYS_IOPRIO_GET, ioprioWhoProcess, uintptr(tid), 0)
	if errno != 0 {
		return fmt.Errorf("ioprio_get: %w", errno)
	}
	if uint32(prio) != a.IOPrio {
		if _, err := x.call(fmt.Sprintf("ioprio_set(%#x)", a.IOPrio), unix.SYS_IOPRIO_SET, ioprioWhoProcess, 0, uint64(a.IOPrio)); err != nil {
			return err
		}
	}
	return x.schedAttrs(a)
}

// schedAttrs sets policy, nice, priority and flags with sched_setattr in
// the thread. A real-time thread is first given its nice value under
// SCHED_OTHER: the kernel keeps it for a later return to SCHED_OTHER.
func (x *target) schedAttrs(a *format.ThreadAttrs) error {
	have, err := unix.SchedGetAttr(x.pid(), 0)
	if err != nil {
		return fmt.Errorf("sched_getattr: %w", err)
	}
	want := schedOf(a)
	if same(have, want) && a.Nice == have.Nice {
		return nil
	}
	set := func(s *unix.SchedAttr) error {
		at, err := x.put(schedBytes(s))
		if err != nil {
			return err
		}
		if _, err := x.call(fmt.Sprintf("sched_setattr(policy %d, nice %d, priority %d, flags %#x)", s.Policy, s.Nice, s.Priority, s.Flags), unix.SYS_SCHED_SETATTR, 0, at, 0); err != nil {
			return fmt.Errorf("%w (restore never gives a thread a scheduling its rights do not allow)", err)
		}
		return nil
	}
	if want.Policy != format.SchedOther && want.Policy != format.SchedBatch && want.Policy != format.SchedIdle {
		if err := set(&unix.SchedAttr{Policy: format.SchedOther, Nice: a.Nice, Flags: want.Flags & unix.SCHED_FLAG_RESET_ON_FORK}); err != nil {
			return err
		}
	}
	if err := set(want); err != nil {
		return err
	}
	got, err := unix.SchedGetAttr(x.pid(), 0)
	if err != nil {
		return fmt.Errorf("sched_getattr: %w", err)
	}
	if !same(got, want) {
		return fmt.Errorf("scheduling %+v, the kernel here gives %+v: %w", *want, *got, ErrIncompatible)
	}
	return nil
}

func schedOf(a *format.ThreadAttrs) *unix.SchedAttr {
	s := &unix.SchedAttr{Size: schedAttrSize, Policy: a.Policy, Flags: a.Flags &^ unix.SCHED_FLAG_KEEP_ALL, Priority: a.Priority,
		Runtime: a.Runtime, Deadline: a.Deadline, Period: a.Period, Util_min: a.UtilMin, Util_max: a.UtilMax}
	switch a.Policy {
	case format.SchedOther, format.SchedBatch, format.SchedIdle, format.SchedExt:
		s.Nice = a.Nice
	}
	return s
}

// same compares what sched_getattr reports (utilization clamps are left
// out: they are set only where they differ, and most kernels lack them).
// A fair thread's runtime 0 in want is the default time slice, whatever
// the kernel here makes it (see dump's threadAttrs).
func same(have, want *unix.SchedAttr) bool {
	fairDefault := want.Runtime == 0 && (want.Policy == format.SchedOther || want.Policy == format.SchedBatch || want.Policy == format.SchedIdle)
	return have.Policy == want.Policy && have.Flags&^unix.SCHED_FLAG_UTIL_CLAMP == want.Flags&^unix.SCHED_FLAG_UTIL_CLAMP &&
		have.Nice == want.Nice && have.Priority == want.Priority && (fairDefault || have.Runtime == want.Runtime) &&
		have.Deadline == want.Deadline && have.Period == want.Period
}

func schedBytes(s *unix.SchedAttr) []byte {
	le := binary.LittleEndian
	b := make([]byte, schedAttrSize)
	le.PutUint32(b, schedAttrSize)
	le.PutUint32(b[4:], s.Policy)
	le.PutUint64(b[8:], s.Flags)
	le.PutUint32(b[16:], uint32(s.Nice))
	le.PutUint32(b[20:], s.Priority)
	le.PutUint64(b[24:], s.Runtime)
	le.PutUint64(b[32:], s.Deadline)
	le.PutUint64(b[40:], s.Period)
	le.PutUint32(b[48:], s.Util_min)
	le.PutUint32(b[52:], s.Util_max)
	return b
}

func sameMask(set unix.CPUSet, want []uint64) bool {
	for i, w := range set {
		var v uint64
		if i < len(want) {
			v = want[i]
		}
		if uint64(w) != v {
			return false
		}
	}
	return len(want) <= len(set)
}

func words(set unix.CPUSet) []uint64 {
	out := make([]uint64, len(set))
	for i, w := range set {
		out[i] = uint64(w)
	}
	return out
}

func cpuList(mask []uint64) string {
	var cpus []string
	for i, w := range mask {
		for b := 0; b < 64; b++ {
			if w&(1<<b) != 0 {
				cpus = append(cpus, strconv.Itoa(64*i+b))
			}
		}
	}
	return "{" + strings.Join(cpus, ",") + "}"
}

// restorePdeathSig sets each thread's parent-death signal, after the
// credentials, whose change clears it (kernel/cred.c, commit_creds).
func (x *target) restorePdeathSig(p *format.Process) error {
	for i, t := range x.allThreads() {
		a := p.Threads[i].Attrs
		if a == nil || a.PdeathSig == 0 {
			continue
		}
		if _, err := t.call("prctl(PR_SET_PDEATHSIG)", unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(a.PdeathSig)); err != nil {
			return fmt.Errorf("thread %d: %w", t.pid(), err)
		}
	}
	return nil
}

// restoreSeccomp installs every thread's seccomp filters again, in their
// order, as the last calls injected into each thread (a filter may block
// what would follow). The filters all threads ran are installed once, by
// the main thread with SECCOMP_FILTER_FLAG_TSYNC, so the threads share
// them again as they did (a later TSYNC of the program's own needs that);
// each thread then adds its own. Each call must pass the filters already
// there (dump refused filters it could not); every later injected call is
// checked against them, so none can be killed or trapped by the sandbox.
func (x *target) restoreSeccomp(p *format.Process) error {
	threads := x.allThreads()
	var chains [][]int
	for i := range threads {
		th := &p.Threads[i]
		if th.SeccompMode == format.SeccompModeStrict {
			if err := threads[i].strictMode(); err != nil {
				return fmt.Errorf("thread %d (was %d): seccomp strict mode: %w", threads[i].pid(), th.TID, err)
			}
		}
		chains = append(chains, p.SeccompChain(th))
	}
	if len(p.Seccomp) == 0 {
		return nil
	}
	common := seccomp.CommonPrefix(chains)
	if len(threads) == 1 {
		common = 0
	}
	under := make([][][]byte, len(threads)) // each thread's filters, newest first
	install := func(i int, id int, extra uint64) error {
		t, f := threads[i], p.Seccomp[id-1]
		nr, args, err := seccomp.Installer(under[i], f.Flags|extra, t.t.Stub()+2)
		if err != nil {
			return fmt.Errorf("thread %d: seccomp filter %d: %w", t.pid(), id, err)
		}
		t.resetScratch()
		prog, err := t.put(f.Prog)
		if err != nil {
			return err
		}
		fprog, err := t.put(u64s(uint64(len(f.Prog)/8), prog)) // struct sock_fprog
		if err != nil {
			return err
		}
		args[len(args)-1] = fprog
		r, err := t.call(fmt.Sprintf("seccomp filter %d (%d instructions)", id, len(f.Prog)/8), nr, args...)
		if err == nil && r != 0 {
			err = fmt.Errorf("thread %d does not share the filters (SECCOMP_FILTER_FLAG_TSYNC)", r)
		}
		if err != nil {
			return fmt.Errorf("thread %d: %w", t.pid(), err)
		}
		return nil
	}
	for _, id := range chains[0][:common] {
		if err := install(0, id, seccomp.FlagTSync); err != nil {
			return err
		}
		for i := range threads {
			under[i] = append([][]byte{p.Seccomp[id-1].Prog}, under[i]...)
		}
	}
	// The main thread last: it still unmaps the scratch area.
	for i := len(threads) - 1; i >= 0; i-- {
		for _, id := range chains[i][common:] {
			if err := install(i, id, 0); err != nil {
				return err
			}
			under[i] = append([][]byte{p.Seccomp[id-1].Prog}, under[i]...)
		}
	}
	for i, t := range threads {
		if g := guard(t.pid(), slices.Clone(under[i])); g != nil {
			t.t.Guard = g
		}
	}
	return nil
}

// strictMode puts the thread in seccomp strict mode, its last injected
// call but those restore still makes after it (the scratch area unmapped,
// a late SIGTRAP): the thread's seccomp is suspended for chpox first
// (PTRACE_O_SUSPEND_SECCOMP, root only), and the kernel drops that with
// the tracer link, at detach or chpox's death, so the thread runs on
// sandboxed. Without it every later call is checked and refused by name.
func (x *target) strictMode() error {
	suspended := x.t.SetOptions(traceOptions|unix.PTRACE_O_SUSPEND_SECCOMP) == nil
	if _, err := x.call("seccomp(SECCOMP_SET_MODE_STRICT)", unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_STRICT, 0, 0); err != nil {
		return err
	}
	if mode, _, err := procinfo.ThreadSeccomp(x.pid(), x.pid()); err != nil {
		return err
	} else if mode != format.SeccompModeStrict {
		return fmt.Errorf("the kernel reports seccomp mode %d after installing it", mode)
	}
	if !suspended {
		tid := x.pid()
		x.t.Guard = func(nr uint64, _ []uint64, _ uint64) error {
			if seccomp.StrictAllows(nr) {
				return nil
			}
			return fmt.Errorf("thread %d: its restored seccomp strict mode forbids system call %d, which restore still needs (suspending it needs CAP_SYS_ADMIN)", tid, nr)
		}
	}
	return nil
}

func guard(tid int, progs [][]byte) func(nr uint64, args []uint64, ip uint64) error {
	if len(progs) == 0 {
		return nil
	}
	return func(nr uint64, args []uint64, ip uint64) error {
		action, err := seccomp.RunChain(progs, seccomp.Call(nr, ip, args...))
		if err == nil && !seccomp.Allows(action) {
			err = fmt.Errorf("its restored seccomp filter answers %s to system call %d, which restore still needs", seccomp.ActionName(action), nr)
		}
		if err != nil {
			return fmt.Errorf("thread %d: %w", tid, err)
		}
		return nil
	}
}
