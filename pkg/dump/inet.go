package dump

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/netlock"
	"github.com/chpox/chpox/pkg/objects/inet"
	"github.com/chpox/chpox/pkg/procinfo"
)

// inetState is what a dump holds of its TCP and UDP sockets until the image
// is committed: chpox's copies (a connection kept in repair mode for a
// --kill must be taken out of it again if the dump fails) and the lock.
type inetState struct {
	sockets []*inet.Socket
	locked  []netlock.Conn
	outside int // established connections to peers outside the tree
	// guard undoes repair mode and the lock if chpox dies before it is
	// released (pkg/netlock, guard_linux.go).
	guard *netlock.Guard
}

// inetSockets describes every TCP and UDP socket once (pkg/objects/inet).
// For a dump that kills, the established connections are locked first
// (pkg/netlock), so that from the moment their state is read no packet
// reaches them until the restore; their repair mode stays on, so that the
// kill closes them silently. Otherwise repair mode is on only while they
// are read.
func (pl *plan) inetSockets() error {
	var conns []netlock.Conn
	err := pl.eachSocket(format.FileInet, func(p *proc, f *procinfo.OpenFile) (int, error) {
		s, err := inet.Open(p.Info.PID, f.FD)
		if err != nil {
			return 0, err
		}
		pl.inet.sockets = append(pl.inet.sockets, s)
		s.Rec.ID, s.Rec.Inode = len(pl.inet.sockets), f.Ino
		if local, peer, ok := s.Conn(); ok {
			conns = append(conns, netlock.Conn{Local: local, Peer: peer})
		}
		return s.Rec.ID, nil
	})
	if err != nil {
		return err
	}
	// A connection whose reverse is in the tree too has both ends here.
	ends := map[netlock.Conn]bool{}
	for _, c := range conns {
		ends[netlock.Conn{Local: unmapped(c.Local), Peer: unmapped(c.Peer)}] = true
	}
	for _, s := range pl.inet.sockets {
		if local, peer, ok := s.Conn(); ok && !ends[netlock.Conn{Local: unmapped(peer), Peer: unmapped(local)}] {
			s.Rec.Outside = true
			pl.inet.outside++
		}
	}
	if err := pl.inet.startGuard(pl.kill); err != nil {
		return err
	}
	if pl.kill && len(conns) > 0 {
		if err := netlock.Lock(conns); err != nil {
			return fmt.Errorf("%d established TCP connections need the network lock for --kill: %w", len(conns), err)
		}
		pl.inet.locked = conns
	}
	for _, s := range pl.inet.sockets {
		if err := s.Save(pl.kill); err != nil {
			return err
		}
		rec := s.Rec
		if rec.Repair != nil {
			rec.Repair.SendQueue, rec.Repair.RecvQueue = pl.blob(s.SendQ), pl.blob(s.RecvQ)
		}
		for i := range rec.Datagrams {
			rec.Datagrams[i].Data = pl.blob(s.Datagrams[i])
		}
		pl.objects.InetSockets = append(pl.objects.InetSockets, rec)
	}
	if !pl.kill {
		// Repair mode is off again: nothing is left to guard.
		return pl.inet.releaseGuard()
	}
	return nil
}

// startGuard starts the guard of the established connections before repair
// mode or the lock touch them.
func (st *inetState) startGuard(kill bool) error {
	var socks []netlock.GuardSocket
	for _, s := range st.sockets {
		local, peer, ok := s.Conn()
		if !ok {
			continue
		}
		g := netlock.GuardSocket{File: s.File(), Owner: s.PID(), ReuseAddr: s.Rec.Options.ReuseAddr}
		if kill {
			g.Lock = &netlock.Conn{Local: local, Peer: peer}
		}
		socks = append(socks, g)
	}
	if len(socks) == 0 {
		return nil
	}
	g, err := netlock.StartGuard(socks)
	if err != nil {
		return err
	}
	st.guard = g
	return nil
}

func (st *inetState) releaseGuard() error {
	err := st.guard.Release()
	st.guard = nil
	return err
}

func unmapped(a netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
}

// undo takes the connections out of repair mode and lifts the lock: the
// dump failed and the processes run on.
func (st *inetState) undo() error {
	var errs []error
	for _, s := range st.sockets {
		errs = append(errs, s.LeaveRepair())
	}
	errs = append(errs, netlock.Unlock(st.locked))
	st.locked = nil
	errs = append(errs, st.close())
	return errors.Join(errs...)
}

// close releases the guard and chpox's copies of the sockets. After a
// --kill this comes once the processes were killed.
func (st *inetState) close() error {
	err := st.releaseGuard()
	for _, s := range st.sockets {
		s.Close()
	}
	st.sockets = nil
	return err
}
