package main

import (
	"os/signal"

	"golang.org/x/sys/unix"
)

// handTerminal gives the terminal on stdin to the restored process group
// when chpox holds it in the foreground and the process leads a group of
// its own (it led one at the checkpoint): like a shell starting a job, so
// that an interactive program (a REPL holding state) can read its
// terminal instead of stopping on SIGTTIN. The returned function takes the
// terminal back.
func handTerminal(pgid int) (restore func()) {
	own := unix.Getpgrp()
	if pgid == own {
		return func() {}
	}
	fg, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if err != nil || fg != own {
		return func() {} // no terminal, or chpox runs in the background
	}
	// A background group that changes the terminal's group gets SIGTTOU.
	signal.Ignore(unix.SIGTTOU)
	if unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, pgid) != nil {
		return func() {}
	}
	return func() { unix.IoctlSetPointerInt(0, unix.TIOCSPGRP, own) }
}
