// Package tty checkpoints terminals: pseudo-terminal pairs whose master is
// held inside the tree (a terminal multiplexer, script, expect, an ssh-like
// relay), and the settings of a controlling terminal outside the tree.
//
// Dump reads a pair's state through a pidfd_getfd(2) copy of its master,
// with ioctls that change nothing: the slave's termios and window size
// (termios requests on a master act on its slave, drivers/tty/tty_ioctl.c
// tty_mode_ioctl), packet mode, lock, exclusive mode, session and
// foreground group. Bytes queued in the pair are read (a tty cannot be
// peeked) and written straight back, with the slave raw for that moment
// so that nothing is processed twice; restore queues them the same way.
// Where that cannot be exact the dump is refused naming the terminal:
// typed input not yet read in line mode, output for a master in packet
// mode (they are usually gone a moment later).
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
	"time"

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

// Describe reads the pair whose master pid holds at fd, and the bytes
// queued in it. slaveOpen tells whether the tree holds the slave of pty
// number N open.
func Describe(pid, fd int, slaveOpen func(n int) bool) (format.TTY, Queued, error) {
	t := format.TTY{Kind: format.TTYPty}
	m, err := objects.Dup(pid, fd)
	if err != nil {
		return t, Queued{}, err
	}
	defer m.Close()
	mfd := int(m.Fd())
	if t.Index, err = unix.IoctlGetInt(mfd, unix.TIOCGPTN); err != nil {
		return t, Queued{}, os.NewSyscallError("ioctl(TIOCGPTN)", err)
	}
	t.Name = fmt.Sprintf("/dev/pts/%d", t.Index)
	if err := settings(mfd, &t); err != nil {
		return t, Queued{}, fmt.Errorf("pty %s: %w", t.Name, err)
	}
	flag := func(req uint, what string) (bool, error) {
		v, err := unix.IoctlGetInt(mfd, req)
		return v != 0, os.NewSyscallError("ioctl("+what+")", err)
	}
	if t.Packet, err = flag(unix.TIOCGPKT, "TIOCGPKT"); err != nil {
		return t, Queued{}, err
	}
	if t.Locked, err = flag(unix.TIOCGPTLCK, "TIOCGPTLCK"); err != nil {
		return t, Queued{}, err
	}
	// On a master these name the slave's session and group
	// (drivers/tty/tty_jobctrl.c, tiocgsid/tiocgpgrp); ENOTTY: none.
	if sid, err := unix.IoctlGetInt(mfd, unix.TIOCGSID); err == nil {
		t.Session = sid
		if fg, err := unix.IoctlGetInt(mfd, unix.TIOCGPGRP); err == nil {
			t.Foreground = fg
		}
	}
	q, err := unread(m, &t, slaveOpen(t.Index))
	return t, q, err
}

// Queued is what a pair holds that was written and not yet read: Input
// written to the master for the slave's programs, Output written by them
// for the master.
type Queued struct{ Input, Output []byte }

// unread takes the bytes queued in the pair and puts them straight back,
// so that the process finds them as they were: reading is the only way to
// see them, and a tty has no MSG_PEEK. While they go back the slave's
// termios are made raw for a moment (the processes are frozen), so that
// nothing is processed twice (no \n turned into \r\n again, no echo).
// Refused by name: input in canonical mode (the kernel hands out and
// counts only complete lines, and a half-typed line behind them would end
// up before them), output in packet mode (a read can take a status byte
// in place of data).
func unread(m *os.File, t *format.TTY, slaveOpen bool) (q Queued, err error) {
	mfd := int(m.Fd())
	out, err := unix.IoctlGetInt(mfd, tiocinq)
	if err != nil {
		return q, os.NewSyscallError("ioctl(FIONREAD)", err)
	}
	if t.Locked {
		if out > 0 { // no slave was ever opened: nothing written to it
			return q, fmt.Errorf("pseudo-terminal %s is locked and holds %d bytes for its master: %w", t.Name, out, procinfo.ErrUnsupported)
		}
		return q, nil
	}
	// Closing the last description of a slave that was never opened
	// would turn the master's reads from EAGAIN into EIO for good
	// (drivers/tty/pty.c, pty_close sets TTY_OTHER_CLOSED): open one only
	// where a slave is open now (in the tree, or it wrote the output) or
	// the master already saw them all closed (POLLHUP).
	hup := []unix.PollFd{{Fd: int32(mfd), Events: unix.POLLIN}}
	unix.Poll(hup, 0)
	t.HungUp = hup[0].Revents&unix.POLLHUP != 0
	if out == 0 && !slaveOpen && !t.HungUp {
		return q, nil
	}
	// A new description of the slave, opened without a path and without
	// becoming anyone's controlling terminal.
	sfd, err := peer(mfd, unix.O_RDWR|unix.O_NONBLOCK)
	if err != nil {
		return q, err
	}
	defer unix.Close(sfd)
	in, err := unix.IoctlGetInt(sfd, tiocinq)
	if err != nil {
		return q, os.NewSyscallError("ioctl(FIONREAD)", err)
	}
	// TIOCEXCL is a flag of each side's tty: the slave's is the one that
	// keeps others from opening it.
	excl, _ := unix.IoctlGetInt(sfd, unix.TIOCGEXCL)
	t.Exclusive = excl != 0
	canonical := t.Termios != nil && t.Termios.Lflag&unix.ICANON != 0
	switch {
	case in > 0 && canonical:
		return q, fmt.Errorf("pseudo-terminal %s holds %d bytes of typed input its programs have not read, in line mode (a half-typed line would be lost or reordered): dump again once it has read them: %w", t.Name, in, procinfo.ErrUnsupported)
	case out > 0 && t.Packet:
		return q, fmt.Errorf("pseudo-terminal %s holds %d bytes of output its master, in packet mode, has not read: dump again once it has read them: %w", t.Name, out, procinfo.ErrUnsupported)
	case in == 0 && out == 0:
		return q, nil
	}
	saved, err := unix.IoctlGetTermios(sfd, unix.TCGETS)
	if err != nil {
		return q, os.NewSyscallError("ioctl(TCGETS)", err)
	}
	if q.Output, err = take(mfd, out); err == nil {
		q.Input, err = take(sfd, in)
	}
	if err != nil {
		return q, fmt.Errorf("pseudo-terminal %s: read queued bytes: %w", t.Name, err)
	}
	if err := putBack(mfd, sfd, saved, q); err != nil {
		return q, fmt.Errorf("pseudo-terminal %s: put back %d bytes of input and %d of output (the process may have lost them): %w", t.Name, len(q.Input), len(q.Output), err)
	}
	return q, nil
}

// take reads n bytes known to be queued at fd, never blocking (fd may be
// the process's own blocking description).
func take(fd, n int) ([]byte, error) {
	buf := make([]byte, n)
	got := 0
	for got < n {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if k, err := unix.Poll(p, 1000); err != nil || k == 0 {
			return nil, fmt.Errorf("%d of %d bytes: %w", got, n, os.ErrDeadlineExceeded)
		}
		k, err := unix.Read(fd, buf[got:])
		if err != nil || k == 0 {
			return nil, fmt.Errorf("%d of %d bytes: %w", got, n, os.NewSyscallError("read", err))
		}
		got += k
	}
	return buf, nil
}

// putBack writes q into the pair of master mfd and slave sfd (any
// descriptions of them) with the slave raw, waits until the kernel has
// queued it on the reading sides (pty writes reach the other side through
// a work queue), then gives the slave the termios tio.
func putBack(mfd, sfd int, tio *unix.Termios, q Queued) error {
	raw := *tio
	raw.Iflag &^= unix.ICRNL | unix.INLCR | unix.IGNCR | unix.ISTRIP | unix.IUCLC | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ICANON | unix.ECHO | unix.ECHONL | unix.ISIG | unix.IEXTEN
	if err := unix.IoctlSetTermios(sfd, unix.TCSETS, &raw); err != nil {
		return os.NewSyscallError("ioctl(TCSETS)", err)
	}
	err := queue(sfd, mfd, q.Output)
	if err == nil {
		err = queue(mfd, sfd, q.Input)
	}
	if serr := unix.IoctlSetTermios(sfd, unix.TCSETS, tio); err == nil && serr != nil {
		err = os.NewSyscallError("ioctl(TCSETS)", serr)
	}
	return err
}

// queue writes data at fd and waits until reader counts it queued.
func queue(fd, reader int, data []byte) error {
	if len(data) == 0 {
		return nil
	}
	before, _ := unix.IoctlGetInt(reader, tiocinq)
	for rest := data; len(rest) > 0; {
		n, err := unix.Write(fd, rest)
		if err != nil {
			return os.NewSyscallError("write", err)
		}
		rest = rest[n:]
	}
	for i := 0; i < 1000; i++ {
		if n, _ := unix.IoctlGetInt(reader, tiocinq); n >= before+len(data) {
			return nil
		}
		time.Sleep(time.Millisecond)
	}
	return fmt.Errorf("%d bytes written, not queued within 1s: %w", len(data), os.ErrDeadlineExceeded)
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
	// Queued receives the saved bytes from the image's data section,
	// for Fill.
	Queued Queued
	rec    format.TTY
	slaves []*os.File
}

// Name is the saved pair's slave path at dump.
func (p *Pair) Name() string { return p.rec.Name }

// Fill queues the saved bytes in the pair again, as the reading sides
// would have got them, before any process runs.
func (p *Pair) Fill() error {
	if len(p.Queued.Input) == 0 && len(p.Queued.Output) == 0 {
		return nil
	}
	mfd := int(p.Master.Fd())
	sfd, err := peer(mfd, unix.O_RDWR|unix.O_NONBLOCK)
	if err != nil {
		return fmt.Errorf("pty %s: %w", p.rec.Name, err)
	}
	defer unix.Close(sfd)
	tio, err := unix.IoctlGetTermios(sfd, unix.TCGETS)
	if err == nil {
		err = putBack(mfd, sfd, tio, p.Queued)
	}
	if err != nil {
		return fmt.Errorf("pty %s: queue %d bytes of input and %d of output: %w", p.rec.Name, len(p.Queued.Input), len(p.Queued.Output), err)
	}
	p.Queued = Queued{}
	return nil
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
	if t.HungUp {
		// Opening and closing the slave leaves the master as a closed
		// slave does: reads fail with EIO.
		sfd, err := peer(fd, unix.O_RDWR)
		if err != nil {
			return fail(err)
		}
		unix.Close(sfd)
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
