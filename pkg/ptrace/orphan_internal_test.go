package ptrace

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/internal/testutil"
)

// orphanPoints are the steps of an injected call (testHook) at which the
// tracer is killed.
var orphanPoints = []string{"regs", "mask", "entry", "exit", "interrupt", "unmasked"}

// TestOrphanRecovers kills a tracer (a helper process) at every step of an
// injection through the trampoline while the tracee waits in an
// interrupted system call, and checks that the orphan comes back by
// itself: the call restarted and completes, registers and mask as they
// were, not traced. read(2) comes back with -ERESTARTSYS, nanosleep(2)
// with -ERESTART_RESTARTBLOCK.
func TestOrphanRecovers(t *testing.T) {
	bin := testutil.BuildC(t, "orphan")
	for _, mode := range []string{"read", "sleep"} {
		for _, point := range orphanPoints {
			t.Run(mode+"/"+point, func(t *testing.T) {
				t.Parallel() // each has its own target and tracer
				orphanAt(t, bin, mode, point)
			})
		}
	}
}

func lines(t *testing.T, cmd *exec.Cmd) <-chan string {
	t.Helper()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan string, 16)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

func expectLine(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case l := <-ch:
		if l != want {
			t.Fatalf("got line %q, want %q", l, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no line %q within 10s", want)
	}
}

func orphanAt(t *testing.T, bin, mode, point string) {
	target := exec.Command(bin, mode)
	in, err := target.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := lines(t, target)
	testutil.Start(t, target)
	expectLine(t, out, "waiting")
	pid := target.Process.Pid
	nr := map[string]string{"read": "0 ", "sleep": "35 "}[mode]
	for deadline := time.Now().Add(5 * time.Second); ; {
		sc, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		if strings.HasPrefix(string(sc), nr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the target is not waiting in its call: %q", sc)
		}
		time.Sleep(time.Millisecond)
	}
	helper := exec.Command(os.Args[0], "-test.run=^TestOrphanHelper$", "-test.v")
	helper.Env = append(os.Environ(), "CHPOX_ORPHAN_PID="+strconv.Itoa(pid), "CHPOX_ORPHAN_POINT="+point)
	hout := lines(t, helper)
	testutil.Start(t, helper)
	for l := range hout {
		if l == "ready" {
			break
		}
		if strings.HasPrefix(l, "helper:") {
			t.Fatal(l)
		}
	}
	helper.Process.Kill()
	helper.Wait()
	if mode == "read" {
		in.Write([]byte("x"))
	}
	expectLine(t, out, "ok")
	if err := target.Wait(); err != nil {
		t.Fatalf("the orphan ended with %v", err)
	}
}

// TestOrphanHelper is the tracer that TestOrphanRecovers kills: it stops
// at the step CHPOX_ORPHAN_POINT of an injection into CHPOX_ORPHAN_PID.
func TestOrphanHelper(t *testing.T) {
	pid, _ := strconv.Atoi(os.Getenv("CHPOX_ORPHAN_PID"))
	point := os.Getenv("CHPOX_ORPHAN_POINT")
	if pid == 0 {
		t.Skip("runs only as TestOrphanRecovers' helper process")
	}
	testHook = func(p string) {
		if p == point {
			fmt.Println("ready")
			time.Sleep(time.Hour) // until killed
		}
	}
	err := NewTracer().Do(func() error {
		tc, err := Seize(pid)
		if err != nil {
			return err
		}
		defer tc.Release()
		tr, err := PlaceTrampoline(pid)
		if err != nil {
			return err
		}
		if err := tc.Enter(tr); err != nil {
			return err
		}
		for _, nr := range []uint64{unix.SYS_GETPID, unix.SYS_GETPPID} {
			if _, err := tc.Syscall(nr); err != nil {
				return err
			}
		}
		return tc.Leave()
	})
	fmt.Println("helper: point", point, "never reached:", err)
}

// TestVDSOPadding: the vDSO of this process has room for the trampoline
// past its ELF content, and the content end is where the zeros start.
func TestVDSOPadding(t *testing.T) {
	start, end, err := vdsoRange(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	img := make([]byte, end-start)
	if err := ReadMem(os.Getpid(), start, img); err != nil {
		t.Fatal(err)
	}
	content, err := elfContentEnd(img)
	if err != nil {
		t.Fatal(err)
	}
	if content == 0 || content > uint64(len(img))-tramSize {
		t.Fatalf("vdso of %d bytes: content ends at %d, no room for %d bytes", len(img), content, tramSize)
	}
	// The section header table is the last thing in the vDSO image.
	if shoff := binary.LittleEndian.Uint64(img[0x28:]); content < shoff+64 {
		t.Errorf("content end %d lies before the end of the section headers (at %d)", content, shoff)
	}
	if !allZero(img[content:]) {
		t.Errorf("bytes after the content end %d are not zero", content)
	}
	t.Logf("[vdso] %d bytes, ELF content %d, padding %d", len(img), content, uint64(len(img))-content)
}
