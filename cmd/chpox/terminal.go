package main

import (
	"os/signal"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/restore"
)

// handTerminal gives the terminal on stdin to the restored job when chpox
// holds it in the foreground and the job is a process group of its own,
// like a shell starting a job, so that an interactive program (a REPL
// holding state) can read its terminal instead of stopping on SIGTTIN; and
// puts the job's termios on it (a readline prompt had it in raw mode). The
// returned function takes the terminal back with chpox's own termios.
func handTerminal(job restore.Job) (takeBack func(), handed bool) {
	own := unix.Getpgrp()
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if err != nil || fg != own {
		return func() {}, false // no terminal, or chpox runs in the background
	}
	mine, err := unix.IoctlGetTermios(0, unix.TCGETS)
	if err != nil {
		mine = nil
	}
	if job.Termios != nil && mine != nil {
		unix.IoctlSetTermios(0, unix.TCSETS, job.Termios)
	}
	back := func() {
		if job.Termios != nil && mine != nil {
			unix.IoctlSetTermios(0, unix.TCSETS, mine)
		}
	}
	if job.PGID == own {
		return back, true
	}
	// A background group that changes the terminal's group gets SIGTTOU.
	signal.Ignore(unix.SIGTTOU)
	if unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, job.PGID) != nil {
		return back, false
	}
	return func() {
		unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, own)
		back()
	}, true
}

// tellSize sends SIGWINCH to a running job whose terminal now has another
// size than its old one had: programs that keep the size (readline, bash's
// $COLUMNS, editors) ask again. A job in chpox's own group is left alone
// (the signal would reach chpox too).
func tellSize(job restore.Job) {
	if job.Winsize == nil || job.PGID == unix.Getpgrp() {
		return
	}
	ws, err := unix.IoctlGetWinsize(0, unix.TIOCGWINSZ)
	if err != nil || ws.Row == job.Winsize.Row && ws.Col == job.Winsize.Col {
		return
	}
	unix.Kill(-job.PGID, unix.SIGWINCH)
}
