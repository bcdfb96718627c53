package probe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/ptrace"
)

// Capability numbers (include/uapi/linux/capability.h).
const (
	capNetAdmin          = 12
	capSysAdmin          = 21
	capSysPtrace         = 19
	capCheckpointRestore = 40
)

// Run tries everything and reports. tr is the tracer thread that owns
// ptrace requests (the probe seizes a child of its own).
func Run(tr *ptrace.Tracer) *Report {
	var u unix.Utsname
	unix.Uname(&u)
	r := &Report{Kernel: unix.ByteSliceToString(u.Release[:]), Arch: runtime.GOARCH, UID: os.Geteuid()}
	caps := effectiveCaps()
	child := probeChild(tr)
	defer child.close()
	r.Items = []Item{
		child.ptraceItem(),
		capItem(caps),
		setTIDItem(caps),
		child.pidfdItem(),
		child.xsaveItem(),
		vdsoItem(),
		uffdItem(),
		pagemapScanItem(),
		tcpRepairItem(),
		nftItem(caps),
		userNSItem(),
	}
	return r
}

// effectiveCaps reads CapEff of this process from /proc/self/status.
func effectiveCaps() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			c, _ := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return c
		}
	}
	return 0
}

// CanChoosePIDs tells whether this process may give new processes the PIDs
// it wants here (clone3 set_tid in its own PID namespace).
func CanChoosePIDs() bool {
	caps := effectiveCaps()
	return hasCap(caps, capCheckpointRestore) || hasCap(caps, capSysAdmin)
}

func hasCap(caps uint64, c int) bool { return caps&(1<<c) != 0 }

func capItem(caps uint64) Item {
	it := Item{Name: "cap_checkpoint_restore", OK: hasCap(caps, capCheckpointRestore) || hasCap(caps, capSysAdmin)}
	if it.OK {
		it.Detail = "held (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN)"
		return it
	}
	it.Detail = "not held"
	it.Cost = "restore needs it to give processes their PIDs (clone3 set_tid), their mm fields (PR_SET_MM_MAP) and their exe link; dump reads shared memory through /proc/PID/map_files with it"
	return it
}

// setTIDItem: clone3 with set_tid exists since Linux 5.5 and needs
// CAP_CHECKPOINT_RESTORE (5.9) in the user namespace owning the PID
// namespace, here the initial one.
func setTIDItem(caps uint64) Item {
	it := Item{Name: "clone3_set_tid"}
	if !kernelAtLeast(5, 9) {
		it.Detail = "kernel older than 5.9"
		it.Cost = "restore cannot give processes their original PIDs"
		return it
	}
	it.OK = hasCap(caps, capCheckpointRestore) || hasCap(caps, capSysAdmin)
	if it.OK {
		it.Detail = "PIDs can be chosen in this PID namespace"
		return it
	}
	it.Detail = "no CAP_CHECKPOINT_RESTORE over this PID namespace"
	it.Cost = "restore cannot give processes their original PIDs on this host"
	return it
}

func kernelAtLeast(major, minor int) bool {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	var ma, mi int
	fmt.Sscanf(unix.ByteSliceToString(u.Release[:]), "%d.%d", &ma, &mi)
	return ma > major || ma == major && mi >= minor
}

func tcpRepairItem() Item {
	it := Item{Name: "tcp_repair"}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1)
		unix.Close(fd)
	}
	if err == nil {
		it.OK, it.Detail = true, "TCP_REPAIR can be set (CAP_NET_ADMIN)"
		return it
	}
	it.Detail = fmt.Sprintf("setsockopt(TCP_REPAIR): %v", err)
	it.Cost = "established TCP connections cannot be checkpointed: a dump of a process holding one fails"
	return it
}

// nftItem: the network lock of `dump --kill` is a table of nft rules,
// which only CAP_NET_ADMIN may change.
func nftItem(caps uint64) Item {
	it := Item{Name: "nft", Cost: "dump --kill cannot lock established TCP connections against their peers' packets, so it refuses them"}
	path, err := exec.LookPath("nft")
	switch {
	case err != nil:
		it.Detail = "nft not found (Debian package nftables)"
	case !hasCap(caps, capNetAdmin):
		it.Detail = path + ", but changing rules needs CAP_NET_ADMIN"
	default:
		it.OK, it.Detail, it.Cost = true, path, ""
	}
	return it
}

// userNSItem starts `true` in a new user and PID namespace, as an
// unprivileged restore would run its processes.
func userNSItem() Item {
	it := Item{Name: "user_namespaces"}
	bin, err := exec.LookPath("true")
	if err == nil {
		cmd := exec.Command(bin)
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWPID,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}},
		}
		err = cmd.Run()
	}
	if err == nil {
		it.OK, it.Detail = true, "a new user + PID namespace can be made"
		return it
	}
	it.Detail = fmt.Sprintf("unshare(CLONE_NEWUSER|CLONE_NEWPID): %v", err)
	it.Cost = "no way to choose PIDs without privilege (restore into a namespace of one's own)"
	return it
}

// vdsoItem lists this process's special mappings and the padding of its
// [vdso], where dumps put their injected code.
func vdsoItem() Item {
	it := Item{Name: "vdso"}
	names, err := specialMappings()
	if err != nil {
		it.Detail, it.Cost = err.Error(), "dumps cannot inject the calls they need"
		return it
	}
	pad, need, err := ptrace.VdsoPadding(os.Getpid())
	if err != nil {
		it.Detail, it.Cost = fmt.Sprintf("%s; %v", strings.Join(names, " "), err), "dumps cannot inject the calls they need"
		return it
	}
	it.Detail = fmt.Sprintf("%s; [vdso] padding %d bytes (%d needed)", strings.Join(names, " "), pad, need)
	it.OK, it.Needed = pad >= need, true
	if !it.OK {
		it.Cost = "chpox never injects into program code, so every dump fails here"
	}
	return it
}

func specialMappings() ([]string, error) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 6 && strings.HasPrefix(f[5], "[v") {
			names = append(names, f[5])
		}
	}
	if len(names) == 0 {
		return nil, errors.New("no [vdso] mapping")
	}
	return names, nil
}

// child is a process of the probe's own, seized as a dump would seize one.
type child struct {
	cmd   *exec.Cmd
	xs    []byte
	err   error // of starting or seizing it
	gotFD error // of pidfd_getfd on it
}

func probeChild(tr *ptrace.Tracer) *child {
	c := &child{}
	bin, err := exec.LookPath("sleep")
	if err != nil {
		c.err = err
		return c
	}
	c.cmd = exec.Command(bin, "60")
	if c.err = c.cmd.Start(); c.err != nil {
		c.cmd = nil
		return c
	}
	pid := c.cmd.Process.Pid
	c.err = tr.Do(func() error {
		t, err := ptrace.Seize(pid)
		if err != nil {
			return err
		}
		c.xs, err = t.XState()
		return errors.Join(err, t.Release())
	})
	c.gotFD = pidfdGetfd(pid)
	return c
}

func pidfdGetfd(pid int) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fmt.Errorf("pidfd_open: %w", err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, 1, 0)
	if err != nil {
		return fmt.Errorf("pidfd_getfd: %w", err)
	}
	return unix.Close(fd)
}

func (c *child) close() {
	if c.cmd != nil {
		c.cmd.Process.Kill()
		c.cmd.Wait()
	}
}

func (c *child) ptraceItem() Item {
	it := Item{Name: "ptrace", Needed: true}
	if c.err != nil {
		it.Detail = fmt.Sprintf("seize a child: %v", c.err)
		it.Cost = "chpox cannot work: every dump and restore traces processes"
		return it
	}
	it.OK, it.Detail = true, "PTRACE_SEIZE and PTRACE_INTERRUPT of a child work"
	if hasCap(effectiveCaps(), capSysPtrace) {
		it.Detail += "; CAP_SYS_PTRACE: processes of other users too"
	} else {
		it.Detail += "; without CAP_SYS_PTRACE: only this user's processes"
	}
	return it
}

func (c *child) pidfdItem() Item {
	it := Item{Name: "pidfd_getfd"}
	switch {
	case c.err != nil:
		it.Detail = "not tried: no probe child"
	case c.gotFD != nil:
		it.Detail = c.gotFD.Error()
	default:
		it.OK, it.Detail = true, "a descriptor of another process can be copied"
		return it
	}
	it.Cost = "dump cannot copy descriptors: pipes with unread data, sockets, deleted files, eventfd and epoll cannot be checkpointed"
	return it
}

// XSAVE state components (arch/x86/include/asm/fpu/types.h, enum xfeature).
var xfeatureNames = []string{0: "x87", 1: "SSE", 2: "AVX", 3: "MPX-BNDREGS", 4: "MPX-BNDCSR",
	5: "AVX-512-opmask", 6: "AVX-512-ZMM_Hi256", 7: "AVX-512-Hi16_ZMM", 9: "PKRU", 11: "CET-U",
	17: "AMX-TILECFG", 18: "AMX-TILEDATA", 19: "APX"}

// xsaveItem reads the features the kernel saves for a thread: ptrace's
// NT_X86_XSTATE regset carries the thread's XCR0 in the first 8
// software-reserved bytes of the FXSAVE area, offset 464
// (arch/x86/kernel/fpu/xstate.c, copy_xstate_to_uabi_buf; GDB reads it
// there as I386_LINUX_XSAVE_XCR0_OFFSET). An image restores only where the
// CPU has all of its features.
func (c *child) xsaveItem() Item {
	it := Item{Name: "xsave"}
	if c.err != nil || len(c.xs) < 512 {
		it.Detail = "not read: no probe child"
		it.Cost = "registers beyond the basic set cannot be saved"
		return it
	}
	feats := binary.LittleEndian.Uint64(c.xs[464:])
	var names []string
	for bit := 0; bit < 64; bit++ {
		if feats&(1<<bit) == 0 {
			continue
		}
		if bit < len(xfeatureNames) && xfeatureNames[bit] != "" {
			names = append(names, xfeatureNames[bit])
		} else {
			names = append(names, fmt.Sprintf("bit%d", bit))
		}
	}
	it.OK = true
	it.Detail = fmt.Sprintf("%d-byte area (NT_X86_XSTATE), XCR0 %#x: %s", len(c.xs), feats, strings.Join(names, " "))
	return it
}
