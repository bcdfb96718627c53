package dump

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/external"
	"github.com/chpox/chpox/pkg/objects/tty"
	"github.com/chpox/chpox/pkg/procinfo"
)

// outsideHolder returns a process outside the dumped tree that holds the
// pipe or socket whose fd link target is link, or 0.
func (pl *plan) outsideHolder(link string) int {
	if pl.holders == nil {
		pl.holders = external.Holders(pl.tree())
	}
	return pl.holders[link]
}

// markExternal records f as a descriptor whose object stays outside the
// checkpoint (pkg/objects/external); fds of one object share one record.
func (pl *plan) markExternal(f *procinfo.OpenFile, what string, peer, sockType int) {
	f.Kind, f.Socket = format.FileExternal, 0
	for _, e := range pl.objects.Externals {
		if e.Key == f.Path {
			f.External = e.ID
			return
		}
	}
	e := format.External{ID: len(pl.objects.Externals) + 1, Key: f.Path, What: what, Peer: peer, SockType: sockType}
	pl.objects.Externals = append(pl.objects.Externals, e)
	f.External = e.ID
}

// devTTY is /dev/tty (5:0), which opens the caller's controlling terminal.
var devTTY = unix.Mkdev(5, 0)

// terminals gives every pseudo-terminal pair whose master is in the tree
// a record (pkg/objects/tty) that its master and slave fds name, and
// records each session's controlling terminal. A terminal at stdin,
// stdout or stderr that is no such pair, and any fd on a controlling
// terminal outside the tree (bash keeps one at fd 255), is external: the
// restored process gets chpox restore's own, as a shell gives a job its
// terminal, wherever that terminal was (it may not exist any more); so is
// an fd on /dev/tty (reopening it would fail in a session without a
// controlling terminal: a --detach restore). Other terminals are reopened
// by path.
func (pl *plan) terminals() error {
	pairs := map[int]int{}   // pty index -> TTY ID
	byDesc := map[int]int{}  // master description -> TTY ID
	slaves := map[int]bool{} // pty indexes whose slave the tree holds
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind == format.FileChar && tty.SlaveIndex(f.Rdev) >= 0 {
				slaves[tty.SlaveIndex(f.Rdev)] = true
			}
		}
	}
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind != format.FileChar || !tty.IsMaster(f.Rdev) {
				continue
			}
			id, ok := byDesc[f.Desc]
			if !ok {
				rec, q, err := tty.Describe(p.Info.PID, f.FD, func(n int) bool { return slaves[n] })
				if err != nil {
					return fmt.Errorf("pid %d: fd %d: %w", p.Info.PID, f.FD, err)
				}
				id = len(pl.objects.TTYs) + 1
				rec.ID = id
				rec.Input, rec.Output = pl.blob(q.Input), pl.blob(q.Output)
				pl.objects.TTYs = append(pl.objects.TTYs, rec)
				byDesc[f.Desc], pairs[rec.Index] = id, id
			}
			f.Kind, f.TTY = format.FilePTYMaster, id
		}
	}
	ctty := map[uint64]bool{}
	for _, p := range pl.procs {
		ctty[uint64(p.Info.TTYNr)] = p.Info.TTYNr != 0
	}
	for _, p := range pl.procs {
		for _, f := range p.files {
			if id := pairs[tty.SlaveIndex(f.Rdev)]; f.Kind == format.FileChar && id != 0 {
				f.Kind, f.TTY = format.FilePTYSlave, id
			} else if f.IsTerminal() && (f.FD <= 2 || ctty[f.Rdev] || f.Rdev == devTTY) {
				pl.markExternal(f, "terminal", 0, 0)
			}
		}
	}
	return pl.controllingTerminals(pairs)
}

// controllingTerminals links every process to its session's controlling
// terminal: a pair of the tree, or a terminal outside it, whose termios
// and foreground group are kept for the terminal chpox restore runs in.
func (pl *plan) controllingTerminals(pairs map[int]int) error {
	outside := map[int]int{} // tty_nr -> TTY ID
	for _, p := range pl.procs {
		nr := p.Info.TTYNr
		if nr == 0 {
			continue
		}
		if id := pairs[tty.SlaveIndex(uint64(nr))]; id != 0 {
			p.Info.CTTY = id
			continue
		}
		id, ok := outside[nr]
		if !ok {
			rec := format.TTY{Kind: format.TTYOutside, Session: p.Info.SID, Foreground: p.Info.TPGID,
				Index: max(tty.SlaveIndex(uint64(nr)), 0), Name: fmt.Sprintf("device %d:%d", unix.Major(uint64(nr)), unix.Minor(uint64(nr)))}
			if i := tty.SlaveIndex(uint64(nr)); i >= 0 {
				rec.Name = fmt.Sprintf("/dev/pts/%d", i)
			}
			if pid, fd := pl.holding(uint64(nr)); pid != 0 {
				if err := tty.DescribeOutside(pid, fd, &rec); err != nil {
					return fmt.Errorf("pid %d: fd %d: controlling terminal %s: %w", pid, fd, rec.Name, err)
				}
			}
			id = len(pl.objects.TTYs) + 1
			rec.ID = id
			pl.objects.TTYs = append(pl.objects.TTYs, rec)
			outside[nr] = id
		}
		p.Info.CTTY = id
	}
	return nil
}

// holding finds a descriptor of the tree on device rdev.
func (pl *plan) holding(rdev uint64) (pid, fd int) {
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Rdev == rdev && (f.Kind == format.FileChar || f.Kind == format.FileExternal) {
				return p.Info.PID, f.FD
			}
		}
	}
	return 0, 0
}
