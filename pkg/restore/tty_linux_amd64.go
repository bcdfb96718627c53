package restore

import (
	"encoding/binary"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/tty"
)

// openPairs makes a new pseudo-terminal pair for each pair of the image
// (pkg/objects/tty), its master with the flags of the saved master's
// description.
func openPairs(img *format.Image) (map[int]*tty.Pair, error) {
	pairs := map[int]*tty.Pair{}
	for _, t := range img.Objects.TTYs {
		if t.Kind != format.TTYPty {
			continue
		}
		flags := unix.O_RDWR
	find:
		for _, p := range img.Processes {
			for _, f := range p.Files {
				if f.Kind == format.FilePTYMaster && f.TTY == t.ID {
					flags = f.Flags
					break find
				}
			}
		}
		pair, err := tty.New(t, flags)
		if err != nil {
			closePairs(pairs)
			return nil, err
		}
		pairs[t.ID] = pair
	}
	return pairs, nil
}

func closePairs(pairs map[int]*tty.Pair) {
	for _, p := range pairs {
		p.Close()
	}
}

// acquireCTTY makes the pair the controlling terminal of the session the
// process just started (setsid): TIOCSCTTY on a slave lent for the call.
func (x *target) acquireCTTY(pair *tty.Pair) error {
	s, err := pair.Slave(unix.O_RDWR)
	if err != nil {
		return err
	}
	pfd, err := x.call("pidfd_open(chpox)", unix.SYS_PIDFD_OPEN, uint64(os.Getpid()), 0)
	if err != nil {
		return err
	}
	fd, err := x.call("pidfd_getfd", unix.SYS_PIDFD_GETFD, pfd, uint64(s.Fd()), 0)
	x.call("close", unix.SYS_CLOSE, pfd)
	if err != nil {
		return err
	}
	defer x.call("close", unix.SYS_CLOSE, fd)
	if _, err := x.call("ioctl(TIOCSCTTY)", unix.SYS_IOCTL, fd, unix.TIOCSCTTY, 0); err != nil {
		return fmt.Errorf("controlling terminal (pty %s): %w", pair.Name(), err)
	}
	return nil
}

// ptyEnd returns chpox's file for the pty master or slave description f
// names, made once and kept for the other fds that share it.
func (o *objects) ptyEnd(f format.File) (*os.File, error) {
	pair := o.ttys[f.TTY]
	if pair == nil {
		return nil, fmt.Errorf("fd %d names pty %d, which the image lacks", f.FD, f.TTY)
	}
	end := pair.Master
	if f.Kind == format.FilePTYSlave {
		var err error
		if end, err = pair.Slave(f.Flags); err != nil {
			return nil, err
		}
	}
	o.descs[f.Desc] = end
	return end, nil
}

// fillPairs queues the saved bytes in the pairs again.
func (o *objects) fillPairs() error {
	for _, p := range o.ttys {
		if err := p.Fill(); err != nil {
			return err
		}
	}
	return nil
}

// ttySinks gives the saved bytes of each pair to its stand-in.
func (o *objects) ttySinks(img *format.Image) []sink {
	var out []sink
	for _, t := range img.Objects.TTYs {
		p := o.ttys[t.ID]
		if p == nil {
			continue
		}
		for _, d := range []struct {
			runs []format.DataRun
			buf  *[]byte
		}{{t.Input, &p.Queued.Input}, {t.Output, &p.Queued.Output}} {
			at := uint64(0)
			for _, r := range d.runs {
				out = append(out, sink{off: r.Off, len: r.Len, addr: at, file: bufferAt{d.buf}})
				at += r.Len
			}
		}
	}
	return out
}

// finishPairs locks pairs and makes them exclusive as they were, once every
// process holds its descriptions.
func (o *objects) finishPairs() error {
	for _, p := range o.ttys {
		if err := p.Finish(); err != nil {
			return err
		}
	}
	return nil
}

func (o *objects) closePairs() {
	for _, p := range o.ttys {
		p.Close()
	}
}

// controllingTerminal gives the foreground of a session leader's pair,
// its controlling terminal again since createTree, to the group that had
// it (TIOCSPGRP from the leader, with a slave fd: its own, or one lent for
// the call). The groups exist already; SIGTTOU is blocked while the tree
// is built, so TIOCSPGRP cannot stop it.
func (x *target) controllingTerminal(p *format.Process, o *objects) error {
	pair := o.ttys[p.CTTY]
	if p.SID != p.PID || pair == nil {
		return nil // none, or outside: cmd/chpox gives the restore's own
	}
	fg := o.ttyRecs[p.CTTY].Foreground
	if fg == 0 || fg == p.PGID || !o.groups[fg] {
		return nil // TIOCSCTTY (createTree) gave the foreground to the leader's group
	}
	fd := -1
	for _, f := range p.Files {
		if f.Kind == format.FilePTYSlave && f.TTY == p.CTTY {
			fd = f.FD
			break
		}
	}
	if fd < 0 {
		s, err := pair.Slave(unix.O_RDWR)
		if err != nil {
			return err
		}
		if _, err := x.supFD(); err != nil {
			return err
		}
		fd = int(x.supPidfd) + 1 // above every fd of the image and the pidfd
		if err := x.fromChpox(s, fd, unix.O_CLOEXEC); err != nil {
			return err
		}
		defer x.call("close", unix.SYS_CLOSE, uint64(fd))
	}
	x.resetScratch()
	at, err := x.put(binary.LittleEndian.AppendUint32(nil, uint32(fg)))
	if err != nil {
		return err
	}
	if _, err := x.call("ioctl(TIOCSPGRP)", unix.SYS_IOCTL, uint64(fd), unix.TIOCSPGRP, at); err != nil {
		return fmt.Errorf("foreground group %d of pty %s: %w", fg, o.ttyRecs[p.CTTY].Name, err)
	}
	return nil
}

// outsideCTTY returns the record of the terminal outside the tree that was
// p's controlling terminal, or nil.
func outsideCTTY(img *format.Image, p *format.Process) *format.TTY {
	for i, t := range img.Objects.TTYs {
		if t.ID == p.CTTY && t.Kind == format.TTYOutside {
			return &img.Objects.TTYs[i]
		}
	}
	return nil
}

// Job is what a foreground restore gives the terminal it runs in, as a
// shell starting a job: the group to put in the foreground and the
// termios the job had on its terminal (nil: leave it).
type Job struct {
	PGID    int
	Termios *unix.Termios
	// Winsize is the window size of the job's old terminal, nil if
	// unknown: a job whose new terminal has another size is told with a
	// SIGWINCH, as a terminal emulator tells a resize.
	Winsize *unix.Winsize
}

// jobOf chooses the job a foreground restore hands the terminal to: the
// foreground group of the root's outside controlling terminal if that
// group is in the tree, else the root's own group if it led one.
func jobOf(img *format.Image, groups map[int]bool) Job {
	root := img.Processes[0]
	j := Job{PGID: unix.Getpgrp()}
	if root.PGID == root.PID {
		j.PGID = root.PID
	}
	if t := outsideCTTY(img, root); t != nil {
		if groups[t.Foreground] {
			j.PGID = t.Foreground
		}
		if t.Termios != nil {
			j.Termios = tty.FromFormat(t.Termios)
			j.Winsize = &unix.Winsize{Row: t.Winsize.Row, Col: t.Winsize.Col, Xpixel: t.Winsize.Xpixel, Ypixel: t.Winsize.Ypixel}
		}
	}
	return j
}
