package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tmuxServer is a tmux server of one test, on a socket of its own and
// without the user's configuration; it is killed at the end of the test,
// with every process of its panes.
type tmuxServer struct {
	t    *testing.T
	sock string
}

// startTmux starts a server whose first window (t:0) runs sh: dash leaves
// its terminal's termios alone, so what chpox restore sets and puts back
// shows there.
func startTmux(t *testing.T) *tmuxServer {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is needed (make setup):", err)
	}
	s := &tmuxServer{t: t, sock: fmt.Sprintf("chpox-e2e-%d-%d", os.Getpid(), time.Now().UnixNano())}
	s.run("new-session", "-d", "-s", "t", "-x", "120", "-y", "40", "sh")
	server := s.serverPID()
	t.Cleanup(func() {
		pids := descendants(server)
		exec.Command("tmux", "-L", s.sock, "kill-server").Run()
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		unix.Kill(server, unix.SIGKILL)
	})
	return s
}

// descendants lists pid's descendants, deepest first.
func descendants(pid int) []int {
	var out []int
	for _, c := range childrenOf(pid) {
		out = append(append(out, descendants(c)...), c)
	}
	return out
}

func (s *tmuxServer) run(args ...string) string {
	s.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", s.sock, "-f", "/dev/null"}, args...)...).CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func (s *tmuxServer) serverPID() int { return atoi(s.run("display-message", "-p", "#{pid}")) }

// window opens a window running cmd and returns its target.
func (s *tmuxServer) window(cmd string) string {
	return "t:" + s.run("new-window", "-d", "-P", "-F", "#{window_index}", cmd)
}

func (s *tmuxServer) keys(target string, keys ...string) {
	s.run(append([]string{"send-keys", "-t", target}, keys...)...)
}

// line types a line.
func (s *tmuxServer) line(target, text string) {
	s.keys(target, "-l", text)
	s.keys(target, "Enter")
}

func (s *tmuxServer) screen(target string) string {
	return s.run("capture-pane", "-p", "-t", target)
}

// waitScreen waits until the screen of target shows every one of words.
func (s *tmuxServer) waitScreen(target string, timeout time.Duration, words ...string) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		text := s.screen(target)
		missing := ""
		for _, w := range words {
			if !strings.Contains(text, w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return text
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("window %s does not show %q within %v; the screen:\n%s", target, missing, timeout, text)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *tmuxServer) panePID(target string) int {
	return atoi(s.run("list-panes", "-t", target, "-F", "#{pane_pid}"))
}

func (s *tmuxServer) paneTTY(target string) string {
	return s.run("list-panes", "-t", target, "-F", "#{pane_tty}")
}

// waitFree waits for the pid of a pane process that a dump --kill ended:
// tmux must reap it (chpox nudges it with a SIGCHLD where it would not,
// pkg/dump nudgeParent), or a restore in the next window finds it taken.
func (s *tmuxServer) waitFree(pid int) {
	s.t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for pidExists(pid) {
		if time.Now().After(deadline) {
			s.t.Fatalf("pid %d still taken 2s after the dump: %s", pid, procState(pid))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// termios reads the settings of a terminal by path, without making it
// anyone's controlling terminal.
func termios(t *testing.T, path string) *unix.Termios {
	t.Helper()
	var tio *unix.Termios
	onTTY(t, path, func(fd int) (err error) { tio, err = unix.IoctlGetTermios(fd, unix.TCGETS); return err })
	return tio
}

// onTTY runs f on the terminal at path, opened without becoming anyone's
// controlling terminal, and fails the test if that fails.
func onTTY(t *testing.T, path string, f func(fd int) error) {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := f(fd); err != nil {
		t.Fatal(err)
	}
}

// cooked tells whether a terminal is in canonical mode with echo (a
// shell's line mode); a readline prompt waiting for a key has neither.
func cooked(tio *unix.Termios) bool {
	return tio.Lflag&unix.ICANON != 0 && tio.Lflag&unix.ECHO != 0
}

// statTTY returns the controlling terminal (tty_nr), the foreground group
// of it (tpgid), the session and the process group of pid.
func statTTY(t *testing.T, pid int) (ttyNr, tpgid, sid, pgid int) {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	return atoi(f[4]), atoi(f[5]), atoi(f[3]), atoi(f[2])
}

// waitRestored waits until pid runs as comm, no longer traced by chpox.
func (s *tmuxServer) waitRestored(target string, pid int, comm string) {
	s.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := procState(pid)
		if strings.Contains(st, "Name: "+comm) && strings.Contains(st, "TracerPid: 0") {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("restored %s (pid %d: %s) not running within 20s; the screen:\n%s", comm, pid, st, s.screen(target))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dumpPane dumps the process of a pane with --kill and waits for its PID.
func dumpPane(t *testing.T, s *tmuxServer, target, img string) int {
	t.Helper()
	pid := s.panePID(target)
	mustChpox(t, "dump", "--kill", strconv.Itoa(pid), "-o", img)
	s.waitFree(pid)
	waitImagePIDsFree(t, img) // its children are orphans of ours (subreaper)
	return pid
}

// TestTerminalTmuxREPL: an interactive python3 in a tmux window, holding
// a variable, is dumped with --kill and restored with a plain `chpox
// restore` typed into another window's shell; its old terminal is gone by
// then (its window closed). It has its state, reads the
// keyboard of its new terminal as its controlling terminal in the
// foreground, with its readline termios (no echo, no line mode) there;
// when it ends, chpox puts the shell's termios back.
func TestTerminalTmuxREPL(t *testing.T) {
	setup(t)
	s := startTmux(t)
	repl := s.window("python3")
	s.waitScreen(repl, 20*time.Second, ">>>")
	s.line(repl, "x = 41")
	s.line(repl, "tty = open('/dev/tty', 'w')")
	s.line(repl, "print('set', x)")
	s.waitScreen(repl, 10*time.Second, "set 41")
	img := filepath.Join(t.TempDir(), "repl.img")
	oldTTY := s.paneTTY(repl)
	pid := dumpPane(t, s, repl, img)
	// Its window closed with it: the terminal it had is gone.
	waitFor(t, 5*time.Second, "the old terminal "+oldTTY+" to go away", func() bool {
		_, err := os.Stat(oldTTY)
		return err != nil
	})

	shell := "t:0"
	ttyPath := s.paneTTY(shell)
	if !cooked(termios(t, ttyPath)) {
		t.Fatalf("%s: sh's terminal is not in line mode before the restore", ttyPath)
	}
	s.line(shell, chpoxBin+" restore "+img)
	s.waitRestored(shell, pid, "python3")
	adopt(t, "python3(restored)", pid, "")
	time.Sleep(300 * time.Millisecond)
	if tio := termios(t, ttyPath); cooked(tio) {
		t.Errorf("%s is in line mode with echo (lflag %#x): the REPL's readline termios was not restored", ttyPath, tio.Lflag)
	}
	var st unix.Stat_t
	unix.Stat(ttyPath, &st)
	nr, tpgid, _, pgid := statTTY(t, pid)
	if uint64(nr) != st.Rdev || tpgid != pgid {
		t.Errorf("restored python3: controlling terminal %#x foreground group %d, want %s (%#x) with its own group %d in the foreground", nr, tpgid, ttyPath, st.Rdev, pgid)
	}
	s.line(shell, "x + 1")
	s.waitScreen(shell, 10*time.Second, "\n42\n")
	s.line(shell, "print('via /dev/tty', file=tty, flush=True)")
	s.waitScreen(shell, 10*time.Second, "\nvia /dev/tty\n")
	s.line(shell, "import os; print('pid', os.getpid())")
	s.waitScreen(shell, 10*time.Second, fmt.Sprintf("pid %d", pid))
	s.keys(shell, "C-d")
	waitFor(t, 10*time.Second, "python3 to end on Ctrl-D", func() bool { return !pidExists(pid) })
	waitFor(t, 5*time.Second, "sh's termios back", func() bool { return cooked(termios(t, ttyPath)) })
}

// TestTerminalTmuxBash: an interactive bash in a tmux window with a
// running background job and a job stopped by SIGTTIN is dumped with
// --kill and restored into another window. jobs lists both as they were,
// the shell variable is there, and fg brings the stopped job to the
// foreground, reading the new terminal (bash's tcsetpgrp works: the
// terminal is its controlling terminal). The new terminal is smaller:
// bash learns its size.
func TestTerminalTmuxBash(t *testing.T) {
	setup(t)
	s := startTmux(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "typed")
	sh := s.window("bash --norc --noprofile -i")
	s.waitScreen(sh, 20*time.Second, "bash-")
	s.line(sh, "v=41; sleep 1000 &")
	s.line(sh, "cat > "+out+" &")
	s.line(sh, "sleep 0.5; jobs")
	s.waitScreen(sh, 10*time.Second, "Running", "sleep 1000", "Stopped", "cat >")
	img := filepath.Join(dir, "bash.img")
	pid := dumpPane(t, s, sh, img)

	shell := "t:0"
	// A terminal of another size: bash is told (SIGWINCH) and its
	// $COLUMNS follows before it ran any command.
	s.run("set-option", "-g", "window-size", "manual")
	s.run("resize-window", "-t", shell, "-x", "100", "-y", "30")
	s.line(shell, chpoxBin+" restore "+img)
	s.waitRestored(shell, pid, "bash")
	adopt(t, "bash(restored)", pid, "")
	s.line(shell, "echo cols=$COLUMNS")
	s.waitScreen(shell, 10*time.Second, "cols=100")
	s.line(shell, "clear; jobs; echo v=$((v+1))")
	s.waitScreen(shell, 10*time.Second, "Running", "sleep 1000", "Stopped", "cat >", "v=42")
	ttyPath := s.paneTTY(shell)
	var st unix.Stat_t
	unix.Stat(ttyPath, &st)
	if nr, _, _, _ := statTTY(t, pid); uint64(nr) != st.Rdev {
		t.Errorf("restored bash: controlling terminal %#x, want %s (%#x)", nr, ttyPath, st.Rdev)
	}
	s.line(shell, "fg %2")
	s.waitScreen(shell, 10*time.Second, "cat > "+out+"\n")
	catPID := 0
	for _, c := range descendants(pid) {
		if strings.Contains(procState(c), "Name: cat") {
			catPID = c
		}
	}
	waitFor(t, 5*time.Second, "bash's fg to give the terminal to cat", func() bool {
		_, tpgid, _, _ := statTTY(t, pid)
		return catPID != 0 && tpgid == catPID
	})
	time.Sleep(200 * time.Millisecond)
	s.line(shell, "hello from the keyboard")
	s.keys(shell, "C-d")
	waitFor(t, 10*time.Second, "cat to write what was typed", func() bool {
		data, _ := os.ReadFile(out)
		return string(data) == "hello from the keyboard\n"
	})
	s.line(shell, "echo back in bash $$")
	s.waitScreen(shell, 10*time.Second, fmt.Sprintf("back in bash %d", pid))
}

// TestTerminalTmuxPTYPair: a relay like `script` (testdata/ptyrelay.c;
// script itself uses a signalfd, not restored yet) holds a pseudo-terminal pair inside the
// tree (as a terminal multiplexer or expect does): python3 runs on its
// slave, as session leader with it as controlling terminal. Dumped with
// --kill in one tmux window and restored in another: the pair is rebuilt
// with its termios (the REPL's readline mode on the inner terminal) and
// window size, python3 has the new slave as controlling terminal with its
// group in the foreground, still has its state and reads what is typed
// through the relay.
func TestTerminalTmuxPTYPair(t *testing.T) {
	setup(t, "ptyrelay")
	s := startTmux(t)
	win := s.window(progs["ptyrelay"] + " python3")
	s.waitScreen(win, 20*time.Second, ">>>")
	s.line(win, "x = 41")
	s.line(win, "import os; print('py', os.getpid())")
	text := s.waitScreen(win, 10*time.Second, "py ")
	var py int
	fmt.Sscanf(text[strings.LastIndex(text, "py ")+3:], "%d", &py)
	innerBefore := termios(t, fmt.Sprintf("/proc/%d/fd/0", py))
	wsBefore := winsize(t, fmt.Sprintf("/proc/%d/fd/0", py))
	img := filepath.Join(t.TempDir(), "script.img")
	dumpPane(t, s, win, img)
	if text := quietChpox(t, "inspect", img); !strings.Contains(text, "pty pair") {
		t.Errorf("inspect does not show the pty pair:\n%s", text)
	}

	shell := "t:0"
	s.line(shell, chpoxBin+" restore "+img)
	s.waitRestored(shell, py, "python3")
	adopt(t, "python3(restored)", py, "")
	inner := fmt.Sprintf("/proc/%d/fd/0", py)
	var st unix.Stat_t
	if err := unix.Stat(inner, &st); err != nil {
		t.Fatal(err)
	}
	nr, tpgid, sid, pgid := statTTY(t, py)
	if uint64(nr) != st.Rdev || tpgid != pgid || sid != py {
		t.Errorf("restored python3: controlling terminal %#x, foreground group %d, session %d; want its stdin %#x, its own group %d, its own session", nr, tpgid, sid, st.Rdev, pgid)
	}
	if got := termios(t, inner); *got != *innerBefore {
		t.Errorf("inner terminal's termios: got %+v, want %+v", got, innerBefore)
	}
	if got := winsize(t, inner); *got != *wsBefore {
		t.Errorf("inner terminal's window size: got %+v, want %+v", got, wsBefore)
	}
	s.line(shell, "x + 1")
	s.waitScreen(shell, 10*time.Second, "\n42\n")
}

func winsize(t *testing.T, path string) *unix.Winsize {
	t.Helper()
	var ws *unix.Winsize
	onTTY(t, path, func(fd int) (err error) { ws, err = unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ); return err })
	return ws
}

// queuedAt returns how many bytes wait to be read at fd of pid (FIONREAD
// on a pidfd_getfd copy: opening /proc/PID/fd/N of a master would open
// /dev/ptmx, a new pair).
func queuedAt(t *testing.T, pid, fd int) int {
	t.Helper()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	cp, err := unix.PidfdGetfd(pidfd, fd, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cp)
	n, err := unix.IoctlGetInt(cp, 0x541B) // FIONREAD
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTerminalPTYQueued: bytes queued in a pty pair of the tree, input
// its program has not read (raw mode) and output its master has not read,
// survive: a dump leaves them in place, exactly (no \n made \r\n
// twice), and the restored program reads them.
func TestTerminalPTYQueued(t *testing.T) {
	setup(t, "ptyqueue.py")
	for _, tc := range []struct {
		mode   string
		reader int // fd that reads them: the master is 3, the slave 4
		want   string
	}{
		{"input", 4, `got b'queued!\r'`},
		{"output", 3, `got b'queued!\r\n'`},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			gofile := filepath.Join(dir, "go")
			p := start(t, "ptyqueue.py", tc.mode, gofile)
			p.waitLog(t, `ready`, 1, 20*time.Second)
			// pty writes reach the other side through a work queue.
			n := 0
			waitFor(t, 5*time.Second, "the bytes to be queued", func() bool { n = queuedAt(t, p.pid, tc.reader); return n > 0 })
			mustChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(dir, "live.img"))
			if after := queuedAt(t, p.pid, tc.reader); after != n {
				t.Fatalf("a dump left %d bytes queued, there were %d", after, n)
			}
			img := dumpKill(t, p)
			if text := quietChpox(t, "inspect", img); !strings.Contains(text, "queued") {
				t.Errorf("inspect does not show the queued bytes:\n%s", text)
			}
			q := restoreDetached(t, img, p)
			if got := queuedAt(t, q.pid, tc.reader); got != n {
				t.Errorf("restored: %d bytes queued, want %d", got, n)
			}
			os.WriteFile(gofile, nil, 0o644)
			line := q.waitLog(t, `got .*`, 1, 10*time.Second)[0]
			if line != tc.want {
				t.Errorf("the restored program read %s, want %s", line, tc.want)
			}
		})
	}
}

// TestTerminalPTYQueuedRefused: bytes queued where they cannot be put back
// exactly, typed input in line mode (the kernel hands out only complete
// lines; a half-typed one behind would be reordered) and output for a
// master in packet mode (a read may take a status byte), fail the dump
// naming the terminal; the process runs on, its bytes still there.
func TestTerminalPTYQueuedRefused(t *testing.T) {
	setup(t, "ptyqueue.py")
	for _, tc := range []struct {
		mode   string
		reader int
		why    string
	}{
		{"input-line", 4, "typed input"},
		{"output-packet", 3, "packet mode"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p := start(t, "ptyqueue.py", tc.mode, filepath.Join(t.TempDir(), "go"))
			name := p.waitLog(t, `ready (\S+)`, 1, 20*time.Second)[1]
			// pty writes reach the other side through a work queue.
			n := 0
			waitFor(t, 5*time.Second, "the bytes to be queued", func() bool { n = queuedAt(t, p.pid, tc.reader); return n > 0 })
			r := runChpox(t, "dump", strconv.Itoa(p.pid), "-o", filepath.Join(t.TempDir(), "q.img"))
			wantFailure(t, r, 6, "pseudo-terminal "+name, tc.why, "dump again")
			if p.exited() {
				t.Fatal("the process died")
			}
			if st := procState(p.pid); !strings.Contains(st, "TracerPid: 0") {
				t.Errorf("after the refused dump: %s", st)
			}
			if after := queuedAt(t, p.pid, tc.reader); after != n || n == 0 {
				t.Errorf("after the refused dump %d bytes are queued, before %d", after, n)
			}
		})
	}
}

// TestTerminalPTYState: a program holding pty pairs in every state chpox
// keeps (packet mode, an exclusive slave, raw termios, a window size, a
// pair still locked, one whose slave was never opened, one whose slave
// was closed) checks them itself every 100 ms and moves bytes both ways; a
// dump leaves them as they were, and dumped with --kill and restored
// detached, it goes on finding them.
func TestTerminalPTYState(t *testing.T) {
	setup(t, "ptystate.py")
	p := start(t, "ptystate.py")
	p.waitLog(t, `ok (\d+)`, 3, 20*time.Second)
	img := filepath.Join(t.TempDir(), "ptystate.img")
	// A dump leaves every pair as it was: the program goes on finding it.
	mustChpox(t, "dump", strconv.Itoa(p.pid), "-o", img)
	p.waitLog(t, `ok (\d+)`, lastInt(p.log, `ok (\d+)`)+3, 10*time.Second)
	// A dump that meets a pong in flight to the packet-mode master is
	// refused: try again (a ping in flight, raw input, is saved).
	for i := 0; ; i++ {
		r := runChpox(t, "dump", "--kill", strconv.Itoa(p.pid), "-o", img)
		if r.code == 0 {
			break
		}
		if r.code != 6 || !strings.Contains(r.stderr, "pseudo-terminal") || i == 20 {
			t.Fatalf("dump: exit %d: %s", r.code, r.stderr)
		}
		time.Sleep(30 * time.Millisecond)
	}
	p.waitExit(t, 10*time.Second)
	waitPIDFree(t, p.pid, 10*time.Second)
	text := quietChpox(t, "inspect", img)
	for _, want := range []string{"77x33, raw mode, no echo, packet mode, exclusive", "locked"} {
		if !strings.Contains(text, want) {
			t.Errorf("inspect does not show %q:\n%s", want, text)
		}
	}
	before := lastInt(p.log, `ok (\d+)`)
	q := restoreDetached(t, img, p)
	q.waitLog(t, `ok (\d+)`, before+5, 20*time.Second)
}

// TestTerminalTmuxPTYJob: inside the relay's pair runs an interactive bash
// with python3 as its foreground job (a group of its own, not the session
// leader's): restored, the inner terminal's foreground is python3's group
// again (an injected TIOCSPGRP), so it reads what is typed, and bash gets
// the terminal back when it ends.
func TestTerminalTmuxPTYJob(t *testing.T) {
	setup(t, "ptyrelay")
	s := startTmux(t)
	win := s.window(progs["ptyrelay"] + " bash --norc --noprofile -i")
	s.waitScreen(win, 20*time.Second, "bash-")
	s.line(win, "python3")
	s.waitScreen(win, 20*time.Second, ">>>")
	s.line(win, "x = 41")
	s.line(win, "import os; print('py', os.getpid())")
	text := s.waitScreen(win, 10*time.Second, "py ")
	var py int
	fmt.Sscanf(text[strings.LastIndex(text, "py ")+3:], "%d", &py)
	_, fgBefore, sidBefore, pgidBefore := statTTY(t, py)
	if fgBefore != py || pgidBefore != py || sidBefore == py {
		t.Fatalf("python3 %d: foreground group %d, group %d, session %d: want a foreground job of its own in bash's session", py, fgBefore, pgidBefore, sidBefore)
	}
	img := filepath.Join(t.TempDir(), "ptyjob.img")
	dumpPane(t, s, win, img)

	shell := "t:0"
	s.line(shell, chpoxBin+" restore "+img)
	s.waitRestored(shell, py, "python3")
	adopt(t, "python3(restored)", py, "")
	if _, fg, sid, pgid := statTTY(t, py); fg != py || pgid != py || sid != sidBefore {
		t.Errorf("restored python3: foreground group %d, group %d, session %d; want %d, %d, %d", fg, pgid, sid, py, py, sidBefore)
	}
	s.line(shell, "x + 1")
	s.waitScreen(shell, 10*time.Second, "\n42\n")
	s.keys(shell, "C-d")
	waitFor(t, 10*time.Second, "python3 to end", func() bool { return !pidExists(py) })
	s.line(shell, "echo bash=$$")
	s.waitScreen(shell, 10*time.Second, fmt.Sprintf("bash=%d", sidBefore))
}
