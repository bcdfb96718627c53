package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/external"
	"github.com/chpox/chpox/pkg/procinfo"
	"github.com/chpox/chpox/pkg/restore"
)

// A restore in namespaces runs each copy under a chpox of its own, started
// in a new user, PID and mount namespace: there it is PID 1 and holds every
// capability over that namespace (none over the host), so clone3 can give
// the processes their PIDs, which are free there whatever runs here. This
// is how an ordinary user restores (no CAP_CHECKPOINT_RESTORE on the host),
// and how root restores a copy beside a running original, or many copies.
// From outside, the processes have other PIDs (NSpid in /proc/PID/status
// shows both); chpox prints the outside ones.

// nsInitFlag marks the chpox that runs as PID 1 of a copy's namespaces.
const nsInitFlag = "ns-init"

// nsReportFD is where that chpox says "ok PID" once the copy runs.
const nsReportFD = 3

func namespaceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "namespace", Usage: "restore in a new user and PID namespace, beside whatever holds the PIDs here (the default for a user without CAP_CHECKPOINT_RESTORE)"},
		&cli.IntFlag{Name: "copies", Value: 1, Usage: "restore `N` copies of the image at once, each in namespaces of its own"},
		&cli.BoolFlag{Name: nsInitFlag, Hidden: true},
		&cli.BoolFlag{Name: "ns-foreground", Hidden: true},
	}
}

// nsCopy is one copy being restored: the chpox that is PID 1 of its
// namespaces, and the restored root as seen from here.
type nsCopy struct {
	cmd    *exec.Cmd
	report *os.File
	pid    int // the root's PID here
	inner  int // and in its namespace
}

// restoreInNamespaces starts the copies and waits for each to run.
func restoreInNamespaces(c *cli.Context, path string) error {
	copies := c.Int("copies")
	if copies < 1 {
		return fmt.Errorf("%w: --copies %d: want at least 1", errUsage, copies)
	}
	if err := checkNamespaceImage(path); err != nil {
		return fmt.Errorf("restore %s: %w", path, err)
	}
	var started []*nsCopy
	kill := func() {
		for _, k := range started {
			k.cmd.Process.Kill()
			k.cmd.Wait()
		}
	}
	for i := 0; i < copies; i++ {
		k, err := startCopy(c, path)
		if err == nil {
			started = append(started, k)
			err = k.waitRunning()
		}
		if err != nil {
			kill() // a failed restore leaves no half of it behind
			return err
		}
		fmt.Fprintf(say(c), "chpox: copy %d runs in a user and PID namespace of its own: pid %d there is pid %d here\n", i+1, k.inner, k.pid)
	}
	if c.Bool("detach") {
		for _, k := range started {
			fmt.Println(k.pid)
		}
		return nil
	}
	return exitCode(waitCopies(started))
}

// checkNamespaceImage refuses what no namespace can give: PID 1 is the
// copy's chpox, and an ordinary user cannot change supplementary groups
// there, so the processes keep the restorer's, which must be theirs.
func checkNamespaceImage(path string) error {
	img, err := format.Open(path)
	if err != nil {
		return err
	}
	defer img.Close()
	have, err := unix.Getgroups()
	if err != nil {
		return err
	}
	for _, p := range img.Processes {
		if p.PID == 1 {
			return fmt.Errorf("process 1 cannot be restored in a namespace (chpox is PID 1 there): %w", restore.ErrIncompatible)
		}
		if os.Geteuid() != 0 && !sameGroupSet(p.Creds.Groups, have) {
			return fmt.Errorf("process %d had supplementary groups %v and you have %v; in a user namespace of an ordinary user they cannot be changed: %w",
				p.PID, p.Creds.Groups, have, restore.ErrIncompatible)
		}
	}
	return nil
}

func sameGroupSet(img []uint32, have []int) bool {
	a := make([]int, 0, len(img))
	for _, g := range img {
		a = append(a, int(g))
	}
	b := slices.Clone(have)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// startCopy starts `chpox restore --ns-init` in new namespaces, with the
// caller's ids mapped to themselves (root: every id) and every capability
// of the new user namespace kept across the exec.
func startCopy(c *cli.Context, path string) (*nsCopy, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer w.Close()
	args := []string{"restore", "--" + nsInitFlag, "--pid-wait", c.Duration("pid-wait").String()}
	if c.Bool("quiet") {
		args = append(args, "--quiet")
	}
	if !c.Bool("detach") {
		args = append(args, "--ns-foreground")
	}
	extra := []*os.File{w}
	for _, s := range c.StringSlice("external") {
		// A descriptor named by number reaches the copy's chpox as one
		// of its extra files.
		key, choice, err := external.ParseChoice(s)
		if err != nil {
			return nil, fmt.Errorf("%w: --external %w", errUsage, err)
		}
		if choice.FD > 2 {
			extra = append(extra, os.NewFile(uintptr(choice.FD), key))
			s = fmt.Sprintf("%s=%d", key, nsReportFD+len(extra)-1)
		}
		args = append(args, "--external", s)
	}
	cmd := exec.Command(self, append(args, path)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.ExtraFiles = os.Stdin, os.Stdout, os.Stderr, extra
	cmd.SysProcAttr = namespaceAttr()
	if err := cmd.Start(); err != nil {
		r.Close()
		return nil, fmt.Errorf("start a chpox in new user and PID namespaces: %w", err)
	}
	return &nsCopy{cmd: cmd, report: r}, nil
}

func namespaceAttr() *syscall.SysProcAttr {
	uid, gid := os.Geteuid(), os.Getegid()
	uids := []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
	gids := []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
	if uid == 0 {
		uids = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1<<32 - 1}}
		gids = uids
	}
	var caps []uintptr
	for cap := uintptr(0); cap <= unix.CAP_LAST_CAP; cap++ {
		caps = append(caps, cap)
	}
	return &syscall.SysProcAttr{
		Cloneflags:                 unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNS,
		UidMappings:                uids,
		GidMappings:                gids,
		GidMappingsEnableSetgroups: uid == 0,
		AmbientCaps:                caps,
	}
}

// waitRunning reads the copy's report; without one its chpox failed, said
// why on stderr, and its exit code is the restore's.
func (k *nsCopy) waitRunning() error {
	line, _ := bufio.NewReader(k.report).ReadString('\n')
	k.report.Close()
	inner, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(line), "ok "))
	if err != nil || !strings.HasPrefix(line, "ok ") {
		err := k.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			return exitCode(ee.ExitCode())
		}
		return fmt.Errorf("the copy's chpox ended without restoring: %v", err)
	}
	k.inner = inner
	if k.pid, err = outerPID(k.cmd.Process.Pid, inner); err != nil {
		return err
	}
	return nil
}

// outerPID finds, among the children of the copy's chpox, the one that
// is inner in its namespace (the last NSpid field).
func outerPID(nsInit, inner int) (int, error) {
	for _, child := range procinfo.Children(nsInit) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", child))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && f[0] == "NSpid:" && f[len(f)-1] == strconv.Itoa(inner) {
				return child, nil
			}
		}
	}
	return 0, fmt.Errorf("cannot find the restored pid %d among the children of pid %d", inner, nsInit)
}

// waitCopies waits for every copy's chpox (each exits with its root's
// status), forwarding termination signals, and returns the first
// non-zero status.
func waitCopies(ks []*nsCopy) int {
	sigs := make(chan os.Signal, 4)
	notifyTermination(sigs)
	go func() {
		for s := range sigs {
			for _, k := range ks {
				k.cmd.Process.Signal(s)
			}
		}
	}()
	status := 0
	for _, k := range ks {
		err := k.cmd.Wait()
		var ee *exec.ExitError
		if errors.As(err, &ee) && status == 0 {
			status = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				status = 128 + int(ws.Signal())
			}
		}
	}
	return status
}

// nsInit is the chpox that is PID 1 of a copy's namespaces: it mounts a
// /proc of its PID namespace, restores, reports, then reaps every process
// of the namespace (orphans come to PID 1) until the restored root ends,
// and exits with its status; the kernel then ends the namespace.
func nsInit(c *cli.Context, path string, opt restore.Options) error {
	if err := mountProc(); err != nil {
		return err
	}
	takeBack := func() {}
	var job restore.Job
	handed := false
	if c.Bool("ns-foreground") {
		opt.Foreground = true
		opt.BeforeRun = func(j restore.Job) { job = j; takeBack, handed = handTerminal(j) }
	}
	sigs := make(chan os.Signal, 4)
	notifyTermination(sigs)
	r, err := restore.Restore(tracer, path, opt)
	if err != nil {
		return err
	}
	if handed {
		tellSize(job)
	}
	report := os.NewFile(nsReportFD, "report")
	fmt.Fprintf(report, "ok %d\n", r.PID)
	report.Close()
	if !c.Bool("ns-foreground") {
		// Detached, this chpox outlives the restore command: holding its
		// stdout would keep `pid=$(chpox restore -d IMG)` waiting.
		if err := toDevNull(); err != nil {
			return err
		}
	}
	go forward(sigs, r.PID)
	status := reapUntil(r.PID)
	takeBack()
	return exitCode(status)
}

func toDevNull() error {
	null, err := unix.Open(os.DevNull, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(null)
	for fd := 0; fd <= 2; fd++ {
		if err := unix.Dup3(null, fd, 0); err != nil {
			return fmt.Errorf("stdio to /dev/null: %w", err)
		}
	}
	return nil
}

// mountProc gives the namespace a /proc of its own: the restore reads
// /proc/PID of processes whose PIDs only this PID namespace knows.
func mountProc() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private in the new mount namespace: %w", err)
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc for the new PID namespace: %w", err)
	}
	return nil
}

// reapUntil waits for any child until root ends and returns its status as
// a shell would (128+N for signal N).
func reapUntil(root int) int {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WALL, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 1
		}
		if pid == root && (ws.Exited() || ws.Signaled()) {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}
