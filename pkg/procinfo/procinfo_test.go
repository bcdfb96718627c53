package procinfo_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/internal/testutil"
	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/procinfo"
)

// filesChild runs testdata/files.c and waits until it is set up.
type filesChild struct {
	pid                       int
	bin, dir                  string
	regular, appendf, deleted string
	args                      []string
	content                   []byte // of the deleted file
}

func startFiles(t *testing.T) *filesChild {
	t.Helper()
	bin := testutil.BuildC(t, "files")
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := &filesChild{
		bin: bin, dir: dir,
		regular: filepath.Join(dir, "regular"),
		appendf: filepath.Join(dir, "log"),
		deleted: filepath.Join(dir, "gone"),
	}
	if err := os.WriteFile(c.regular, make([]byte, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.appendf, []byte("line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.content = make([]byte, 10000)
	for i := range c.content {
		c.content[i] = byte(i*31 + 7)
	}
	c.args = []string{bin, dir, c.regular, c.appendf, c.deleted}
	cmd := exec.Command(bin, c.args[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	testutil.Start(t, cmd)
	c.pid = cmd.Process.Pid
	// The child replaces its stdout with /dev/null as its last step.
	done := make(chan struct{})
	go func() { io.Copy(io.Discard, out); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("files child did not finish its setup")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid))
	if err != nil || strings.Contains(string(b), ") Z ") {
		t.Fatalf("files child died during setup (stat %q, %v)", b, err)
	}
	return c
}

// TestRead checks the /proc view of a child with a known cwd, umask,
// limits and name.
func TestRead(t *testing.T) {
	c := startFiles(t)
	if err := unix.Prlimit(c.pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: 321, Max: 654}, nil); err != nil {
		t.Fatal(err)
	}
	if err := unix.Prlimit(c.pid, unix.RLIMIT_CORE, &unix.Rlimit{Cur: 4096, Max: unix.RLIM_INFINITY}, nil); err != nil {
		t.Fatal(err)
	}
	in, err := procinfo.Read(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	if in.PID != c.pid || in.PPID != os.Getpid() {
		t.Errorf("PID %d PPID %d, want %d and %d", in.PID, in.PPID, c.pid, os.Getpid())
	}
	if in.PGID != unix.Getpgrp() {
		t.Errorf("PGID %d, want ours %d", in.PGID, unix.Getpgrp())
	}
	if sid, _ := unix.Getsid(0); in.SID != sid {
		t.Errorf("SID %d, want ours %d", in.SID, sid)
	}
	if in.Comm != "chpox-files" {
		t.Errorf("Comm %q, want chpox-files (PR_SET_NAME)", in.Comm)
	}
	if in.Umask != 0o027 {
		t.Errorf("Umask %#o, want 027", in.Umask)
	}
	if in.Cwd != c.dir || in.Root != "/" || in.Exe != c.bin {
		t.Errorf("Cwd %q Root %q Exe %q, want %q, /, %q", in.Cwd, in.Root, in.Exe, c.dir, c.bin)
	}
	if d := cmp.Diff(c.args, in.Cmdline); d != "" {
		t.Errorf("Cmdline (-want +got):\n%s", d)
	}
	if in.Zombie || len(in.Children) != 0 || !cmp.Equal(in.TIDs, []int{c.pid}) {
		t.Errorf("Zombie %v Children %v Threads %v, want a live single-threaded process", in.Zombie, in.Children, in.TIDs)
	}
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	for i := 0; i < 4; i++ {
		if in.Creds.UID[i] != uid || in.Creds.GID[i] != gid {
			t.Errorf("Creds %+v, want uid %d gid %d everywhere", in.Creds, uid, gid)
			break
		}
	}

	if len(in.Rlimits) != 16 {
		t.Fatalf("%d rlimits, want RLIM_NLIMITS = 16", len(in.Rlimits))
	}
	for i, l := range in.Rlimits {
		if l.Resource != i {
			t.Errorf("Rlimits[%d] is resource %d", i, l.Resource)
		}
		var want unix.Rlimit
		if err := unix.Prlimit(c.pid, i, nil, &want); err != nil {
			t.Fatal(err)
		}
		if l.Cur != want.Cur || l.Max != want.Max {
			t.Errorf("rlimit %d = %d/%d, want %d/%d", i, l.Cur, l.Max, want.Cur, want.Max)
		}
	}
	if l := in.Rlimits[unix.RLIMIT_NOFILE]; l.Cur != 321 || l.Max != 654 {
		t.Errorf("RLIMIT_NOFILE = %d/%d, want 321/654", l.Cur, l.Max)
	}
	if l := in.Rlimits[unix.RLIMIT_CORE]; l.Cur != 4096 || l.Max != unix.RLIM_INFINITY {
		t.Errorf("RLIMIT_CORE = %d/%d, want 4096/unlimited", l.Cur, l.Max)
	}

	mm := in.MM
	if !(mm.StartCode > 0 && mm.StartCode < mm.EndCode && mm.StartData < mm.EndData &&
		mm.StartBrk > 0 && mm.ArgStart < mm.ArgEnd && mm.EnvStart <= mm.EnvEnd && mm.StartStack > mm.ArgStart-1<<20) {
		t.Errorf("implausible mm fields %+v", mm)
	}
	// argv is where the mm fields say.
	f, err := os.Open(fmt.Sprintf("/proc/%d/mem", c.pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	argv := make([]byte, mm.ArgEnd-mm.ArgStart)
	if _, err := f.ReadAt(argv, int64(mm.ArgStart)); err != nil {
		t.Fatal(err)
	}
	if got, want := string(argv), strings.Join(c.args, "\x00")+"\x00"; got != want {
		t.Errorf("memory at ArgStart..ArgEnd = %q, want %q", got, want)
	}
	// auxv: (key, value) pairs ending with AT_NULL, AT_PAGESZ = 4096.
	pagesz := uint64(0)
	for i := 0; i+16 <= len(in.Auxv); i += 16 {
		k, v := binary.LittleEndian.Uint64(in.Auxv[i:]), binary.LittleEndian.Uint64(in.Auxv[i+8:])
		if k == 6 { // AT_PAGESZ
			pagesz = v
		}
	}
	if len(in.Auxv)%16 != 0 || pagesz != 4096 {
		t.Errorf("auxv of %d bytes, AT_PAGESZ %d; want pairs with 4096", len(in.Auxv), pagesz)
	}
}

func TestReadNoProcess(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	_, err := procinfo.Read(cmd.Process.Pid)
	if !errors.Is(err, procinfo.ErrNoProcess) {
		t.Errorf("Read of a reaped PID: %v, want ErrNoProcess", err)
	}
}

// TestFiles checks every fd of testdata/files.c.
func TestFiles(t *testing.T) {
	c := startFiles(t)
	fs, err := procinfo.Files(c.pid)
	if err != nil {
		t.Fatal(err)
	}
	defer procinfo.CloseFiles(fs)
	byFD := map[int]*procinfo.OpenFile{}
	var fds []int
	for _, f := range fs {
		byFD[f.FD] = f
		fds = append(fds, f.FD)
	}
	if d := cmp.Diff([]int{0, 1, 2, 10, 11, 12, 13}, fds); d != "" {
		t.Fatalf("fds (-want +got):\n%s", d)
	}
	for _, fd := range []int{0, 1, 2, 13} {
		f := byFD[fd]
		if f.Kind != format.FileChar || f.Path != "/dev/null" || f.Flags&unix.O_ACCMODE != unix.O_RDWR || f.Source != nil {
			t.Errorf("fd %d = %+v, want /dev/null, chardev, O_RDWR", fd, f.File)
		}
	}
	reg := byFD[10]
	if reg.Kind != format.FileRegular || reg.Path != c.regular || reg.Pos != 1234 ||
		reg.Flags&unix.O_ACCMODE != unix.O_RDWR || reg.Flags&(unix.O_APPEND|unix.O_CLOEXEC) != 0 || reg.Source != nil {
		t.Errorf("fd 10 = %+v, want %s O_RDWR at 1234", reg.File, c.regular)
	}
	if reg.Mode&unix.S_IFMT != unix.S_IFREG || reg.Mode&0o777 != 0o644 {
		t.Errorf("fd 10 mode %#o, want a regular file 0644", reg.Mode)
	}
	app := byFD[11]
	if app.Kind != format.FileRegular || app.Path != c.appendf || app.Flags&unix.O_ACCMODE != unix.O_WRONLY ||
		app.Flags&unix.O_APPEND == 0 || app.Flags&unix.O_CLOEXEC == 0 {
		t.Errorf("fd 11 = %+v (flags %#o), want %s O_WRONLY|O_APPEND|O_CLOEXEC", app.File, app.Flags, c.appendf)
	}
	del := byFD[12]
	if del.Kind != format.FileDeleted || del.Path != c.deleted || del.Pos != 5 || del.Size != 10000 || del.Source == nil {
		t.Fatalf("fd 12 = %+v size %d, want the deleted %s at 5, 10000 bytes", del.File, del.Size, c.deleted)
	}
	if del.Mode&0o777 != 0o640&^0o027 {
		t.Errorf("deleted file mode %#o, want 0640 under umask 027", del.Mode&0o777)
	}
	var buf bytes.Buffer
	if err := del.CopyContent(&buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), c.content) {
		t.Errorf("deleted content: %d bytes, differs from the %d written", buf.Len(), len(c.content))
	}
	// Copying twice gives the same (the source is read at offsets, not
	// through its own position).
	buf.Reset()
	if err := del.CopyContent(&buf); err != nil || !bytes.Equal(buf.Bytes(), c.content) {
		t.Errorf("second CopyContent: %d bytes, %v", buf.Len(), err)
	}
	// Listing files changes nothing in the process: offsets stay.
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/12", c.pid)); err != nil || !strings.HasPrefix(string(b), "pos:\t5\n") {
		t.Errorf("fdinfo of fd 12 after Files: %q, %v", b, err)
	}
}

// runWithFile runs sleep with f as its fd 3.
func runWithFile(t *testing.T, f *os.File) int {
	t.Helper()
	cmd := exec.Command("sleep", "100")
	cmd.ExtraFiles = []*os.File{f}
	testutil.Start(t, cmd)
	f.Close()
	// Wait until sleep has exec'd (fd 3 is kept; the fd table is final).
	for i := 0; i < 500; i++ {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", cmd.Process.Pid)); strings.HasSuffix(exe, "/sleep") {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	return cmd.Process.Pid
}

// TestFilesUnsupported: descriptors chpox cannot restore yet make Files
// fail with ErrUnsupported naming the fd.
func TestFilesUnsupported(t *testing.T) {
	testutil.NeedRoot(t)
	// (timerfd, then inotify, were refused here until they were
	// supported; a userfaultfd has no restore.)
	uffd := func() *os.File {
		fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC, 0, 0)
		if errno != 0 {
			t.Fatal("userfaultfd:", errno)
		}
		return os.NewFile(fd, "userfaultfd")
	}
	for name, mk := range map[string]func() *os.File{"userfaultfd": uffd} {
		t.Run(name, func(t *testing.T) {
			pid := runWithFile(t, mk())
			fs, err := procinfo.Files(pid)
			procinfo.CloseFiles(fs)
			if !errors.Is(err, procinfo.ErrUnsupported) {
				t.Fatalf("Files with a %s: %v, want ErrUnsupported", name, err)
			}
			if !strings.Contains(err.Error(), "fd 3") {
				t.Errorf("error %q does not name fd 3", err)
			}
		})
	}
}

// TestFilesPipe: a pipe end is listed as a pipe with no offset (pipes
// were refused with ErrUnsupported until pipe support was added).
func TestFilesPipe(t *testing.T) {
	testutil.NeedRoot(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	pid := runWithFile(t, w)
	fs, err := procinfo.Files(pid)
	defer procinfo.CloseFiles(fs)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fs {
		if f.FD == 3 {
			if f.Kind != format.FilePipe || f.Pos != 0 || f.Flags&unix.O_ACCMODE != unix.O_WRONLY || !strings.HasPrefix(f.Path, "pipe:[") {
				t.Errorf("fd 3 = %+v, want the write end of a pipe", f.File)
			}
			return
		}
	}
	t.Error("fd 3 is not listed")
}

// TestFilesEventfdEpoll: an eventfd's counter and an epoll set's watches
// are read from fdinfo.
func TestFilesEventfdEpoll(t *testing.T) {
	testutil.NeedRoot(t)
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_SEMAPHORE)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Write(efd, binary.LittleEndian.AppendUint64(nil, 0x1234)); err != nil {
		t.Fatal(err)
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: 77, Pad: 5}
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &ev); err != nil {
		t.Fatal(err)
	}
	read := func(f *os.File) *procinfo.OpenFile {
		pid := runWithFile(t, f) // as the child's fd 3
		fs, err := procinfo.Files(pid)
		t.Cleanup(func() { procinfo.CloseFiles(fs) })
		if err != nil {
			t.Fatal(err)
		}
		for _, of := range fs {
			if of.FD == 3 {
				return of
			}
		}
		t.Fatalf("fd 3 not listed: %+v", fs)
		return nil
	}
	gotE := read(os.NewFile(uintptr(efd), "eventfd"))
	gotP := read(os.NewFile(uintptr(ep), "epoll"))
	if gotE.Kind != format.FileEventfd || gotE.Count != 0x1234 || !gotE.Semaphore {
		t.Errorf("eventfd read as %+v, want count 0x1234, semaphore", gotE)
	}
	// The kernel always adds EPOLLERR and EPOLLHUP to what was asked.
	want := []format.EpollWatch{{FD: efd, Events: unix.EPOLLIN | unix.EPOLLET | unix.EPOLLERR | unix.EPOLLHUP, Data: 5<<32 | 77}}
	if gotP.Kind != format.FileEpoll || !cmp.Equal(gotP.Watches, want) {
		t.Errorf("epoll read as %+v, want watches %+v", gotP, want)
	}
	// The watched file's inode, as stat gives it, narrows the search for
	// where it is now (pkg/dump/events.go).
	if len(gotP.EpollTargets) != 1 || gotP.EpollTargets[0] != (procinfo.EpollTarget{Dev: gotE.Dev, Ino: gotE.Ino}) {
		t.Errorf("epoll targets %+v, want the eventfd's dev %d ino %d", gotP.EpollTargets, gotE.Dev, gotE.Ino)
	}
}

// TestTracerPID: the tracer is named by its process, not by the thread that
// traces (TracerPid in /proc is a thread ID; chpox's tracer thread is a
// locked goroutine's, seldom the main thread). The test traces from a
// thread that is not the main one.
func TestTracerPID(t *testing.T) {
	testutil.NeedRoot(t)
	cmd := exec.Command("sleep", "100")
	testutil.Start(t, cmd)
	pid := cmd.Process.Pid
	if got := procinfo.TracerPID(pid); got != 0 {
		t.Fatalf("TracerPID of an untraced sleep = %d, want 0", got)
	}
	done := make(chan error)
	var trace func()
	trace = func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if unix.Gettid() == os.Getpid() {
			go trace() // this thread stays locked here: the next one is another
			return
		}
		if err := unix.PtraceSeize(pid); err != nil {
			done <- err
			return
		}
		defer unix.PtraceDetach(pid)
		if got := procinfo.TracerPID(pid); got != os.Getpid() {
			done <- fmt.Errorf("TracerPID of a sleep traced by thread %d of %d = %d, want %d", unix.Gettid(), os.Getpid(), got, os.Getpid())
			return
		}
		done <- nil
	}
	go trace()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
