package dump

import (
	"errors"
	"fmt"

	"github.com/chpox/chpox/pkg/format"
	"github.com/chpox/chpox/pkg/objects/netlink"
)

// netlinkSockets describes every netlink socket once (pkg/objects/netlink).
func (pl *plan) netlinkSockets() error {
	ids := map[int]int{} // Desc -> socket ID: one per open file description
	for _, p := range pl.procs {
		for _, f := range p.files {
			if f.Kind != format.FileNetlink {
				continue
			}
			if id, ok := ids[f.Desc]; ok {
				f.Socket = id
				continue
			}
			rec, err := netlink.Describe(p.Info.PID, f.FD)
			if errors.Is(err, netlink.ErrQueued) {
				return fmt.Errorf("pid %d: fd %d: a netlink socket (protocol %d) %w: %w", p.Info.PID, f.FD, rec.Protocol, err, ErrUnsupported)
			}
			if err != nil {
				return fmt.Errorf("pid %d: fd %d: netlink socket: %w", p.Info.PID, f.FD, err)
			}
			rec.ID, rec.Inode = len(pl.objects.Netlink)+1, f.Ino
			pl.objects.Netlink = append(pl.objects.Netlink, rec)
			ids[f.Desc], f.Socket = rec.ID, rec.ID
		}
	}
	return nil
}
