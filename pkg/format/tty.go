package format

// Terminals (version 3).
//
// A TTY record is a terminal the tree used: a pseudo-terminal pair whose
// master is held inside the tree (a terminal multiplexer, script, expect),
// restored as a new pair with the same settings, or the terminal outside
// the tree that was a session's controlling terminal (the user's shell's),
// for which restore uses the terminal chpox restore runs in.

// TTY kinds.
const (
	TTYPty     = "pty"     // a pseudo-terminal pair whose master is in the tree
	TTYOutside = "outside" // a terminal whose other side is not in the tree
)

// TTY is one terminal, referred to by File.TTY (pty ends) and
// Process.CTTY (controlling terminal).
type TTY struct {
	ID   int    `json:"id"`
	Kind string `json:"kind"`
	// Index is the pty number at dump (/dev/pts/INDEX); restore gets
	// whatever number the kernel gives the new pair.
	Index int `json:"index"`
	// Name is the slave's path at dump (informational).
	Name string `json:"name,omitempty"`
	// Termios is the terminal's (for a pair, the slave's) settings; nil
	// if chpox could not read them.
	Termios *Termios `json:"termios,omitempty"`
	Winsize Winsize  `json:"winsize"`
	// Packet is TIOCPKT on the master, Locked TIOCSPTLCK (the slave
	// cannot be opened), Exclusive TIOCEXCL.
	Packet    bool `json:"packet,omitempty"`
	Locked    bool `json:"locked,omitempty"`
	Exclusive bool `json:"exclusive,omitempty"`
	// HungUp: every description of the slave was closed (the master's
	// reads fail with EIO, poll says POLLHUP). A pair whose slave was
	// never opened is not hung up.
	HungUp bool `json:"hung_up,omitempty"`
	// Session is the session whose controlling terminal it is (0: none),
	// Foreground its foreground process group (TIOCGPGRP).
	Session    int `json:"session,omitempty"`
	Foreground int `json:"foreground,omitempty"`
	// Input is what was written to the master and not yet read from the
	// slave, Output what was written to the slave and not yet read from
	// the master, each as the reading side would get it (already through
	// the line discipline). Addr is 0.
	Input  []DataRun `json:"input,omitempty"`
	Output []DataRun `json:"output,omitempty"`
}

// MaxTTYQueue bounds the bytes of each direction of a pair: a tty's
// buffers hold at most a few pages (N_TTY_BUF_SIZE is 4 KiB, plus the
// flip buffers, drivers/tty/tty_buffer.c).
const MaxTTYQueue = 1 << 20

// Termios is the kernel's struct termios (TCGETS), the x86_64 layout.
type Termios struct {
	Iflag uint32   `json:"iflag"`
	Oflag uint32   `json:"oflag"`
	Cflag uint32   `json:"cflag"`
	Lflag uint32   `json:"lflag"`
	Line  uint8    `json:"line"`
	Cc    [19]byte `json:"cc"`
}

// Winsize is struct winsize (TIOCGWINSZ).
type Winsize struct {
	Row    uint16 `json:"row"`
	Col    uint16 `json:"col"`
	Xpixel uint16 `json:"xpixel,omitempty"`
	Ypixel uint16 `json:"ypixel,omitempty"`
}
