// Package tty checkpoints terminals: pseudo-terminal pairs whose master is
// held inside the tree (a terminal multiplexer, script, expect, an ssh-like
// relay), and the settings of a controlling terminal outside the tree.
//
// Dump reads a pair's state through a pidfd_getfd(2) copy of its master,
// with ioctls that change nothing: the slave's termios and window size
// (termios requests on a master act on its slave, drivers/tty/tty_ioctl.c
// tty_mode_ioctl), packet mode, lock, exclusive mode, session and
// foreground group. Bytes queued in the pair are not saved: reading them
// would take them from the program, so a dump that finds some is refused,
// naming the terminal (they are usually gone a moment later).
//
// Restore opens a new pair (/dev/ptmx), gives it those settings, and
// makes each open description of the slave with TIOCGPTPEER, without a
// path: the new slave's number is whatever the kernel gives (devpts hands
// out the lowest free one), so a program that stored its ttyname sees the
// old name.
package tty

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects"
	"github.com/chpox/chpox/pkg/procinfo"
)

// tiocinq is FIONREAD/TIOCINQ, include/uapi/asm-generic/ioctls.h.
const tiocinq = 0x541B

// IsMaster tells whether a character device is a pty master (/dev/ptmx,
// /dev/pts/ptmx: 5:2, Documentation/admin-guide/devices.txt).
func IsMaster(rdev uint64) bool { return unix.Major(rdev) == 5 && unix.Minor(rdev) == 2 }

// SlaveIndex returns the number N of a pty slave /dev/pts/N (majors 136
// to 143 hold 256 minors each), or -1.
func SlaveIndex(rdev uint64) int {
	major := unix.Major(rdev)
	if major < 136 || major > 143 {
		return -1
	}
	return int(major-136)<<8 | int(unix.Minor(rdev))
}

// Describe reads the pair whose master pid holds at fd.
func Describe(pid, fd int) (format.TTY, error) {
	t := format.TTY{Kind: format.TTYPty}
	m, err := objects.Dup(pid, fd)
	if err != nil {
		return t, err
	}
	defer m.Close()
	mfd := int(m.Fd())
	if t.Index, err = unix.IoctlGetInt(mfd, unix.TIOCGPTN); err != nil {
		return t, os.NewSyscallError("ioctl(TIOCGPTN)", err)
	}
	t.Name = fmt.Sprintf("/dev/pts/%d", t.Index)
	if err := settings(mfd, &t); err != nil {
		return t, fmt.Errorf("pty %s: %w", t.Name, err)
	}
	flag := func(req uint, what string) (bool, error) {
		v, err := unix.IoctlGetInt(mfd, req)
		return v != 0, os.NewSyscallError("ioctl("+what+")", err)
	}
	if t.Packet, err = flag(unix.TIOCGPKT, "TIOCGPKT"); err != nil {
		return t, err
	}
	if t.Locked, err = flag(unix.TIOCGPTLCK, "TIOCGPTLCK"); err != nil {
		return t, err
	}
	// On a master these name the slave's session and group
	// (drivers/tty/tty_jobctrl.c, tiocgsid/tiocgpgrp); ENOTTY: none.
	if sid, err := unix.IoctlGetInt(mfd, unix.TIOCGSID); err == nil {
		t.Session = sid
		if fg, err := unix.IoctlGetInt(mfd, unix.TIOCGPGRP); err == nil {
			t.Foreground = fg
		}
	}
	return t, unread(m, &t)
}

// unread refuses a pair with bytes queued in either direction: output the
// master has not read, input the slave has not read (in canonical mode the
// kernel counts only complete lines: a half-typed line is lost).
func unread(m *os.File, t *format.TTY) error {
	mfd := int(m.Fd())
	out, err := unix.IoctlGetInt(mfd, tiocinq)
	if err != nil {
		return os.NewSyscallError("ioctl(FIONREAD)", err)
	}
	in := 0
	if !t.Locked {
		// A new description of the slave, opened without a path and
		// without becoming anyone's controlling terminal.
		if sfd, err := peer(mfd, unix.O_RDONLY|unix.O_NONBLOCK); err == nil {
			in, _ = unix.IoctlGetInt(sfd, tiocinq)
			// TIOCEXCL is a flag of each side's tty: the slave's is the
			// one that keeps others from opening it.
			excl, _ := unix.IoctlGetInt(sfd, unix.TIOCGEXCL)
			t.Exclusive = excl != 0
			unix.Close(sfd)
		}
	}
	if out > 0 || in > 0 {
		return fmt.Errorf("pseudo-terminal %s holds %d bytes of output its master has not read and %d bytes of input its programs have not read; chpox does not save them (reading them would take them from the program): dump again once it is idle: %w",
			t.Name, out, in, procinfo.ErrUnsupported)
	}
	return nil
}

// peer opens a new description of the slave of master mfd (TIOCGPTPEER).
func peer(mfd, flags int) (int, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, uintptr(flags|unix.O_NOCTTY|unix.O_CLOEXEC))
	if e != 0 {
		return -1, os.NewSyscallError("ioctl(TIOCGPTPEER)", e)
	}
	return int(r), nil
}

// settings reads termios and window size of terminal fd (of a master: its
// slave's).
func settings(fd int, t *format.TTY) error {
	tio, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return os.NewSyscallError("ioctl(TCGETS)", err)
	}
	t.Termios = ToFormat(tio)
	ws, err := unix.IoctlGetWinsize(fd, unix.TIOCGWINSZ)
	if err != nil {
		return os.NewSyscallError("ioctl(TIOCGWINSZ)", err)
	}
	t.Winsize = format.Winsize{Row: ws.Row, Col: ws.Col, Xpixel: ws.Xpixel, Ypixel: ws.Ypixel}
	return nil
}

// DescribeOutside reads the settings of a controlling terminal that is
// not a pair of the tree, through fd of pid, a descriptor on it (nil
// termios if there is none: the restore then leaves its terminal as it
// is).
func DescribeOutside(pid, fd int, t *format.TTY) error {
	f, err := objects.Dup(pid, fd)
	if err != nil {
		return err
	}
	defer f.Close()
	return settings(int(f.Fd()), t)
}

// ToFormat converts a kernel termios.
func ToFormat(t *unix.Termios) *format.Termios {
	return &format.Termios{Iflag: t.Iflag, Oflag: t.Oflag, Cflag: t.Cflag, Lflag: t.Lflag, Line: t.Line, Cc: t.Cc}
}

// FromFormat converts a saved termios.
func FromFormat(t *format.Termios) *unix.Termios {
	return &unix.Termios{Iflag: t.Iflag, Oflag: t.Oflag, Cflag: t.Cflag, Lflag: t.Lflag, Line: t.Line, Cc: t.Cc}
}

// Pair is a new pseudo-terminal pair standing in for a saved one.
type Pair struct {
	Master *os.File
	rec    format.TTY
	slaves []*os.File
}

// New opens a pair for t, its master with the open flags of the saved
// master's description (O_NONBLOCK ...), and gives it t's settings.
func New(t format.TTY, masterFlags int) (*Pair, error) {
	flags := masterFlags&(unix.O_ACCMODE|unix.O_NONBLOCK) | unix.O_NOCTTY | unix.O_CLOEXEC
	fd, err := unix.Open("/dev/ptmx", flags, 0)
	if err != nil {
		return nil, fmt.Errorf("pty %s: open /dev/ptmx: %w", t.Name, err)
	}
	p := &Pair{Master: os.NewFile(uintptr(fd), "ptmx"), rec: t}
	fail := func(err error) (*Pair, error) {
		p.Close()
		return nil, fmt.Errorf("pty %s: %w", t.Name, err)
	}
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		return fail(os.NewSyscallError("ioctl(TIOCSPTLCK)", err))
	}
	if t.Termios != nil {
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, FromFormat(t.Termios)); err != nil {
			return fail(os.NewSyscallError("ioctl(TCSETS)", err))
		}
	}
	ws := &unix.Winsize{Row: t.Winsize.Row, Col: t.Winsize.Col, Xpixel: t.Winsize.Xpixel, Ypixel: t.Winsize.Ypixel}
	if err := unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, ws); err != nil {
		return fail(os.NewSyscallError("ioctl(TIOCSWINSZ)", err))
	}
	if t.Packet {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCPKT, 1); err != nil {
			return fail(os.NewSyscallError("ioctl(TIOCPKT)", err))
		}
	}
	return p, nil
}

// Slave makes a new description of the slave with the open flags of a
// saved one.
func (p *Pair) Slave(flags int) (*os.File, error) {
	fd, err := peer(int(p.Master.Fd()), flags&(unix.O_ACCMODE|unix.O_NONBLOCK|unix.O_APPEND))
	if err != nil {
		return nil, fmt.Errorf("pty %s: %w", p.rec.Name, err)
	}
	f := os.NewFile(uintptr(fd), "pts")
	p.slaves = append(p.slaves, f)
	return f, nil
}

// Finish locks the pair and makes it exclusive as it was, once every
// description of its slave exists (both forbid opening it again).
func (p *Pair) Finish() error {
	fd := int(p.Master.Fd())
	if p.rec.Exclusive {
		sfd, err := peer(fd, unix.O_RDONLY)
		if err == nil {
			err = unix.IoctlSetInt(sfd, unix.TIOCEXCL, 0)
			unix.Close(sfd)
		}
		if err != nil {
			return fmt.Errorf("pty %s: %w", p.rec.Name, os.NewSyscallError("ioctl(TIOCEXCL)", err))
		}
	}
	if p.rec.Locked {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 1); err != nil {
			return fmt.Errorf("pty %s: %w", p.rec.Name, os.NewSyscallError("ioctl(TIOCSPTLCK)", err))
		}
	}
	return nil
}

// Close closes chpox's ends; the processes hold their own copies.
func (p *Pair) Close() {
	p.Master.Close()
	for _, s := range p.slaves {
		s.Close()
	}
}
