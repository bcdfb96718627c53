package restore

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/procinfo"
)

func neg(e uint64) uint64 { return -e }

// TestRestartSyscall follows arch_do_signal_or_restart for a stop with no
// handler to run: ERESTARTSYS, ERESTARTNOINTR and ERESTARTNOHAND restart
// the call; ERESTART_RESTARTBLOCK restarts sleeps, futex waits and poll
// with their original arguments and becomes EINTR for anything else;
// anything else is left.
func TestRestartSyscall(t *testing.T) {
	const rip = 0x401000
	cases := []struct {
		name             string
		origRax, rax     uint64
		wantRax, wantRip uint64
	}{
		{"ERESTARTSYS (read)", unix.SYS_READ, neg(512), unix.SYS_READ, rip - 2},
		{"ERESTARTNOINTR (pause-like)", unix.SYS_WAIT4, neg(513), unix.SYS_WAIT4, rip - 2},
		{"ERESTARTNOHAND (pause)", unix.SYS_PAUSE, neg(514), unix.SYS_PAUSE, rip - 2},
		{"ERESTART_RESTARTBLOCK (clock_nanosleep)", unix.SYS_CLOCK_NANOSLEEP, neg(516), unix.SYS_CLOCK_NANOSLEEP, rip - 2},
		{"ERESTART_RESTARTBLOCK (nanosleep)", unix.SYS_NANOSLEEP, neg(516), unix.SYS_NANOSLEEP, rip - 2},
		{"ERESTART_RESTARTBLOCK (futex)", unix.SYS_FUTEX, neg(516), unix.SYS_FUTEX, rip - 2},
		{"ERESTART_RESTARTBLOCK (poll)", unix.SYS_POLL, neg(516), unix.SYS_POLL, rip - 2},
		{"ERESTART_RESTARTBLOCK (other: EINTR)", unix.SYS_READ, neg(516), neg(uint64(unix.EINTR)), rip},
		{"not in a syscall", ^uint64(0), neg(512), neg(512), rip},
		{"normal return", unix.SYS_READ, 42, 42, rip},
		{"error return", unix.SYS_READ, neg(uint64(unix.EAGAIN)), neg(uint64(unix.EAGAIN)), rip},
		{"EINTR stays", unix.SYS_READ, neg(uint64(unix.EINTR)), neg(uint64(unix.EINTR)), rip},
		{"ERESTART_RESTARTBLOCK-1 (515, not a restart code)", unix.SYS_READ, neg(515), neg(515), rip},
		{"syscall 0 restarted", 0, neg(512), 0, rip - 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := unix.PtraceRegs{Orig_rax: c.origRax, Rax: c.rax, Rip: rip, Rdi: 7, Rsp: 0x7ffd0000}
			restartSyscall(&r)
			if r.Rax != c.wantRax || r.Rip != c.wantRip {
				t.Errorf("rax %#x rip %#x, want rax %#x rip %#x", r.Rax, r.Rip, c.wantRax, c.wantRip)
			}
			if r.Orig_rax != ^uint64(0) {
				t.Errorf("orig_rax %#x, want -1 (no second restart by the kernel)", r.Orig_rax)
			}
			if r.Rdi != 7 || r.Rsp != 0x7ffd0000 {
				t.Errorf("other registers changed: rdi %#x rsp %#x", r.Rdi, r.Rsp)
			}
		})
	}
}

func TestFreeSpan(t *testing.T) {
	const (
		k4   = 4096
		size = 0x10000
	)
	vsyscall := span{0xffffffffff600000, 0xffffffffff601000}
	cases := []struct {
		name string
		used []span
		size uint64
		want uint64
		err  bool
	}{
		{"nothing used", nil, size, minAddr, false},
		{"first area at minAddr", []span{{minAddr, minAddr + 0x100000}}, size, minAddr + 0x100000 + k4, false},
		{"gap exactly size plus both margins",
			[]span{{minAddr, 0x200000}, {0x200000 + k4 + size + k4, 0x400000}}, size, 0x200000 + k4, false},
		{"gap one page short",
			[]span{{minAddr, 0x200000}, {0x200000 + k4 + size, 0x400000}}, size, 0x400000 + k4, false},
		{"gap without the margins is not used",
			[]span{{minAddr, 0x200000}, {0x200000 + size, 0x400000}}, size, 0x400000 + k4, false},
		{"unsorted input",
			[]span{{0x800000, 0x900000}, {minAddr, 0x700000}}, size, 0x700000 + k4, false},
		{"nested spans",
			[]span{{minAddr, 0x800000}, {0x200000, 0x300000}}, size, 0x800000 + k4, false},
		{"span across minAddr", []span{{0x1000, minAddr + 0x5000}}, size, minAddr + 0x5000 + k4, false},
		{"spans below minAddr only", []span{{0x1000, 0x2000}, {0x10000, minAddr - k4}}, size, minAddr, false},
		{"room before the first area", []span{{minAddr + size + k4, 0x900000}}, size, minAddr, false},
		{"full", []span{{0, maxAddr}}, size, 0, true},
		{"top of the address space", []span{{0, maxAddr - size - k4}}, size, maxAddr - size, false},
		{"too little at the top", []span{{0, maxAddr - size}}, size, 0, true},
		// The loader's own maps include [vsyscall], above maxAddr: it must
		// not make the space above the last user area look free.
		{"full with vsyscall", []span{{0, maxAddr - k4}, vsyscall}, size, 0, true},
		{"too little at the top, with vsyscall", []span{{0, maxAddr - size}, vsyscall}, size, 0, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			used := append([]span(nil), c.used...)
			got, err := freeSpan(used, c.size)
			if c.err {
				if err == nil {
					t.Fatalf("freeSpan = %#x, want an error (end %#x > maxAddr %#x)", got, got+c.size, uint64(maxAddr))
				}
				return
			}
			if err != nil {
				t.Fatalf("freeSpan: %v", err)
			}
			if got != c.want {
				t.Errorf("freeSpan = %#x, want %#x", got, c.want)
			}
			checkFree(t, c.used, got, c.size)
		})
	}
}

// checkFree asserts the properties of any answer: in user space, and a
// page away from every used span that is not below minAddr.
func checkFree(t *testing.T, used []span, at, size uint64) {
	t.Helper()
	if at < minAddr || at+size > maxAddr || at%4096 != 0 {
		t.Errorf("%#x+%#x is outside [minAddr, maxAddr) or unaligned", at, size)
	}
	for _, u := range used {
		if u.end <= minAddr-4096 {
			continue
		}
		if !(at+size+4096 <= u.start || at >= u.end+4096) {
			t.Errorf("%#x-%#x is within a page of used %#x-%#x", at, at+size, u.start, u.end)
		}
	}
}

// TestFreeSpanProcess finds a scratch range in our own address space: the
// answer can really be mapped there with MAP_FIXED_NOREPLACE.
func TestFreeSpanProcess(t *testing.T) {
	used, err := mappings(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 10
	at, err := freeSpan(append([]span(nil), used...), size)
	if err != nil {
		t.Fatal(err)
	}
	checkFree(t, used, at, size)
	// Map it for real (MAP_FIXED_NOREPLACE fails with EEXIST if taken):
	// if it worked it is free, then unmap it.
	r, _, e := unix.Syscall6(unix.SYS_MMAP, uintptr(at), size, unix.PROT_NONE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_FIXED_NOREPLACE, ^uintptr(0), 0)
	if e != 0 {
		t.Fatalf("mmap at the free span %#x: %v", at, e)
	}
	if uint64(r) != at {
		t.Fatalf("mmap placed the span at %#x, not %#x", r, at)
	}
	unix.Syscall(unix.SYS_MUNMAP, r, size, 0)
}

func TestWaitPIDFreeLive(t *testing.T) {
	start := time.Now()
	err := waitPIDFree(os.Getpid(), 2*time.Second)
	if !errors.Is(err, ErrPIDInUse) {
		t.Fatalf("waitPIDFree(our pid) = %v, want ErrPIDInUse", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a live process made waitPIDFree wait %v; it should not wait", d)
	}
	if !strings.Contains(err.Error(), "restore.test") {
		t.Errorf("error %q does not name the holder", err)
	}
}

func TestWaitPIDFreeReaped(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if err := waitPIDFree(cmd.Process.Pid, 0); err != nil {
		t.Errorf("waitPIDFree of an exited, reaped PID: %v", err)
	}
}

// zombie starts true and returns once it is a zombie (not reaped).
func zombie(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Wait() })
	for i := 0; i < 1000; i++ {
		if s, _, err := procinfo.State(cmd.Process.Pid); err == nil && s == "Z" {
			return cmd
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatal("true did not become a zombie")
	return nil
}

func TestWaitPIDFreeZombieStays(t *testing.T) {
	cmd := zombie(t)
	start := time.Now()
	err := waitPIDFree(cmd.Process.Pid, 150*time.Millisecond)
	if !errors.Is(err, ErrPIDInUse) {
		t.Fatalf("waitPIDFree of an unreaped zombie = %v, want ErrPIDInUse", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("gave up after %v, before the 150ms wait", d)
	}
}

func TestWaitPIDFreeZombieReaped(t *testing.T) {
	cmd := zombie(t)
	reaped := make(chan struct{})
	go func() {
		defer close(reaped)
		time.Sleep(100 * time.Millisecond)
		cmd.Wait()
	}()
	if err := waitPIDFree(cmd.Process.Pid, 5*time.Second); err != nil {
		t.Errorf("waitPIDFree of a zombie reaped during the wait: %v", err)
	}
	<-reaped
}
