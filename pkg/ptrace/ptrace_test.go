package ptrace_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/internal/testutil"
	"github.com/chpox/chpox/pkg/ptrace"
)

// counter runs testdata/counter.c and returns it with a channel of the
// numbers it prints. The child is killed and reaped at the end of the test.
func counter(t *testing.T) (*exec.Cmd, <-chan uint64) {
	t.Helper()
	cmd := exec.Command(testutil.BuildC(t, "counter"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, cmd)
	nums := make(chan uint64, 1<<16)
	go func() {
		defer close(nums)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			n, err := strconv.ParseUint(sc.Text(), 10, 64)
			if err != nil {
				return
			}
			nums <- n
		}
	}()
	next(t, nums) // the program runs
	return cmd, nums
}

// next returns the next number printed, failing after 5 s.
func next(t *testing.T, nums <-chan uint64) uint64 {
	t.Helper()
	select {
	case n, ok := <-nums:
		if !ok {
			t.Fatal("counter stopped printing (exited?)")
		}
		return n
	case <-time.After(5 * time.Second):
		t.Fatal("counter printed nothing for 5 s")
	}
	return 0
}

// drain returns how many numbers were waiting and the last one.
func drain(nums <-chan uint64) (n int, last uint64) {
	for {
		select {
		case v, ok := <-nums:
			if !ok {
				return n, last
			}
			n, last = n+1, v
		default:
			return n, last
		}
	}
}

func readMem(t *testing.T, pid int, addr uint64, n int) []byte {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(addr)); err != nil {
		t.Fatalf("read /proc/%d/mem at %#x: %v", pid, addr, err)
	}
	return b
}

// statusField returns a field of /proc/PID/status.
func statusField(t *testing.T, pid int, key string) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, key)
	return ""
}

const sigusr1Bit = uint64(1) << (unix.SIGUSR1 - 1)

// TestSeizeInspectInjectRelease is the life of a dump on the ptrace side:
// freeze a running program, read its state, run system calls inside it,
// put everything back and let it go on as if nothing happened.
func TestSeizeInspectInjectRelease(t *testing.T) {
	cmd, nums := counter(t)
	pid := cmd.Process.Pid
	tr := ptrace.NewTracer()
	umaskBefore := statusField(t, pid, "Umask")

	var origCode []byte // 16 bytes from the word at rip, before the poke
	var codeAddr uint64
	err := tr.Do(func() error {
		tc, err := ptrace.Seize(pid)
		if err != nil {
			return err
		}
		released := false
		defer func() {
			if !released {
				tc.Release()
			}
		}()
		if tc.PID != pid {
			t.Errorf("Tracee.PID = %d, want %d", tc.PID, pid)
		}
		if got := statusField(t, pid, "TracerPid"); got != strconv.Itoa(unix.Gettid()) && got != strconv.Itoa(os.Getpid()) {
			t.Errorf("TracerPid while seized = %s, want this process", got)
		}

		// Frozen: nothing more gets printed.
		time.Sleep(100 * time.Millisecond)
		drain(nums)
		time.Sleep(300 * time.Millisecond)
		if n, _ := drain(nums); n != 0 {
			t.Errorf("the counter printed %d numbers while seized", n)
		}

		r := tc.Regs
		if r.Rip == 0 || r.Rsp == 0 || r.Fs_base == 0 {
			t.Errorf("registers look empty: rip %#x rsp %#x fs_base %#x", r.Rip, r.Rsp, r.Fs_base)
		}
		if r.Cs != 0x33 || r.Ss != 0x2b {
			t.Errorf("cs %#x ss %#x, want the 64-bit user segments 0x33 and 0x2b", r.Cs, r.Ss)
		}
		// The counter spends its time in nanosleep (35) or clock_nanosleep (230).
		if r.Orig_rax != unix.SYS_NANOSLEEP && r.Orig_rax != unix.SYS_CLOCK_NANOSLEEP {
			t.Logf("stopped outside nanosleep: orig_rax %d rax %#x", int64(r.Orig_rax), r.Rax)
		}

		xs, err := tc.XState()
		if err != nil {
			return err
		}
		if len(xs) < 576 { // legacy FXSAVE area (512) + XSAVE header (64)
			t.Fatalf("XState is %d bytes, want at least 576", len(xs))
		}
		// For ptrace the kernel stores XCR0 (the enabled user features)
		// at byte 464 of the FXSAVE area, where gdb reads it; the XSAVE
		// header follows at 512 and is in the standard (uncompacted) form.
		xcr0 := binary.LittleEndian.Uint64(xs[464:])
		if xcr0&3 != 3 {
			t.Errorf("XState XCR0 %#x lacks x87|SSE", xcr0)
		}
		if bv := binary.LittleEndian.Uint64(xs[512:]); bv&^xcr0 != 0 {
			t.Errorf("XState xstate_bv %#x has features outside XCR0 %#x", bv, xcr0)
		}
		if comp := binary.LittleEndian.Uint64(xs[520:]); comp != 0 {
			t.Errorf("XState xcomp_bv %#x, want 0 (standard format)", comp)
		}
		if xcr0&4 != 0 && len(xs) < 576+256 {
			t.Errorf("XCR0 %#x has AVX but XState is only %d bytes", xcr0, len(xs))
		}

		mask, err := tc.SigMask()
		if err != nil {
			return err
		}
		if mask != sigusr1Bit {
			t.Errorf("SigMask = %#x, want SIGUSR1 only (%#x)", mask, sigusr1Bit)
		}

		rs, err := tc.Rseq()
		if err != nil {
			return err
		}
		// glibc >= 2.35 registers rseq for every thread with RSEQ_SIG.
		if !rs.Registered || rs.Sig != 0x53053053 || rs.Size < 20 {
			t.Errorf("Rseq = %+v, want a glibc registration (sig 0x53053053, size >= 20)", rs)
		}
		if d := int64(rs.Addr - r.Fs_base); d < -(1<<20) || d > 1<<20 {
			t.Errorf("rseq area %#x is not near the thread pointer %#x", rs.Addr, r.Fs_base)
		}
		if sig := tc.DeferredSignal(); sig != 0 {
			t.Errorf("DeferredSignal = %d, want 0", sig)
		}

		codeAddr = r.Rip &^ 7
		origCode = readMem(t, pid, codeAddr, 16)

		if err := tc.PokeStub(); err != nil {
			return err
		}
		poked := readMem(t, pid, codeAddr, 16)
		want := append(append([]byte{}, ptrace.StubCode()...), origCode[3:]...)
		if !bytes.Equal(poked, want) {
			t.Errorf("code after PokeStub = % x, want % x", poked, want)
		}
		// Injected calls run with every signal blocked; Undo must put the
		// child's own mask back.
		if err := tc.SetSigMask(^uint64(0)); err != nil {
			return err
		}

		got, err := tc.Syscall(unix.SYS_GETPID)
		if err != nil {
			return fmt.Errorf("injected getpid: %w", err)
		}
		if int(got) != pid {
			t.Errorf("injected getpid = %d, want %d", got, pid)
		}
		got, err = tc.Syscall(unix.SYS_GETPPID)
		if err != nil {
			return fmt.Errorf("injected getppid: %w", err)
		}
		if int(got) != os.Getpid() {
			t.Errorf("injected getppid = %d, want %d", got, os.Getpid())
		}
		// Arguments reach the call: umask(077) returns the old umask and
		// umask(old) returns 077 and puts it back.
		old, err := tc.Syscall(unix.SYS_UMASK, 0o077)
		if err != nil {
			return fmt.Errorf("injected umask: %w", err)
		}
		if got, err := tc.Syscall(unix.SYS_UMASK, old); err != nil || got != 0o077 {
			t.Errorf("injected umask(old) = %#o, %v; want 077", got, err)
		}

		var errno unix.Errno
		_, err = tc.Syscall(100000)
		if !errors.As(err, &errno) || errno != unix.ENOSYS {
			t.Errorf("injected syscall 100000: err %v, want unix.Errno ENOSYS", err)
		}
		_, err = tc.Syscall(unix.SYS_CLOSE, 9999)
		if !errors.As(err, &errno) || errno != unix.EBADF {
			t.Errorf("injected close(9999): err %v, want unix.Errno EBADF", err)
		}
		// The tracee is still usable after a failed call.
		if got, err := tc.Syscall(unix.SYS_GETPID); err != nil || int(got) != pid {
			t.Errorf("getpid after a failed call = %d, %v", got, err)
		}

		released = true
		return tc.Release()
	})
	if err != nil {
		t.Fatal(err)
	}

	if got := readMem(t, pid, codeAddr, 16); !bytes.Equal(got, origCode) {
		t.Errorf("code at %#x after Release = % x, want the original % x", codeAddr, got, origCode)
	}
	deadline := time.Now().Add(2 * time.Second)
	for statusField(t, pid, "TracerPid") != "0" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := statusField(t, pid, "TracerPid"); got != "0" {
		t.Errorf("TracerPid after Release = %s, want 0", got)
	}
	if got, want := statusField(t, pid, "SigBlk"), fmt.Sprintf("%016x", sigusr1Bit); got != want {
		t.Errorf("SigBlk after Release = %s, want %s (the child's own mask)", got, want)
	}
	if got := statusField(t, pid, "Umask"); got != umaskBefore {
		t.Errorf("Umask after Release = %s, want %s", got, umaskBefore)
	}

	// It goes on counting, without a gap or a repeat.
	_, last := drain(nums)
	for i := 0; i < 20; i++ {
		n := next(t, nums)
		if n != last+1 {
			t.Fatalf("after Release the counter printed %d after %d", n, last)
		}
		last = n
	}
}

// TestReleaseAfterSeizeOnly: a seize and release with no injection must
// leave a sleeping program sleeping and then running normally.
func TestReleaseAfterSeizeOnly(t *testing.T) {
	cmd, nums := counter(t)
	pid := cmd.Process.Pid
	tr := ptrace.NewTracer()
	for i := 0; i < 5; i++ {
		err := tr.Do(func() error {
			tc, err := ptrace.Seize(pid)
			if err != nil {
				return err
			}
			return tc.Release()
		})
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
	}
	_, last := drain(nums)
	for i := 0; i < 10; i++ {
		n := next(t, nums)
		if last != 0 && n != last+1 {
			t.Fatalf("counter printed %d after %d", n, last)
		}
		last = n
	}
}

// TestSeizeNoProcess: a PID that does not exist fails with an error that
// says so.
func TestSeizeNoProcess(t *testing.T) {
	testutil.NeedRoot(t)
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid // exited and reaped
	tr := ptrace.NewTracer()
	err := tr.Do(func() error {
		tc, err := ptrace.Seize(pid)
		if err == nil {
			tc.Release()
		}
		return err
	})
	if err == nil {
		t.Fatalf("Seize(%d) of a reaped process succeeded", pid)
	}
	if !errors.Is(err, unix.ESRCH) && !errors.Is(err, ptrace.ErrExited) {
		t.Errorf("Seize(%d) = %v, want an error wrapping ESRCH or ErrExited", pid, err)
	}
	var pe *ptrace.Error
	if !errors.As(err, &pe) || pe.PID != pid {
		t.Errorf("Seize error %v is not a *ptrace.Error for pid %d", err, pid)
	}
}

// TestInjectIntoKilled: a tracee killed from outside during injection is
// reported as ErrExited, not as a hang or a strange stop, and its end is
// not lost: the error carries it if a wait inside collected it.
func TestInjectIntoKilled(t *testing.T) {
	for _, kill := range []string{"before", "during"} {
		t.Run(kill, func(t *testing.T) { injectIntoKilled(t, kill) })
	}
}

// injectIntoKilled kills the tracee before an injected call, or while it
// blocks in one.
func injectIntoKilled(t *testing.T, kill string) {
	testutil.NeedRoot(t)
	cmd := exec.Command("sleep", "100")
	testutil.Start(t, cmd)
	pid := cmd.Process.Pid
	time.Sleep(50 * time.Millisecond)
	tr := ptrace.NewTracer()
	err := tr.Do(func() error {
		tc, err := ptrace.Seize(pid)
		if err != nil {
			return fmt.Errorf("seize: %w", err)
		}
		if err := tc.PokeStub(); err != nil {
			return fmt.Errorf("poke: %w", err)
		}
		if got, err := tc.Syscall(unix.SYS_GETPID); err != nil || int(got) != pid {
			return fmt.Errorf("getpid in sleep = %d, %v", got, err)
		}
		if kill == "before" {
			unix.Kill(pid, unix.SIGKILL)
		} else {
			// Killed while the injected call blocks: the injection's own
			// wait collects the end.
			time.AfterFunc(100*time.Millisecond, func() { unix.Kill(pid, unix.SIGKILL) })
		}
		_, err = tc.Syscall(unix.SYS_PAUSE)
		if err == nil {
			return errors.New("injection into a killed process succeeded")
		}
		if !errors.Is(err, ptrace.ErrExited) {
			return fmt.Errorf("injection into a killed process: %w, want ErrExited", err)
		}
		return endReportedOnce(pid, err)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// endReportedOnce checks that the end of a killed tracee reaches the
// caller once: in err when the injection's wait collected it, else to
// the caller's own wait (chpox run's loop would hang otherwise).
func endReportedOnce(pid int, err error) error {
	var ws unix.WaitStatus
	inErr := false
	for _, r := range ptrace.Ends(err) {
		if r.PID == pid {
			ws, inErr = r.Status, true
		}
	}
	var got unix.WaitStatus
	_, werr := unix.Wait4(pid, &got, unix.WALL, nil)
	switch {
	case inErr && werr == nil:
		return fmt.Errorf("the end of %d is in the error (%v) and was still there to wait for", pid, err)
	case inErr:
		got = ws
	case werr != nil:
		return fmt.Errorf("the end of %d is lost: not in the error (%v), and wait4: %w", pid, err, werr)
	}
	if !got.Signaled() || got.Signal() != unix.SIGKILL {
		return fmt.Errorf("the end of %d: status %#x, want killed by SIGKILL", pid, uint32(got))
	}
	return nil
}

// TestSleepSurvivesInjection: coreutils sleep, stopped in clock_nanosleep
// (restart_block), is injected into and released; it must still sleep and
// not die or wake early.
func TestSleepSurvivesInjection(t *testing.T) {
	testutil.NeedRoot(t)
	cmd := exec.Command("sleep", "1.5")
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	time.Sleep(200 * time.Millisecond)
	tr := ptrace.NewTracer()
	err := tr.Do(func() error {
		tc, err := ptrace.Seize(pid)
		if err != nil {
			return err
		}
		if err := tc.PokeStub(); err != nil {
			tc.Release()
			return err
		}
		if _, err := tc.Syscall(unix.SYS_GETPID); err != nil {
			tc.Release()
			return err
		}
		return tc.Release()
	})
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sleep after injection: %v", err)
	}
	if d := time.Since(start); d < 1400*time.Millisecond {
		t.Errorf("sleep 1.5 returned after %v", d)
	}
}
